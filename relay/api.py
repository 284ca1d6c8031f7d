"""Pushing to clients from Django code: ``relay.send`` and ``relay.asend``; ``relay.disconnect``.

With delivery history (Redis), a push is stored in each target's stream and published
to every relay process holding the target's connections, by the same script client
frames go through: pushes and frames to one id share one order, and a client that
reconnects with ``?since=`` gets the pushes it missed. Without history, a push is a
``relay.deliver`` event sent to the channel-layer group ``relay.<id>`` of each target,
as plain Channels code can send it itself.
"""

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.core.exceptions import ImproperlyConfigured

from relay import presence, protocol
from relay.conf import conf
from relay.protocol import JSON
from relay.redis import streams
from relay.redis.clients import sync_client
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
        append = sync_to_async(streams.append_pushes, thread_sensitive=False)
        client = sync_client(conf.RELAY_REDIS_URL or "")
        return Sent(ids, online, await append(client, conf.RELAY_REDIS_PREFIX, history, ids, payload_json))
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


def validate_disconnect(client_id: str | int, code: int, reason: str) -> str:
    """The client id to disconnect; ValueError for an id, code or reason a close frame cannot carry."""
    target = protocol.normalize_client_id(client_id)
    if target is None:
        raise ValueError(f"{client_id!r} is not a client id (1-64 characters of A-Z a-z 0-9 _ . -).")
    if isinstance(code, bool) or not isinstance(code, int) or not (code == 1000 or 3000 <= code <= 4999):
        raise ValueError(f"{code!r} is not a close code an application may send: 1000, or 3000-4999.")
    if not isinstance(reason, str) or len(reason.encode()) > MAX_CLOSE_REASON_BYTES:
        raise ValueError(f"The reason must be text of at most {MAX_CLOSE_REASON_BYTES} bytes in UTF-8.")
    return target


def disconnect(client_id: str | int, code: int = 4000, reason: str = "") -> int:
    """Close every connection of ``client_id``, in every relay process, with ``code`` and ``reason``.

    Returns how many processes were asked: those holding connections of the id (0 when
    it has none open). Raises ValueError for a bad id, code or reason, and redis-py's
    errors when Redis cannot be reached. Reconnecting is not prevented: refuse the
    client's next handshake (expire its token, log the user out) for that.
    """
    target = validate_disconnect(client_id, code, reason)
    if conf.RELAY_REDIS_URL is None:
        return async_to_sync(disconnect_here)(target, code, reason)
    return publish_disconnect(target, code, reason)


async def adisconnect(client_id: str | int, code: int = 4000, reason: str = "") -> int:
    """``disconnect``, from async code."""
    target = validate_disconnect(client_id, code, reason)
    if conf.RELAY_REDIS_URL is None:
        return await disconnect_here(target, code, reason)
    return await sync_to_async(publish_disconnect, thread_sensitive=False)(target, code, reason)


def publish_disconnect(client_id: str, code: int, reason: str) -> int:
    """With Redis: order every process holding ``client_id`` to close it; how many were asked."""
    url = conf.RELAY_REDIS_URL
    assert url is not None  # called only with Redis
    channel = bus_channel(conf.RELAY_REDIS_PREFIX, client_id)
    return int(sync_client(url).publish(channel, encode_disconnect(code, reason)))


async def disconnect_here(client_id: str, code: int, reason: str) -> int:
    """Without Redis: close the connections of ``client_id`` in this process; 1 if it had any."""
    # The in-memory layer serves one process: the engine runs here if anything does.
    from relay.server.hub import local_hubs

    closed = [await hub.disconnect(client_id, code, reason) for hub in local_hubs()]
    return 1 if any(closed) else 0
