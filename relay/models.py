"""API keys for services that push over HTTP, and the audit log of pushes."""

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.db import models
from django.utils import timezone

from .conf import conf

KEY_PREFIX = "rk"
#: ``last_used_at`` is updated at most this often: not one database write per request.
LAST_USED_PRECISION = timedelta(minutes=1)


def hash_key(key: str) -> str:
    """The stored form of an API key: keys are long random strings, so SHA-256 is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(models.Model):
    """A key a service sends as ``Authorization: Bearer <key>``; only its hash is stored."""

    name = models.CharField(max_length=100, unique=True, help_text="Who uses this key, e.g. 'billing-service'.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({KEY_PREFIX}_{self.prefix}_…)"

    @classmethod
    def generate(cls, name: str) -> tuple["ApiKey", str]:
        """Create a key named ``name``; return it and the plain key, which is never stored."""
        key = cls(name=name)
        plain = key.assign_new_key()
        key.save()
        return key, plain

    def assign_new_key(self) -> str:
        """Give this (unsaved) record a fresh key; return the plain key, which is never stored."""
        self.prefix = secrets.token_hex(6)
        plain = f"{KEY_PREFIX}_{self.prefix}_{secrets.token_urlsafe(32)}"
        self.key_hash = hash_key(plain)
        return plain

    @classmethod
    async def authenticate(cls, plain: str) -> "ApiKey | None":
        """The active key matching ``plain``, or None."""
        parts = plain.split("_")
        if len(parts) < 3 or parts[0] != KEY_PREFIX:
            return None
        key = await cls.objects.filter(prefix=parts[1], revoked_at__isnull=True).afirst()
        if key is None or not hmac.compare_digest(key.key_hash, hash_key(plain)):
            return None
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_PRECISION:  # one write a minute
            await cls.objects.filter(pk=key.pk).aupdate(last_used_at=now)
        return key

    @property
    def active(self) -> bool:
        """Whether the key still authenticates."""
        return self.revoked_at is None

    def revoke(self) -> None:
        """Stop the key from authenticating, keeping its record."""
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


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
