"""ASGI entry point: ``daphne relayproject.asgi:application``."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relayproject.settings")
# Set Django up before importing anything that touches models or settings.
http_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from relay.routing import relay_http_application, relay_websocket_application  # noqa: E402

if settings.DEBUG:
    # make run: the admin's CSS and JS straight from the apps; production serves
    # STATIC_ROOT from nginx (README, "Deploy").
    http_application = ASGIStaticFilesHandler(http_application)

application = ProtocolTypeRouter(
    {
        "http": relay_http_application(http_application),
        "websocket": relay_websocket_application(),
    }
)

# Everything imported so far lives as long as the process: out of the garbage collector's
# sight, so that the collections that connections and frames trigger do not walk it again
# each time (~100,000 objects; a tenth of a handshake's CPU, measured with bench/run.py).
gc.freeze()
