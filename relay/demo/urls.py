"""The demo's URLs, under ``relay/demo/`` (``relay.urls`` includes them; they answer 404 unless RELAY_DEMO)."""

from django.urls import URLPattern, path

from relay.demo import views

urlpatterns: list[URLPattern] = [
    path("", views.page, name="demo"),
    path("token", views.token, name="demo-token"),
]
