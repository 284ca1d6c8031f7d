"""The audit log of pushes made from the admin, the command line and the HTTP API."""

from datetime import timedelta

from django.db import models
from django.utils import timezone

from relay.conf import conf


class AuditEntry(models.Model):
    """One push made from the admin, the command line or the HTTP API."""

    class Source(models.TextChoices):
        ADMIN = "admin", "Django admin"
        COMMAND = "command", "relay_send command"
        API = "api", "HTTP API"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    actor = models.CharField(max_length=150, help_text="The staff user, API key or OS user that pushed.")
    targets = models.JSONField()
    online = models.PositiveIntegerField(help_text="How many targets had a connection open.")
    size = models.PositiveIntegerField(help_text="Bytes of the payload's JSON.")

    class Meta:
        verbose_name = "push"
        verbose_name_plural = "audit log of pushes"
        ordering = ["-created_at"]
        permissions = [("send_message", "Can send messages to clients from the admin")]

    def __str__(self) -> str:
        return f"{self.get_source_display()} push by {self.actor} to {len(self.targets)} target(s)"

    @classmethod
    def record(cls, source: str, actor: str, targets: list[str], online: int, size: int) -> "AuditEntry":
        """Log a push, and drop entries older than ``RELAY_AUDIT_RETENTION_DAYS``."""
        cls.objects.filter(created_at__lt=timezone.now() - timedelta(days=conf.RELAY_AUDIT_RETENTION_DAYS)).delete()
        return cls.objects.create(source=source, actor=actor[:150], targets=targets, online=online, size=size)
