"""relay.server.daphne: sending and closing through daphne's autobahn protocol, and failing safe."""

import functools
import logging
import socket
from types import SimpleNamespace

import pytest
from daphne.server import Server
from twisted.internet.address import IPv4Address, UNIXAddress

from relay.server import daphne, tcp
from relay.server.adapters import asgi_close_code
from relay.server.daphne import ASGI_CLOSE_CODES, DaphneConnection, server_connection, under_daphne

pytestmark = pytest.mark.server_internals


class FakeTransport:
    """Twisted's FileDescriptor buffer fields, as the adapter reads them."""

    def __init__(self) -> None:
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0


class FakeProtocol:
    """The parts of autobahn's WebSocketServerProtocol the adapter uses."""

    STATE_OPEN = 1
    STATE_CLOSING = 2

    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.state = self.STATE_OPEN
        self.failByDrop = True
        self.sent: list[bytes] = []
        self.closes: list[int] = []
        self.reasons: list[bytes | None] = []

    def sendMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N802, N803 (autobahn's names)
        assert not isBinary
        self.sent.append(payload)
        self.transport._tempDataLen += len(payload) + 2  # a frame header, kept unsent

    def sendCloseFrame(self, code: int, reasonUtf8: bytes | None, isReply: bool) -> None:  # noqa: N802, N803
        assert not isReply
        self.closes.append(code)
        self.reasons.append(reasonUtf8)
        self.state = self.STATE_CLOSING


def daphne_send(protocol: object) -> functools.partial:
    """An ASGI send made the way daphne makes them: a partial of its server's handle_reply."""
    server = Server.__new__(Server)  # no reactor, no endpoints: only its bound method matters
    return functools.partial(server.handle_reply, protocol)


@pytest.fixture(autouse=True)
def warn_again():
    """Each test starts before the once-per-process warning."""
    daphne._warned = False
    yield
    daphne._warned = False


def test_send_reports_what_is_left_unsent():
    protocol = FakeProtocol()
    connection = DaphneConnection(protocol)
    assert connection.send("héllo") == len("héllo".encode()) + 2
    assert protocol.sent == ["héllo".encode()]
    protocol.transport.dataBuffer, protocol.transport.offset = b"x" * 100, 40
    assert connection.send("a") == 60 + len("héllo".encode()) + 2 + 3


def test_failing_by_drop_is_turned_off_so_close_codes_reach_the_client():
    protocol = FakeProtocol()
    DaphneConnection(protocol)
    assert protocol.failByDrop is False


def test_nothing_is_sent_to_a_closing_socket():
    protocol = FakeProtocol()
    connection = DaphneConnection(protocol)
    protocol.state = protocol.STATE_CLOSING
    assert connection.send("late") is None
    assert protocol.sent == []


@pytest.mark.parametrize("code", [1001, 1008, 1013])
def test_close_sends_rfc_codes_daphne_would_refuse(code):
    protocol = FakeProtocol()
    connection = DaphneConnection(protocol)
    connection.close(code)
    connection.close(1000)  # closing already: not a second close frame
    assert protocol.closes == [code]


def test_close_carries_the_reason():
    protocol = FakeProtocol()
    DaphneConnection(protocol).close(4000, "logged out élsewhere")
    assert (protocol.closes, protocol.reasons) == ([4000], ["logged out élsewhere".encode()])


def test_a_known_daphne_connection_is_used():
    protocol = FakeProtocol()
    assert isinstance(server_connection(daphne_send(protocol)), DaphneConnection)


def test_another_server_gets_none_and_no_warning(caplog):
    async def uvicorn_like_send(message: dict) -> None:
        pass

    with caplog.at_level(logging.WARNING, "relay.server.daphne"):
        assert server_connection(uvicorn_like_send) is None
    assert not under_daphne(uvicorn_like_send)
    assert caplog.records == []


def test_an_unknown_daphne_warns_once_and_falls_back(caplog):
    class NewerProtocol:  # a daphne whose transport no longer has the buffer fields
        transport = object()

        def sendCloseFrame(self, code: int, isReply: bool) -> None:  # noqa: N802, N803
            raise AssertionError("the adapter must not use an unknown protocol")

    send = daphne_send(NewerProtocol())
    with caplog.at_level(logging.WARNING, "relay.server.daphne"):
        assert server_connection(send) is None
        assert server_connection(send) is None
    (record,) = caplog.records
    assert "event=daphne_unknown protocol=NewerProtocol" in record.getMessage()
    assert "1001/1008/1009/1011/1013 are sent as 4001/4008/4009/4011/4013" in record.getMessage()


@pytest.mark.parametrize(("code", "sent"), [*ASGI_CLOSE_CODES.items(), (1000, 1000), (4000, 4000), (4321, 4321)])
def test_under_daphne_asgi_closes_use_codes_it_accepts(code, sent):
    assert asgi_close_code(daphne_send(object()), code) == sent
    assert sent == 1000 or 3000 <= sent <= 4999  # what autobahn's sendClose allows


# --- what the kernel holds, and the socket's own peer (issue 12) -------------------------------


class SocketTransport(FakeTransport):
    """A transport whose handle is a real socket, as Twisted's TCP and unix transports have."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def getHandle(self) -> socket.socket:  # noqa: N802 (Twisted's name)
        return self.sock


def test_an_accepted_tcp_socket_gets_a_bounded_kernel_buffer():
    """Else the kernel takes up to tcp_wmem's 4 MiB per socket that the relay's 1 MiB limit never sees."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        protocol = FakeProtocol()
        protocol.transport = SocketTransport(sock)
        DaphneConnection(protocol)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == tcp.KERNEL_UNSENT_BYTES


def test_a_transport_without_a_socket_is_left_alone():
    protocol = FakeProtocol()  # its FakeTransport has no getHandle (a TLS transport's has no socket)
    DaphneConnection(protocol).send("still sent")
    assert protocol.sent == [b"still sent"]


class PeerProtocol:
    """A daphne WebSocket protocol whose transport's peer is ``address``."""

    def __init__(self, address: object) -> None:
        self.transport = SimpleNamespace(getPeer=lambda: address)


class PeerRequest:
    """A daphne HTTP request (twisted.web) whose client is ``address``."""

    def __init__(self, address: object) -> None:
        self.address = address

    def getClientAddress(self) -> object:  # noqa: N802 (Twisted's name)
        return self.address


@pytest.mark.parametrize("make", [PeerProtocol, PeerRequest])
def test_socket_peer_is_the_sockets_not_what_proxy_headers_put_in_the_scope(make):
    send = daphne_send(make(IPv4Address("TCP", "127.0.0.3", 5000)))
    assert daphne.socket_peer(send, ("127.0.0.1", 0)) == ("127.0.0.3", 5000)


def test_socket_peer_of_a_unix_socket_is_none():
    assert daphne.socket_peer(daphne_send(PeerProtocol(UNIXAddress("/run/relay/relay-1.sock"))), ("1.2.3.4", 0)) is None


def test_proxy_headers_are_warned_about_once(caplog):
    daphne._warned_proxy_headers = False
    server = Server.__new__(Server)
    server.proxy_forwarded_address_header = "X-Forwarded-For"
    send = functools.partial(server.handle_reply, PeerProtocol(IPv4Address("TCP", "127.0.0.1", 1)))
    with caplog.at_level(logging.WARNING, "relay.server.daphne"):
        daphne.socket_peer(send, None)
        daphne.socket_peer(send, None)
    (record,) = caplog.records
    assert "event=proxy_headers_ignored" in record.getMessage() and "RELAY_TRUSTED_PROXIES" in record.getMessage()
    daphne._warned_proxy_headers = False
