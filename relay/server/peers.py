"""ASGI middleware: ``scope["client"]`` becomes the client's address as the relay resolves it.

The socket's own peer (under daphne and uvicorn, read past their proxy-header options),
or, from a trusted proxy, the client X-Forwarded-For names (``relay.identity.peers``). The peer itself is
kept in ``scope["relay_peer"]``. For WebSockets it is the handshake's first step
(``relay.server.application``); for HTTP, ``relay_http_application`` puts the middleware
in front of Django, so ``REMOTE_ADDR`` (the metrics allow-list, the site's own views) is
that address too.
"""

from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable

from relay.identity.peers import client_of
from relay.server.adapters import socket_peer

#: An ASGI application, HTTP or WebSocket.
Application = Any


def with_client(scope: Any, send: ASGISendCallable) -> Any:
    """A copy of ``scope`` whose ``client`` is the client's address as the relay resolves it, and ``relay_peer``."""
    client = scope.get("client")
    peer = socket_peer(send, tuple(client) if client else None)
    return {**scope, "client": client_of(peer, scope.get("headers", ())), "relay_peer": peer}


class PeerMiddleware:
    """Resolve the client's address once per request, before any other middleware or view."""

    def __init__(self, inner: Application) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = with_client(scope, send)
        await self.inner(scope, receive, send)
