from django.apps import AppConfig


class HttpApiConfig(AppConfig):
    name = "relay.contrib.http_api"
    label = "relay_http_api"
    verbose_name = "Relay HTTP API"
    default_auto_field = "django.db.models.BigAutoField"
