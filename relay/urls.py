"""The relay's HTTP endpoints; include them with ``path("relay/", include("relay.urls"))``.

Health and metrics always; the demo under ``demo/`` where ``RELAY_DEMO`` is on; the HTTP
API under ``api/`` when ``relay.contrib.http_api`` is installed.
"""

from django.apps import apps
from django.urls import URLPattern, URLResolver, include, path

from relay import views

app_name = "relay"

urlpatterns: list[URLPattern | URLResolver] = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("demo/", include("relay.demo.urls")),  # 404 unless RELAY_DEMO
]


def http_api_patterns() -> list[URLPattern | URLResolver]:
    """``api/...``, and ``api`` itself: else CommonMiddleware (APPEND_SLASH) answers it with an HTML redirect."""
    from relay.contrib.http_api.views import not_found  # late: the app is optional

    return [path("api", not_found), path("api/", include("relay.contrib.http_api.urls"))]


if apps.is_installed("relay.contrib.http_api"):
    urlpatterns += http_api_patterns()
