"""relay.server.shutdown: which processes get the SIGTERM drain (the drain itself: tests/e2e/test_faults.py)."""

import asyncio
import signal
import threading

from relay.server import shutdown


class UvicornServer:
    """Stands for uvicorn's Server: its handle_exit is the SIGTERM handler uvicorn installs."""

    def handle_exit(self, signum, frame):
        pass


UvicornServer.__module__ = "uvicorn.server"


def test_uvicorns_handler_is_told_from_any_other():
    assert shutdown.is_uvicorns(UvicornServer().handle_exit)
    assert not shutdown.is_uvicorns(signal.SIG_DFL)
    assert not shutdown.is_uvicorns(lambda signum, frame: None)
    assert not shutdown.is_uvicorns(None)


def test_a_test_process_is_not_a_running_daphne():
    assert shutdown.under_running_reactor() is False


async def test_install_leaves_sigterm_alone_outside_a_server():
    """Under pytest (no running reactor, no uvicorn handler), SIGTERM keeps its handler."""
    before = signal.getsignal(signal.SIGTERM)
    shutdown.install(hub=None)  # type: ignore[arg-type]  # never reached: nothing is installed
    assert signal.getsignal(signal.SIGTERM) is before


async def test_install_drains_before_uvicorn_stops(monkeypatch):
    """Under uvicorn, SIGTERM runs the relay's handler first, which gives the signal back to uvicorn's."""
    uvicorn_handler = UvicornServer().handle_exit
    previous = signal.signal(signal.SIGTERM, uvicorn_handler)
    started = []

    async def drain_then_stop(hub, handler):
        started.append((hub, handler))

    monkeypatch.setattr(shutdown, "drain_then_stop", drain_then_stop)
    try:
        assert threading.current_thread() is threading.main_thread()
        shutdown.install(hub="the hub")  # type: ignore[arg-type]
        relay_handler = signal.getsignal(signal.SIGTERM)
        assert relay_handler is not uvicorn_handler
        relay_handler(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) == uvicorn_handler  # a second SIGTERM goes to uvicorn
        for _ in range(3):
            await asyncio.sleep(0)
        assert started == [("the hub", uvicorn_handler)]  # the drain, then uvicorn's own exit
    finally:
        signal.signal(signal.SIGTERM, previous)
