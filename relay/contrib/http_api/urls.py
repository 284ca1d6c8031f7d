"""The HTTP API's endpoints, included by ``relay.urls`` under ``api/``."""

from django.urls import path, re_path

from relay.contrib.http_api import views

urlpatterns = [
    path("send", views.send, name="api-send"),
    path("presence", views.presence_view, name="api-presence"),
    re_path(r"", views.not_found),
]
