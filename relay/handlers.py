"""Message handlers: the site's own code, run on every valid client frame before it is relayed.

``RELAY_MESSAGE_HANDLERS`` lists dotted paths of callables ``handler(message) -> Message |
None``, run in order. A handler returns the message unchanged, a changed copy
(``message.replace(payload=..., targets=...)``), or None to consume it (nothing is
relayed); it raises ``relay.Reject(code, detail)`` to answer the sender with that error.
Async handlers are awaited; sync ones run in a worker thread (``relay.threads``), so
the ORM works. Server pushes never pass through handlers.
"""

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from typing import Any

from django.utils.module_loading import import_string

from relay.connections import Connection, FromConnection
from relay.exceptions import Reject
from relay.protocol import JSON
from relay.threads import as_async


@dataclasses.dataclass(frozen=True, slots=True)
class Message(FromConnection):
    """A client frame on its way to its targets, as message handlers see it.

    ``targets`` are client ids, distinct, in the sender's order; ``payload`` is the
    decoded JSON value; ``id`` is the frame's correlation id (or None).
    """

    connection: Connection
    targets: tuple[str, ...]
    payload: JSON
    id: str | int | None = None

    def replace(self, **changes: Any) -> "Message":
        """A copy with ``changes`` (``payload=``, ``targets=``), for a handler to return."""
        return dataclasses.replace(self, **changes)


Handler = Callable[[Message], Awaitable[Message | None]]


class HandlerError(Exception):
    """A handler failed (raised, or returned something else than a Message or None): a bug in it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"message handler {path}: {problem}")
        self.path = path
        self.problem = problem


@lru_cache(maxsize=8)
def load_handlers(paths: tuple[str, ...]) -> tuple[tuple[str, Handler], ...]:
    """The handlers at ``paths``, as (path, coroutine function); classes are instantiated once."""
    handlers = []
    for path in paths:
        handler = import_string(path)
        if isinstance(handler, type):
            handler = handler()
        handlers.append((path, as_async(handler)))
    return tuple(handlers)


async def run_handlers(handlers: Sequence[tuple[str, Handler]], message: Message) -> Message | None:
    """Run ``message`` through ``handlers`` in order; the message to relay, or None if consumed.

    ``relay.Reject`` passes through; any other exception, or a return value that is
    neither a Message nor None, is a HandlerError naming the handler.
    """
    for path, handler in handlers:
        try:
            result = await handler(message)
        except Reject:
            raise
        except Exception as exc:
            raise HandlerError(path, f"{type(exc).__name__}: {exc}") from exc
        if result is None:
            return None
        if not isinstance(result, Message):
            raise HandlerError(path, f"returned {type(result).__name__}, not a Message or None")
        message = result
    return message
