"""ASGI entry point: ``daphne relayproject.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relayproject.settings")
# Set Django up before importing anything that touches models or settings.
http_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from relay.routing import relay_websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": relay_websocket_application(),
    }
)
