"""
ASGI config for siteproject project.

It exposes the ASGI callable as a module-level variable named ``application``.

For more information on this file, see
https://docs.djangoproject.com/en/5.2/howto/deployment/asgi/
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'siteproject.settings')

application = get_asgi_application()

# relay: the site's HTTP (static files too under DEBUG, as runserver serves them) and the relay's WebSockets.
from channels.routing import ProtocolTypeRouter  # noqa: E402  (after Django is set up, above)
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from relay.routing import relay_http_application, relay_websocket_application  # noqa: E402

http_application = ASGIStaticFilesHandler(application) if settings.DEBUG else application
application = ProtocolTypeRouter(
    {
        "http": relay_http_application(http_application),
        "websocket": relay_websocket_application(),
    }
)
