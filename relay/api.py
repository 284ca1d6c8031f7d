"""Pushing to clients from Django code: ``relay.send`` and ``relay.asend``.

A push is a ``relay.deliver`` event sent to the channel-layer group ``relay.<id>`` of
each target, so it reaches every connection of that id in every relay process that
shares the layer. Plain Channels code can send the same event itself.
"""

import sys
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from . import presence, protocol

Targets = str | int | Iterable[str | int]


def deliver_event(payload: Any) -> dict:
    """The channel-layer event that delivers ``payload`` as a server push (``from`` is null)."""
    return {"type": "relay.deliver", "from": None, "payload": payload}


def validate_push(targets: Targets, payload: Any) -> tuple[str, ...]:
    """The distinct client ids of a push; raises ProtocolError for bad targets or payload."""
    if isinstance(targets, (str, int)):
        targets = [targets]
    elif not isinstance(targets, Iterable) or isinstance(targets, (bytes, bytearray, dict)):
        raise protocol.ProtocolError(protocol.INVALID_MESSAGE, "targets must be a client id or a list of them.")
    ids = protocol.parse_targets(list(targets), max_targets=sys.maxsize)
    try:
        protocol.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise protocol.ProtocolError(protocol.INVALID_MESSAGE, f"The payload is not a JSON value: {exc}.") from None
    return ids


async def asend(targets: Targets, payload: Any) -> int:
    """Push ``payload`` to every connection of each target, from async code.

    Returns how many of the targets were online (had a connection open) just before.
    """
    ids = validate_push(targets, payload)
    online = len(await presence.aonline(ids))
    layer = get_channel_layer()
    event = deliver_event(payload)
    for client_id in ids:
        await layer.group_send(protocol.group_for(client_id), event)
    return online


def send(targets: Targets, payload: Any) -> int:
    """Push ``payload`` to every connection of each target, from sync code (views, commands).

    Returns how many of the targets were online (had a connection open) just before.
    """
    return async_to_sync(asend)(targets, payload)
