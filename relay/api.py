"""Pushing to clients from Django code: ``relay.send`` and ``relay.asend``; ``relay.disconnect``.

With delivery history (Redis), a push is stored in each target's stream and published
to every relay process holding the target's connections, by the same script client
frames go through: pushes and frames to one id share one order, and a client that
reconnects with ``?since=`` gets the pushes it missed. Without history, a push is a
``relay.deliver`` event sent to the channel-layer group ``relay.<id>`` of each target,
as plain Channels code can send it itself.
"""

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.core.exceptions import ImproperlyConfigured

from relay import presence, protocol
from relay.conf import conf
from relay.protocol import JSON
from relay.redis import servers, streams
from relay.redis.keys import bus_channel
from relay.redis.messages import encode_disconnect

Targets = str | int | Iterable[str | int]

#: A WebSocket close frame's reason is at most 123 bytes (RFC 6455, 5.5).
MAX_CLOSE_REASON_BYTES = 123


@dataclass(frozen=True, slots=True)
class Sent:
    """What a push did: who of its targets was online just before it, and where it went in each stream.

    ``positions`` (and ``offsets``) are empty without delivery history. A backend can
    tell a client "you have messages up to N" with them.
    """

    targets: tuple[str, ...]
    online: frozenset[str]
    positions: Mapping[str, streams.Position] = field(default_factory=dict)

    @property
    def offsets(self) -> dict[str, int]:
        """Per target, the offset the push got in the target's stream."""
        return {client_id: position.offset for client_id, position in self.positions.items()}

    @property
    def offline(self) -> tuple[str, ...]:
        """The targets that had no connection open, in order."""
        return tuple(client_id for client_id in self.targets if client_id not in self.online)

    def summary(self, listed: int = 10) -> str:
        """The push in one plain sentence: each target, whether it was online, its offset."""
        if len(self.targets) > listed:
            return (
                f"Sent to {len(self.targets)} targets: {len(self.online)} online, "
                f"{len(self.targets) - len(self.online)} not online."
            )
        parts = []
        for client_id in self.targets:
            state = "online" if client_id in self.online else "not online"
            position = self.positions.get(client_id)
            parts.append(f"{client_id} ({state}" + (f", offset {position.offset})" if position else ")"))
        return "Sent to " + ", ".join(parts) + "."


def append_pushes(history: streams.Settings, ids: Sequence[str], payload_json: str) -> dict[str, streams.Position]:
    """Store and publish a push in the stream of each of ``ids``, one script call per Redis shard."""
    shards = servers.configured()
    positions: dict[str, streams.Position] = {}
    for index, on_shard in servers.group_by_shard(ids, shards, servers.layer_prefix()).items():
        client = servers.sync_client(shards[index])
        positions.update(streams.append_pushes(client, conf.RELAY_REDIS_PREFIX, history, on_shard, payload_json))
    return {client_id: positions[client_id] for client_id in ids}


def default_layer() -> BaseChannelLayer:
    """The site's default channel layer; a clear error where there is none (check relay.E019)."""
    layer = get_channel_layer()
    if layer is None:
        raise ImproperlyConfigured('relay needs a channel layer: set CHANNEL_LAYERS["default"] (check relay.E019).')
    return layer


def deliver_event(payload_json: str) -> dict[str, Any]:
    """The channel-layer event that delivers a payload (as JSON text) as a server push."""
    # JSON text rather than the value: msgpack cannot carry every JSON value (integers
    # beyond 64 bits), and each connection would otherwise encode it again.
    return {"type": "relay.deliver", "from": None, "payload_json": payload_json}


def validate_push(targets: Targets, payload: JSON) -> tuple[tuple[str, ...], str]:
    """The distinct client ids and the payload's JSON of a push; raises ProtocolError."""
    if isinstance(targets, (str, int)):
        targets = [targets]
    elif not isinstance(targets, Iterable) or isinstance(targets, (bytes, bytearray, dict)):
        raise protocol.ProtocolError(protocol.INVALID_MESSAGE, "targets must be a client id or a list of them.")
    ids = protocol.parse_targets(list(targets), max_targets=sys.maxsize)
    try:
        payload_json = protocol.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise protocol.ProtocolError(protocol.INVALID_MESSAGE, f"The payload is not a JSON value: {exc}.") from None
    return ids, payload_json


