"""relay.server.uvicorn: sending and closing through uvicorn's websockets-sansio protocol, and failing safe.

A uvicorn server runs in the test's event loop on a free port; its ASGI application hands
each connection's ``send`` and scope to the test, and a websockets client is the peer.
"""

import asyncio
import contextlib
import logging
import socket

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from relay.server import adapters
from relay.server import uvicorn as adapter
from relay.server.tcp import KERNEL_UNSENT_BYTES

pytestmark = pytest.mark.server_internals


@pytest.fixture(autouse=True)
def warn_again():
    adapter._warned = False
    yield
    adapter._warned = False


@contextlib.asynccontextmanager
async def uvicorn_server(**config):
    """A uvicorn server in this loop; yields (port, a queue of (scope, receive, send) per WebSocket)."""
    accepted: asyncio.Queue = asyncio.Queue()
    done = asyncio.Event()

    async def app(scope, receive, send):
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await accepted.put((scope, receive, send))
        await done.wait()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", **config)
    )
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port, accepted
    finally:
        done.set()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def test_the_sansio_protocol_is_used_and_sends_without_waiting():
    async with uvicorn_server(ws="websockets-sansio") as (port, accepted):
        async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as client:
            scope, receive, send = await accepted.get()
            connection = adapters.server_connection(send)
            assert isinstance(connection, adapter.UvicornConnection)
            assert connection.send("hello") == 0
            assert await client.recv() == "hello"


async def test_what_a_client_does_not_read_is_counted_and_never_awaited():
    """ASGI's websocket.send would wait for the transport; the adapter returns the unsent bytes instead."""
    async with uvicorn_server(ws="websockets-sansio") as (port, accepted):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window follows
        sock.connect(("127.0.0.1", port))
        async with connect(f"ws://127.0.0.1:{port}/ws", sock=sock, compression=None, max_queue=1) as client:
            client.transport.pause_reading()  # the client stops reading
            scope, receive, send = await accepted.get()
            connection = adapters.server_connection(send)
            frame = "x" * 65536
            unsent = [connection.send(frame) for _ in range(64)]  # 4 MiB, synchronously
            assert unsent[-1] > 2 * 1024 * 1024, unsent[-5:]
            assert unsent == sorted(unsent)
            client.transport.abort()  # a client that never reads would not finish a closing handshake


async def test_the_kernel_buffer_of_an_accepted_socket_is_bounded():
    async with uvicorn_server(ws="websockets-sansio") as (port, accepted):
        async with connect(f"ws://127.0.0.1:{port}/ws"):
            scope, receive, send = await accepted.get()
            adapters.server_connection(send)
            sock = send.__self__.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == KERNEL_UNSENT_BYTES


@pytest.mark.parametrize("code", [1001, 1008, 1013, 4401])
async def test_close_sends_any_rfc_code_and_the_application_hears_the_disconnect(code):
    async with uvicorn_server(ws="websockets-sansio") as (port, accepted):
        async with connect(f"ws://127.0.0.1:{port}/ws") as client:
            scope, receive, send = await accepted.get()
            connection = adapters.server_connection(send)
            connection.close(code, "bye")
            assert await receive() == {"type": "websocket.disconnect", "code": code, "reason": "bye"}
            with pytest.raises(ConnectionClosed) as closed:
                await client.recv()
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (code, "bye")
            assert connection.send("after the close") is None  # nothing more is sent
            connection.close(1000)  # a second close does nothing


async def test_uvicorns_shutdown_passes_a_connection_the_relay_is_closing(caplog):
    """uvicorn's shutdown sends 1012 on every open connection; on one the relay is closing,
    websockets refuses it (InvalidState) and the shutdown of every other connection stopped."""
    caplog.set_level(logging.ERROR)
    async with uvicorn_server(ws="websockets-sansio") as (port, accepted):
        closing = await connect(f"ws://127.0.0.1:{port}/ws")
        closing.transport.pause_reading()  # it will not answer the relay's close
        _, _, send = await accepted.get()
        adapters.server_connection(send).close(1001)
        # Leaving the block shuts the server down, which raised InvalidState from serve().
    closing.transport.abort()
    assert "Traceback" not in caplog.text and "InvalidState" not in caplog.text


async def test_a_transport_uvicorn_closed_is_not_written_to_and_is_dropped_soon(monkeypatch):
    """uvicorn closes the transport itself (a keepalive timeout, say), which waits for the
    unsent bytes to go: forever, for a peer that does not read. The adapter drops it."""
    monkeypatch.setattr(adapter, "CLOSE_HANDSHAKE_TIMEOUT", 0.2)
    async with uvicorn_server(ws="websockets-sansio") as (port, accepted):
        async with connect(f"ws://127.0.0.1:{port}/ws") as client:
            client.transport.pause_reading()
            _, receive, send = await accepted.get()
            connection = adapters.server_connection(send)
            while connection.send("x" * 65536) == 0:  # until the kernel's buffers are full
                await asyncio.sleep(0)
            send.__self__.transport.close()  # what uvicorn does on its own
            assert connection.send("more") is None
            # Dropped (1005: the handshake was complete), not left waiting for the peer to read.
            assert await asyncio.wait_for(receive(), 5) == {"type": "websocket.disconnect", "code": 1005}


async def test_the_socket_peer_is_the_transports_not_the_forwarded_header():
    """uvicorn's --proxy-headers believes X-Forwarded-For from 127.0.0.1; the relay decides itself."""
    async with uvicorn_server(ws="websockets-sansio", proxy_headers=True, forwarded_allow_ips="*") as (port, accepted):
        async with connect(f"ws://127.0.0.1:{port}/ws", additional_headers={"X-Forwarded-For": "6.6.6.6"}) as client:
            scope, receive, send = await accepted.get()
            assert scope["client"][0] == "6.6.6.6"  # what uvicorn made of the header
            own = client.transport.get_extra_info("sockname")
            assert adapters.socket_peer(send, tuple(scope["client"])) == (own[0], own[1])


def test_an_unknown_uvicorn_protocol_warns_once_and_falls_back(caplog):
    class OtherProtocol:  # another uvicorn WebSocket protocol: no sans-I/O connection
        transport = None

        async def send(self, message: dict) -> None:
            raise AssertionError("unused")

    OtherProtocol.__module__ = "uvicorn.protocols.websockets.wsproto_impl"
    send = OtherProtocol().send
    with caplog.at_level(logging.WARNING, "relay.server.uvicorn"):
        assert adapters.server_connection(send) is None
        assert adapters.server_connection(send) is None
    (record,) = caplog.records
    assert "event=uvicorn_unknown protocol=OtherProtocol" in record.getMessage()
    assert adapters.socket_peer(send, ("10.0.0.1", 4)) == ("10.0.0.1", 4)  # no transport: the scope's


def test_another_server_gets_plain_asgi(caplog):
    async def plain_send(message: dict) -> None:
        pass

    with caplog.at_level(logging.WARNING):
        assert adapters.server_connection(plain_send) is None
    assert caplog.records == []
    assert adapters.socket_peer(plain_send, ("10.0.0.1", 4)) == ("10.0.0.1", 4)
    assert adapters.asgi_close_code(plain_send, 1001) == 1001
