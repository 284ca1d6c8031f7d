from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "examples.chat"
    label = "chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from examples.chat.receivers import log_arrival
        from relay.signals import client_connected

        client_connected.connect(log_arrival, dispatch_uid="examples.chat.log_arrival")
