"""The relay's ASGI applications: WebSockets at ``/ws`` and ``/ws/`` (any other path is refused), and HTTP."""

from typing import Any

from django.apps import apps
from django.utils.module_loading import import_string

from relay.server.application import RelayWebSocketApplication
from relay.server.peers import PeerMiddleware


def relay_websocket_application() -> RelayWebSocketApplication:
    """The relay's WebSocket ASGI application, for ``ProtocolTypeRouter(websocket=...)``.

    The client's address (X-Forwarded-For only from a trusted proxy), origin check, then
    identity: a handshake is refused (403) before any consumer runs when its origin is
    foreign or it proves no client id (``relay.server.application``).
    """
    return RelayWebSocketApplication()


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
