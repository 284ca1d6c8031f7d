"""URLs of the deployable site: the demo, the admin and the relay's HTTP endpoints."""

from django.contrib import admin
from django.urls import include, path

from relay.demo import views as demo

urlpatterns = [
    path("", demo.page, name="home"),  # the demo where RELAY_DEMO is on (with DEBUG, by default); else 404
    path("admin/", admin.site.urls),
    path("relay/", include("relay.urls")),
]
