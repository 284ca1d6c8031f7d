"""Pushing to clients from Django code: ``relay.send`` and ``relay.asend``.

A push is a ``relay.deliver`` event sent to the channel-layer group ``relay.<id>`` of
each target, so it reaches every connection of that id in every relay process that
shares the layer. Plain Channels code can send the same event itself.
"""

import sys
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, get_channel_layer
from django.core.exceptions import ImproperlyConfigured

from relay import presence, protocol
from relay.protocol import JSON

Targets = str | int | Iterable[str | int]


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


async def push(ids: tuple[str, ...], payload_json: str) -> int:
    """Push validated JSON text to every connection of each id; return how many were online."""
    online = len(await presence.aonline(ids))
    layer = default_layer()
    event = deliver_event(payload_json)
    for client_id in ids:
        await layer.group_send(protocol.group_for(client_id), event)
    return online


async def asend(targets: Targets, payload: JSON) -> int:
    """Push ``payload`` to every connection of each target, from async code.

    Returns how many of the targets were online (had a connection open) just before.
    """
    return await push(*validate_push(targets, payload))


def send(targets: Targets, payload: JSON) -> int:
    """Push ``payload`` to every connection of each target, from sync code (views, commands).

    Returns how many of the targets were online (had a connection open) just before.
    """
    return async_to_sync(asend)(targets, payload)
