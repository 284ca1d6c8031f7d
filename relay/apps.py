from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class RelayConfig(AppConfig):
    name = "relay"
    verbose_name = "Relay"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from relay import checks  # noqa: F401  (registers the system checks)

        autodiscover_modules("calls")  # each app's calls.py registers its @relay.rpc functions
