from django.apps import AppConfig, apps
from django.utils.module_loading import autodiscover_modules


class RelayConfig(AppConfig):
    name = "relay"
    verbose_name = "Relay"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from relay import checks  # noqa: F401  (registers the system checks)

        autodiscover_modules("calls")  # each app's calls.py registers its @relay.rpc functions

        from django.contrib.auth.signals import user_logged_in, user_logged_out

        from relay import logout

        # The end of a session closes the sockets it opened (4401), in every process: a logout,
        # another user's login into it, a password change (relay.logout).
        user_logged_out.connect(logout.close_sockets_on_logout, dispatch_uid="relay.logout")
        user_logged_in.connect(logout.close_sockets_on_login, dispatch_uid="relay.logout.login")
        if apps.is_installed("django.contrib.auth"):
            from django.contrib.auth import get_user_model
            from django.db.models.signals import post_save

            post_save.connect(
                logout.close_sockets_on_password_change, sender=get_user_model(), dispatch_uid="relay.logout.password"
            )

        from relay.conf import conf

        if conf.RELAY_DEMO is True:
            from relay.demo import calls as demo_calls  # noqa: F401  (registers relay.demo.online)
