from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class RelayConfig(AppConfig):
    name = "relay"
    verbose_name = "Relay"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from relay import checks  # noqa: F401  (registers the system checks)

        autodiscover_modules("calls")  # each app's calls.py registers its @relay.rpc functions

        from django.contrib.auth.signals import user_logged_out

        from relay.logout import close_sockets_on_logout

        # Logging out of the site closes the sockets that session opened (4401), in every process.
        user_logged_out.connect(close_sockets_on_logout, dispatch_uid="relay.logout")

        from relay.conf import conf

        if conf.RELAY_DEMO is True:
            from relay.demo import calls as demo_calls  # noqa: F401  (registers relay.demo.online)
