"""relay: a WebSocket message relay for Django, built on Channels.

``relay.send(targets, payload)`` and ``await relay.asend(targets, payload)`` push to
clients from any Django code; ``relay.disconnect(client_id)`` closes a client's
connections everywhere. ``relay.Message``, ``relay.Reject`` and ``@relay.rpc`` are
what message handlers and calls into Django are written with.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time each name is imported on first use
    from relay.api import Sent, adisconnect, asend, disconnect, send
    from relay.calls import Call, rpc
    from relay.connections import Connection
    from relay.exceptions import Reject
    from relay.handlers import Message

#: Public name -> the module that defines it.
_EXPORTS = {
    "send": "relay.api",
    "asend": "relay.api",
    "disconnect": "relay.api",
    "adisconnect": "relay.api",
    "Sent": "relay.api",
    "Message": "relay.handlers",
    "Call": "relay.calls",
    "rpc": "relay.calls",
    "Connection": "relay.connections",
    "Reject": "relay.exceptions",
}

__all__ = ["send", "asend", "disconnect", "adisconnect", "Sent", "Message", "Call", "rpc", "Connection", "Reject"]


def __getattr__(name: str) -> Any:
    # Imported lazily: the app package is imported before Django is set up.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    from importlib import import_module

    return getattr(import_module(module), name)
