"""Graceful shutdown under daphne and uvicorn: on SIGTERM, close every WebSocket with 1001 first.

Daphne's own SIGTERM handling cancels the consumers and drops the sockets, so clients
see an abnormal close (1006) and cannot tell a deploy from a crash; uvicorn's closes
them all at once with 1012. This handler runs first: it refuses new handshakes, closes
every connection with 1001 ("going away", reconnect elsewhere), waits up to
``RELAY_SHUTDOWN_TIMEOUT`` for them to go, removes this process from presence, then
hands over to the server's own handler, which stops the server.
"""

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from relay.conf import conf
from relay.protocol import CLOSE_GOING_AWAY

if TYPE_CHECKING:
    from relay.server.hub import Hub

#: A signal's handler, as ``signal.getsignal`` returns it.
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

logger = logging.getLogger(__name__)

#: The drain task, referenced so that it cannot be garbage-collected while it runs.
_running: set[asyncio.Task[None]] = set()

#: After the drain, the server gets this long to stop before the process exits regardless.
EXIT_GRACE = 5.0


def under_running_reactor() -> bool:
    """Whether this process is a server whose Twisted reactor runs (daphne), not a test."""
    reactor = sys.modules.get("twisted.internet.reactor")
    return reactor is not None and getattr(reactor, "running", False)


def is_uvicorns(handler: Handler) -> bool:
    """Whether ``handler`` is uvicorn's (its ``Server.handle_exit``): this process is a uvicorn server."""
    return type(getattr(handler, "__self__", None)).__module__.startswith("uvicorn.")


def install(hub: "Hub") -> None:
    """Make SIGTERM drain ``hub`` before the server stops; only in a daphne or uvicorn server's main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not (under_running_reactor() or is_uvicorns(previous)):
        return
    loop = asyncio.get_running_loop()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, previous)  # a second SIGTERM goes straight to the server
        loop.call_soon_threadsafe(start_drain)

    def start_drain() -> None:
        _running.add(loop.create_task(drain_then_stop(hub, previous)))  # keep a reference

    signal.signal(signal.SIGTERM, on_sigterm)


async def drain_then_stop(hub: "Hub", previous: Handler) -> None:
    """Close every connection with 1001, leave Redis, then let the server's own handler stop it."""
    timeout = conf.RELAY_SHUTDOWN_TIMEOUT
    logger.info("event=shutdown node=%s connections=%d timeout=%.1f", hub.node, hub.connection_count(), timeout)
    await hub.drain(CLOSE_GOING_AWAY, timeout)
    logger.info("event=shutdown_drained node=%s connections_left=%d", hub.node, hub.connection_count())
    hub.close()
    await asyncio.sleep(0.1)  # let the last writes (presence removal) reach Redis
    asyncio.get_running_loop().call_later(EXIT_GRACE, os._exit, 0)  # daphne can hang on exit, uvicorn on a task
    if is_uvicorns(previous):
        # What its handle_exit does, but for remembering the signal: uvicorn would raise it
        # again once stopped, ending the process by SIGTERM rather than with 0 as daphne does.
        previous.__self__.should_exit = True  # type: ignore[union-attr]
    elif callable(previous):
        previous(signal.SIGTERM, None)
    else:
        raise SystemExit(0)
