"""API keys for services that push over HTTP; only a hash of each key is stored."""

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

KEY_PREFIX = "rk"
#: ``last_used_at`` is updated at most this often: not one database write per request.
LAST_USED_PRECISION = timedelta(minutes=1)
#: A client-id pattern of a key's scope: client-id characters, and ``*`` for any run of them.
ID_PATTERN = re.compile(r"[A-Za-z0-9_.*-]{1,64}")


def split_patterns(text: str) -> list[str]:
    """The patterns of a key's ``client_ids``, written separated by spaces or commas."""
    return [part for part in re.split(r"[\s,]+", text) if part]


def validate_client_ids(text: str) -> None:
    """Each pattern is 1-64 characters of A-Z a-z 0-9 _ . - and ``*``."""
    bad = [pattern for pattern in split_patterns(text) if not ID_PATTERN.fullmatch(pattern)]
    if bad:
        raise ValidationError(
            f"Not a client-id pattern: {', '.join(bad)}. Use client-id characters (A-Z a-z 0-9 _ . -) "
            "and * for any run of them, e.g. 'user-* 42'."
        )


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
    # The key's scope: what it may do, and to whom.
    can_send = models.BooleanField("may send", default=True, help_text="POST /relay/api/send")
    can_read_presence = models.BooleanField(
        "may read presence", default=False, help_text="GET /relay/api/presence: who is online"
    )
    client_ids = models.CharField(
        "client ids",
        max_length=1000,
        blank=True,
        validators=[validate_client_ids],
        help_text="The client ids it may send to and ask about: patterns separated by spaces or commas, "
        "* standing for any characters (e.g. 'user-* 42'). Empty: any client id.",
    )

    class Meta:
        verbose_name = "API key"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({KEY_PREFIX}_{self.prefix}_…)"

    @classmethod
    def generate(
        cls, name: str, *, can_send: bool = True, can_read_presence: bool = False, client_ids: str = ""
    ) -> tuple["ApiKey", str]:
        """Create a key named ``name`` with that scope; return it and the plain key, which is never stored.

        ValidationError for a pattern of ``client_ids`` that is not one.
        """
        key = cls(name=name, can_send=can_send, can_read_presence=can_read_presence, client_ids=client_ids.strip())
        validate_client_ids(key.client_ids)
        plain = key.assign_new_key()
        key.save()
        return key, plain

    @property
    def patterns(self) -> list[str]:
        """The client-id patterns of the key's scope; empty for any client id."""
        return split_patterns(self.client_ids)

    def refused_ids(self, client_ids: Iterable[str]) -> list[str]:
        """The ids, in order, that the key's scope does not reach (``*`` is the only wildcard)."""
        patterns = self.patterns
        if not patterns:
            return []
        reach = re.compile("|".join(".*".join(map(re.escape, pattern.split("*"))) for pattern in patterns))
        return [client_id for client_id in client_ids if not reach.fullmatch(client_id)]

    @property
    def scope(self) -> str:
        """The key's scope in a few words: ``send, presence; ids user-* 42``."""
        rights = [name for name, granted in (("send", self.can_send), ("presence", self.can_read_presence)) if granted]
        ids = f"ids {' '.join(self.patterns)}" if self.patterns else "any id"
        return f"{', '.join(rights) or 'nothing'}; {ids}"

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
