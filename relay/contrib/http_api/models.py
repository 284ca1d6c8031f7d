"""API keys for services that push over HTTP; only a hash of each key is stored."""

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.db import models
from django.utils import timezone

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
