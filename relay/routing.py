"""WebSocket routing: ``/ws`` and ``/ws/`` reach the relay; any other path is refused."""

from channels.routing import URLRouter
from django.urls import re_path

from .auth import ClientIdentityMiddleware, refuse_handshake
from .consumers import RelayConsumer


async def refuse_unknown_path(scope, receive, send) -> None:
    """Refuse a WebSocket handshake on a path the relay does not serve."""
    await refuse_handshake(receive, send)


websocket_urlpatterns = [
    re_path(r"^ws/?$", RelayConsumer.as_asgi()),
]


def relay_websocket_application():
    """The relay's WebSocket ASGI application, for ``ProtocolTypeRouter(websocket=...)``."""
    return ClientIdentityMiddleware(URLRouter([*websocket_urlpatterns, re_path(r"", refuse_unknown_path)]))
