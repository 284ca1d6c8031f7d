"""Calls into Django: a client frame ``{"call": name, "payload": ..., "id": ...}`` runs a function.

Register a function with ``@relay.rpc("chat.history")``; it receives a ``Call`` and
returns any JSON value, which answers the caller only (``{"type": "reply", "ref": id,
"payload": value}`` in ``relay.v1``). Raising ``relay.Reject(code, detail)`` answers
with that error instead. Async functions are awaited, sync ones run in a worker thread
(``relay.threads``), so the ORM works.

Each installed app's ``calls`` module is imported when Django starts (as the admin
imports ``admin`` modules), so ``@rpc`` functions there are registered without more.
"""

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from relay.connections import Connection, FromConnection
from relay.protocol import CALL_NAME_PATTERN, JSON
from relay.threads import as_async


@dataclasses.dataclass(frozen=True, slots=True)
class Call(FromConnection):
    """A call from a client: the function's ``name``, the ``payload`` it was given, the frame's ``id``."""

    connection: Connection
    name: str
    payload: JSON
    id: str | int


CallFunction = Callable[[Call], Awaitable[JSON]]
F = TypeVar("F", bound=Callable[..., Any])

_registry: dict[str, tuple[str, CallFunction]] = {}


def rpc(name: str) -> Callable[[F], F]:
    """Register the decorated function as the call ``name`` (sync or async, taking a ``Call``)."""
    if not isinstance(name, str) or not CALL_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{name!r} is not a call name: a letter, then letters, digits and _ . : - (at most 100).")

    def register(function: F) -> F:
        path = f"{function.__module__}.{function.__qualname__}"
        registered = _registry.get(name)
        if registered is not None and registered[0] != path:  # the same one again is a module re-import
            raise ValueError(f"The call {name!r} is registered already, by {registered[0]}.")
        _registry[name] = (path, as_async(function))
        return function

    return register


def lookup(name: str) -> tuple[str, CallFunction] | None:
    """The registered call ``name`` as (dotted path, coroutine function), or None."""
    return _registry.get(name)


def unregister(name: str) -> None:
    """Forget the call ``name`` (for tests that register their own)."""
    _registry.pop(name, None)
