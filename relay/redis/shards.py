"""The relay's parts on one Redis server (a shard): its commands, its bus, presence and history there."""

from collections.abc import Callable

from relay.redis.bus import Receive, RedisBus
from relay.redis.groups import LayerGroups
from relay.redis.history import History
from relay.redis.presence_writer import PresenceWriter
from relay.redis.resp import CommandPipe
from relay.redis.servers import RedisServer
from relay.redis.streams import Settings


class Shard:
    """What one process keeps on one Redis: a command pipe, a subscriber, presence, the streams."""

    def __init__(
        self,
        server: RedisServer,
        prefix: str,
        node: str,
        receive: Receive,
        local_counts: Callable[[], dict[str, int]],
        history: Settings | None,
        groups: LayerGroups | None = None,
    ) -> None:
        self.server = server
        self.commands = CommandPipe(server)
        self.bus = RedisBus(server, prefix, node, self.commands, receive, groups)
        self.presence = PresenceWriter(self.commands, prefix, node, local_counts)
        #: The streams of the ids on this shard; None without delivery history.
        self.history = History(self.commands, prefix, history) if history is not None else None

    @property
    def starting(self) -> bool:
        """Whether a link to this Redis is still being made for the first time (neither up nor failed yet)."""
        return self.commands.link.starting or self.bus.starting

    def problem(self) -> str | None:
        """Why this shard cannot carry frames now, or None."""
        return self.bus.problem()

    def close(self) -> None:
        """Leave Redis cleanly: presence removed at once, then the connections closed."""
        self.presence.close()
        self.bus.close()
        self.commands.close()
