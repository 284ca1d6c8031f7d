"""relay: a WebSocket message relay for Django, built on Channels.

``relay.send(targets, payload)`` and ``await relay.asend(targets, payload)`` push to
clients from any Django code.
"""

from typing import Any

__all__ = ["send", "asend"]


def __getattr__(name: str) -> Any:
    # Imported lazily: the app package is imported before Django is set up.
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(name)
