"""relay.server.tcp: the kernel's share of what a client leaves unread is bounded on TCP sockets only."""

import socket

from relay.server.tcp import KERNEL_UNSENT_BYTES, UNACKED_TIMEOUT_MS, bound_kernel_buffer


def test_a_tcp_socket_gets_a_bounded_kernel_buffer():
    """Else the kernel takes up to tcp_wmem's 4 MiB per socket that the relay's 1 MiB limit never sees."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert bound_kernel_buffer(sock) is True
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == KERNEL_UNSENT_BYTES
        # A peer gone with bytes unsent is dropped in 30 s, not when TCP gives up (~15 minutes).
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == UNACKED_TIMEOUT_MS


def test_a_unix_socket_keeps_its_buffer(caplog):
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        before = left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert bound_kernel_buffer(left) is False
        assert left.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == before
    # Left alone, not tried and refused (a TCP option on a unix socket raises, and is logged).
    assert "event=socket_buffer_unbounded" not in caplog.text


def test_no_socket_is_left_alone():
    assert bound_kernel_buffer(None) is False
    assert bound_kernel_buffer(object()) is False


def test_a_socket_that_refuses_the_option_is_logged_not_raised(caplog):
    class Refusing:
        family = socket.AF_INET

        def setsockopt(self, *args: object) -> None:
            raise OSError(92, "Protocol not available")

    assert bound_kernel_buffer(Refusing()) is False
    assert "event=socket_buffer_unbounded" in caplog.text
