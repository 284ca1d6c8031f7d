"""The server under a connection: daphne's or uvicorn's socket, where the relay can reach it.

ASGI's ``websocket.send`` cannot say how much a client has left unread, waits (under
uvicorn) or refuses RFC close codes (under daphne), and ``scope["client"]`` is what a
proxy header made it. Each supported server has an adapter (``relay.server.daphne``,
``relay.server.uvicorn``) giving the relay a ``ServerConnection`` and the socket's peer;
under any other server the relay falls back to plain ASGI.
"""

from typing import Protocol

from asgiref.typing import ASGISendCallable

from relay.server import daphne, uvicorn


class ServerConnection(Protocol):
    """The socket-level side of one WebSocket connection, as an adapter gives it."""

    def send(self, text: str) -> int | None:
        """Send a text frame at once; the bytes the client has not read yet, or None if closing."""

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake with any RFC 6455 code, at once."""


def server_connection(send: ASGISendCallable) -> ServerConnection | None:
    """The connection behind an ASGI ``send`` under daphne or uvicorn; None elsewhere (plain ASGI)."""
    return daphne.server_connection(send) or uvicorn.server_connection(send)


def socket_peer(send: ASGISendCallable, default: tuple[str, int] | None) -> tuple[str, int] | None:
    """The socket's own peer (None: a unix socket), past any proxy-header option; ``default`` elsewhere."""
    if daphne.under_daphne(send):
        return daphne.socket_peer(send, default)
    return uvicorn.socket_peer(send, default)


def asgi_close_code(send: ASGISendCallable, code: int) -> int:
    """The code to put in an ASGI ``websocket.close``: under daphne, one it accepts."""
    return daphne.ASGI_CLOSE_CODES.get(code, code) if daphne.under_daphne(send) else code