async def push(ids: tuple[str, ...], payload_json: str) -> Sent:
    """Push validated JSON text to every connection of each id."""
    online = frozenset(await presence.aonline(ids))
    history = streams.configured()
    if history is not None:
        positions = await sync_to_async(append_pushes, thread_sensitive=False)(history, ids, payload_json)
        return Sent(ids, online, positions)
    layer = default_layer()
    event = deliver_event(payload_json)
    for client_id in ids:
        await layer.group_send(protocol.group_for(client_id), event)
    return Sent(ids, online)


async def asend(targets: Targets, payload: JSON) -> Sent:
    """Push ``payload`` to every connection of each target, from async code.

    Returns who of the targets was online just before, and the push's offsets.
    """
    return await push(*validate_push(targets, payload))


def send(targets: Targets, payload: JSON) -> Sent:
    """Push ``payload`` to every connection of each target, from sync code (views, commands).

    Returns who of the targets was online just before, and the push's offsets.
    """
    return async_to_sync(asend)(targets, payload)


def validate_disconnect(client_id: str | int, code: int, reason: str, session_key: str | None = None) -> str:
    """The client id to disconnect; ValueError for an id, code or reason a close frame cannot carry."""
    if session_key is not None and (not isinstance(session_key, str) or not session_key or "\n" in session_key):
        raise ValueError(f"{session_key!r} is not a session key.")
    target = protocol.normalize_client_id(client_id)
    if target is None:
        raise ValueError(f"{client_id!r} is not a client id (1-64 characters of A-Z a-z 0-9 _ . -).")
    if isinstance(code, bool) or not isinstance(code, int) or not (code == 1000 or 3000 <= code <= 4999):
        raise ValueError(f"{code!r} is not a close code an application may send: 1000, or 3000-4999.")
    if not isinstance(reason, str) or len(reason.encode()) > MAX_CLOSE_REASON_BYTES:
        raise ValueError(f"The reason must be text of at most {MAX_CLOSE_REASON_BYTES} bytes in UTF-8.")
    return target


def disconnect(client_id: str | int, code: int = 4000, reason: str = "", *, session_key: str | None = None) -> int:
    """Close every connection of ``client_id``, in every relay process, with ``code`` and ``reason``.

    With ``session_key``, only the connections that Django session authenticated (what
    logging out does: relay.logout). Returns how many processes were asked: those holding
    connections of the id (0 when it has none open). Raises ValueError for a bad id, code,
    reason or session key, and redis-py's errors when Redis cannot be reached.
    Reconnecting is not prevented: refuse the client's next handshake (expire its token,
    log the user out) for that.
    """
    target = validate_disconnect(client_id, code, reason, session_key)
    if not servers.configured():
        return async_to_sync(disconnect_here)(target, code, reason, session_key)
    return publish_disconnect(target, code, reason, session_key)


async def adisconnect(
    client_id: str | int, code: int = 4000, reason: str = "", *, session_key: str | None = None
) -> int:
    """``disconnect``, from async code."""
    target = validate_disconnect(client_id, code, reason, session_key)
    if not servers.configured():
        return await disconnect_here(target, code, reason, session_key)
    return await sync_to_async(publish_disconnect, thread_sensitive=False)(target, code, reason, session_key)


def publish_disconnect(client_id: str, code: int, reason: str, session_key: str | None = None) -> int:
    """With Redis: order every process holding ``client_id`` to close it; how many were asked."""
    shards = servers.configured()
    server = shards[servers.shard_index(client_id, len(shards), servers.layer_prefix())]
    channel = bus_channel(conf.RELAY_REDIS_PREFIX, client_id)
    return int(servers.sync_client(server).publish(channel, encode_disconnect(code, reason, session_key)))


async def disconnect_here(client_id: str, code: int, reason: str, session_key: str | None = None) -> int:
    """Without Redis: close the connections of ``client_id`` in this process; 1 if it had any."""
    # The in-memory layer serves one process: the engine runs here if anything does.
    from relay.server.hub import local_hubs

    closed = [await hub.disconnect(client_id, code, reason, session_key) for hub in local_hubs()]
    return 1 if any(closed) else 0
