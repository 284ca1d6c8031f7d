"""The relay's HTTP endpoints; include them with ``path("relay/", include("relay.urls"))``."""

from django.urls import path, re_path

from . import ops, views

app_name = "relay"

urlpatterns = [
    path("api/send", views.send, name="api-send"),
    path("api/presence", views.presence_view, name="api-presence"),
    path("healthz", ops.healthz, name="healthz"),
    path("metrics", ops.metrics_view, name="metrics"),
    re_path(r"^api/", views.not_found),
]
