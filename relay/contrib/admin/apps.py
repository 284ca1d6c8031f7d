from django.apps import AppConfig


class RelayAdminConfig(AppConfig):
    name = "relay.contrib.admin"
    label = "relay_admin"
    verbose_name = "Relay"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from relay import signals
        from relay.contrib.admin.audit import record_push

        signals.operator_push.connect(record_push, dispatch_uid="relay.contrib.admin.audit")
