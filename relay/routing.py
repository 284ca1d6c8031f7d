"""WebSocket routing: ``/ws`` and ``/ws/`` reach the relay; any other path is refused."""

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, WebSocketScope
from channels.routing import URLRouter
from django.urls import re_path

from relay.identity.auth import ClientIdentityMiddleware
from relay.identity.handshake import refuse_handshake
from relay.identity.origins import OriginMiddleware
from relay.server.consumers import RelayConsumer


async def refuse_unknown_path(scope: WebSocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Refuse a WebSocket handshake on a path the relay does not serve."""
    await refuse_handshake(scope, receive, send, "unknown_path")


websocket_urlpatterns = [
    # django-stubs types re_path()'s view as a Django view; Channels routes ASGI applications with it.
    re_path(r"^ws/?$", RelayConsumer.as_asgi()),  # type: ignore[arg-type]
]


def relay_websocket_application() -> OriginMiddleware:
    """The relay's WebSocket ASGI application, for ``ProtocolTypeRouter(websocket=...)``.

    Origin check, then identity: a handshake is refused (403) before any consumer runs
    when its origin is foreign or it proves no client id. Neither wraps ``send``, so
    nothing sits between a delivery and the socket.
    """
    # types-channels takes only its type-check-only _ExtendedURLPattern, which re_path() never
    # returns; and re_path()'s view is typed as a Django view, as above.
    router = URLRouter([*websocket_urlpatterns, re_path(r"", refuse_unknown_path)])  # type: ignore[list-item, arg-type]
    return OriginMiddleware(ClientIdentityMiddleware(router))
