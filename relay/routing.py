"""The relay's ASGI applications: WebSockets at ``/ws`` and ``/ws/`` (any other path is refused), and HTTP."""

from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, WebSocketScope
from channels.routing import URLRouter
from django.apps import apps
from django.urls import re_path
from django.utils.module_loading import import_string

from relay.identity.auth import ClientIdentityMiddleware
from relay.identity.handshake import refuse_handshake
from relay.identity.origins import OriginMiddleware
from relay.server.consumers import RelayConsumer
from relay.server.peers import PeerMiddleware


async def refuse_unknown_path(scope: WebSocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Refuse a WebSocket handshake on a path the relay does not serve."""
    await refuse_handshake(scope, receive, send, "unknown_path")


websocket_urlpatterns = [
    # django-stubs types re_path()'s view as a Django view; Channels routes ASGI applications with it.
    re_path(r"^ws/?$", RelayConsumer.as_asgi()),  # type: ignore[arg-type]
]


def relay_websocket_application() -> PeerMiddleware:
    """The relay's WebSocket ASGI application, for ``ProtocolTypeRouter(websocket=...)``.

    The client's address (X-Forwarded-For only from a trusted proxy), origin check, then
    identity: a handshake is refused (403) before any consumer runs when its origin is
    foreign or it proves no client id. None wraps ``send``, so nothing sits between a
    delivery and the socket.
    """
    # types-channels takes only its type-check-only _ExtendedURLPattern, which re_path() never
    # returns; and re_path()'s view is typed as a Django view, as above.
    router = URLRouter([*websocket_urlpatterns, re_path(r"", refuse_unknown_path)])  # type: ignore[list-item, arg-type]
    return PeerMiddleware(OriginMiddleware(ClientIdentityMiddleware(router)))


def relay_http_application(django_application: Any) -> PeerMiddleware:
    """The site's HTTP ASGI application with the relay in front, for ``ProtocolTypeRouter(http=...)``.

    ``REMOTE_ADDR`` becomes the client's address as the relay resolves it (X-Forwarded-For
    only from RELAY_TRUSTED_PROXIES or a unix socket), and, with ``relay.contrib.http_api``
    installed, requests to the HTTP API are refused (401, 413) before Django reads their
    body. Other requests pass untouched.
    """
    application = django_application
    if apps.is_installed("relay.contrib.http_api"):
        # By name, as relay.urls includes the API's URLs: relay imports no contrib app itself.
        application = import_string("relay.contrib.http_api.asgi.ApiRequestGuard")(application)
    return PeerMiddleware(application)
