"""Channel-layer groups carried on the bus, for the channels-redis pub/sub layer.

``RedisPubSubChannelLayer.group_send("relay.<id>", event)`` is one PUBLISH of the
serialized event on the Redis channel ``<layer prefix>__group__relay.<id>``, on the server
its hash picks, which is the server the relay keeps the id on too
(``relay.redis.servers.shard_index``). So instead of a layer channel, a group membership
and a receiving task for every connection (two SUBSCRIBEs and a queue each, and two
UNSUBSCRIBEs when it closes), each process subscribes every id's group channel next to
the id's bus channel, in the same SUBSCRIBE, and hands the events to the id's
connections itself. What a connection gets is unchanged: every event sent to its group,
in order, and in order with the bus's frames, which travel on the same connection.

``RELAY_GROUPS_ON_BUS`` (default on) turns it off: connections then join their groups
through the layer's API, as with any other layer.
"""

from collections.abc import Callable
from typing import Any


class LayerGroups:
    """The Redis channels of the layer groups ``relay.<id>``, and how their messages are read."""

    def __init__(self, layer_prefix: str, deserialize: Callable[[bytes], Any]) -> None:
        self._prefix = f"{layer_prefix}__group__relay.".encode()
        #: The layer's own decoding of a group message (msgpack, and decryption with its keys).
        self.deserialize = deserialize

    def channel(self, client_id: str) -> bytes:
        """The Redis channel ``group_send`` publishes ``client_id``'s group messages on."""
        return self._prefix + client_id.encode()

    def client_id_of(self, channel: bytes) -> str | None:
        """The client id whose group ``channel`` is; None if it is not a group channel."""
        return channel[len(self._prefix) :].decode() if channel.startswith(self._prefix) else None
