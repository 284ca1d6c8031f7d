"""Publishing one relay process's connection counts to Redis (read by ``relay.presence``)."""

import asyncio
import time
from collections.abc import Callable

from relay.conf import conf
from relay.redis.keys import node_key, nodes_key
from relay.redis.resp import CommandPipe, encode_command


class PresenceWriter:
    """Publishes one node's connection counts to Redis and keeps them alive."""

    def __init__(self, commands: CommandPipe, prefix: str, node: str, local_counts: Callable[[], dict[str, int]]):
        self._commands = commands
        self._nodes_key = nodes_key(prefix).encode()
        self._node_key = node_key(prefix, node).encode()
        self._node = node.encode()
        self._local_counts = local_counts
        commands.link.on_up(self.publish_all)
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    def set(self, client_id: str, connections: int) -> None:
        """Record how many connections ``client_id`` has in this node now."""
        if not self._commands.connected:
            return  # publish_all writes the whole state when Redis is back
        if connections:
            self._commands.send(encode_command(b"HSET", self._node_key, client_id.encode(), b"%d" % connections))
            # HSET may have created the hash: it must expire even if no heartbeat follows.
            self._commands.send(encode_command(b"EXPIRE", self._node_key, b"%d" % conf.RELAY_PRESENCE_TTL))
        else:
            self._commands.send(encode_command(b"HDEL", self._node_key, client_id.encode()))

    def publish_all(self) -> None:
        """Write this node's whole state: on (re)connection, since Redis may have lost it."""
        self._commands.send(encode_command(b"DEL", self._node_key))
        counts = self._local_counts()
        if counts:
            fields = [part for client_id, n in counts.items() for part in (client_id.encode(), b"%d" % n)]
            self._commands.send(encode_command(b"HSET", self._node_key, *fields))
        self._touch()

    def _touch(self) -> None:
        now = time.time()
        ttl = conf.RELAY_PRESENCE_TTL
        self._commands.send(encode_command(b"ZADD", self._nodes_key, b"%f" % now, self._node))
        self._commands.send(encode_command(b"EXPIRE", self._node_key, b"%d" % ttl))
        self._commands.send(encode_command(b"EXPIRE", self._nodes_key, b"%d" % (ttl * 10)))
        # Forget nodes that died long ago; readers already ignore them after one TTL.
        self._commands.send(encode_command(b"ZREMRANGEBYSCORE", self._nodes_key, b"-inf", b"%f" % (now - ttl * 10)))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(conf.RELAY_PRESENCE_HEARTBEAT)
            if self._commands.connected:
                self._touch()

    def close(self) -> None:
        """Remove this node at once (a clean shutdown) and stop the heartbeat."""
        self._heartbeat.cancel()
        if self._commands.connected:
            self._commands.send(encode_command(b"DEL", self._node_key))
            self._commands.send(encode_command(b"ZREM", self._nodes_key, self._node))
