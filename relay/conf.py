"""The relay's settings: one typed property per ``RELAY_*`` name, with its default.

Each property reads ``django.conf.settings`` at access time, through a cache that is
emptied when the settings change (``override_settings`` and pytest-django's ``settings``
put a new holder in place, and send ``setting_changed``): a setting the site does not
set costs Django an AttributeError on every read, and a handshake reads a dozen.
"""

from typing import Any, TypeVar, cast

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from relay.protocol import FRAMING_ORIGINAL, SUBPROTOCOL_V1

T = TypeVar("T")

#: Stands for a setting the site does not set, in the cache.
_UNSET = object()
#: The site's value of each setting read so far, or _UNSET, and the settings they were read from.
_read: dict[str, Any] = {}
_read_from: list[Any] = [None]


def setting(name: str, default: T) -> T:
    """The setting ``name``, or ``default`` when the site does not set it.

    Typed as the default's type: ``checks.py`` rejects values of another type.
    """
    holder = settings._wrapped  # type: ignore[misc]  # override_settings swaps it: another holder, read again
    if holder is not _read_from[0]:
        _read.clear()
        _read_from[0] = holder
    value = _read.get(name, _UNSET)
    if value is _UNSET and name not in _read:
        value = _read[name] = getattr(settings, name, _UNSET)
    return default if value is _UNSET else cast(T, value)


@receiver(setting_changed)
def forget_settings(**kwargs: Any) -> None:
    """A setting changed (in tests): read every one again."""
    _read.clear()


class Settings:
    """Typed access to the ``RELAY_*`` settings."""

    @property
    def RELAY_ALLOW_QUERY_ID(self) -> bool:
        """Whether ``?id=`` may name the client (anyone can claim any id with it)."""
        return setting("RELAY_ALLOW_QUERY_ID", settings.DEBUG)

    @property
    def RELAY_MAX_TARGETS(self) -> int:
        """How many distinct targets one frame may address."""
        return setting("RELAY_MAX_TARGETS", 100)

    @property
    def RELAY_MAX_MESSAGE_BYTES(self) -> int:
        """The largest client frame accepted, in UTF-8 bytes."""
        return setting("RELAY_MAX_MESSAGE_BYTES", 64 * 1024)

    @property
    def RELAY_TOKEN_SECRET(self) -> str:
        """The HS256 secret that signs client tokens; shared with backends that mint them."""
        return setting("RELAY_TOKEN_SECRET", "") or settings.SECRET_KEY

    @property
    def RELAY_TOKEN_SECRETS(self) -> list[str]:
        """The HS256 secrets of client tokens: the first signs, every one verifies (rotation).

        Defaults to ``[RELAY_TOKEN_SECRET]``.
        """
        secrets: list[str] | None = setting("RELAY_TOKEN_SECRETS", None)
        return [self.RELAY_TOKEN_SECRET] if secrets is None else list(secrets)

    @property
    def RELAY_TOKEN_AUDIENCE(self) -> str | None:
        """The ``aud`` every client token must carry; None checks no audience."""
        return setting("RELAY_TOKEN_AUDIENCE", None)

    @property
    def RELAY_TOKEN_ISSUER(self) -> str | None:
        """The ``iss`` every client token must carry; None checks no issuer."""
        return setting("RELAY_TOKEN_ISSUER", None)

    @property
    def RELAY_TOKEN_LEEWAY(self) -> float:
        """Seconds of clock skew tolerated when checking a token's ``exp``."""
        return setting("RELAY_TOKEN_LEEWAY", 10)

    @property
    def RELAY_ALLOWED_ORIGINS(self) -> list[str]:
        """Browser origins allowed besides the request's own: full origins as in CSRF_TRUSTED_ORIGINS, or "*".

        ``"https://app.example.com"``, ``"https://*.example.com"`` (its subdomains). Unset:
        none, so only pages of the relay's own origin connect (as Django's CSRF check).
        """
        origins: list[str] | None = setting("RELAY_ALLOWED_ORIGINS", None)
        return [] if origins is None else list(origins)

    @property
    def RELAY_IDENTITY_BACKENDS(self) -> list[str]:
        """Dotted paths of the classes that decide who a handshake connects as, in order; first match wins."""
        return setting(
            "RELAY_IDENTITY_BACKENDS",
            [
                "relay.identity.backends.TokenBackend",
                "relay.identity.backends.SessionBackend",
                "relay.identity.backends.QueryIdBackend",
            ],
        )

    @property
    def RELAY_SEND_POLICY(self) -> str:
        """Dotted path of the policy deciding whether a sender may reach a target."""
        return setting("RELAY_SEND_POLICY", "relay.server.policies.AllowAll")

    @property
    def RELAY_MESSAGE_HANDLERS(self) -> list[str]:
        """Dotted paths of the message handlers every client frame runs through, in order."""
        return setting("RELAY_MESSAGE_HANDLERS", [])

    @property
    def RELAY_RATE_LIMIT(self) -> str | None:
        """Frames a connection may send, as ``"50/s"`` (also /m, /h, /d); None for no limit."""
        return setting("RELAY_RATE_LIMIT", "50/s")

    @property
    def RELAY_RATE_BURST(self) -> int | None:
        """Frames a connection may send at once above the rate; None means the rate's number."""
        return setting("RELAY_RATE_BURST", 100)

    @property
    def RELAY_RATE_LIMIT_CLOSE_AFTER(self) -> int:
        """Rate-limited frames in a row after which the connection is closed with 1008."""
        return setting("RELAY_RATE_LIMIT_CLOSE_AFTER", 50)

    @property
    def RELAY_REDIS_URL(self) -> str | list[str] | None:
        """The Redis servers of the bus, presence and history: a URL or a list of them (shards).

        Unset: the hosts of a channels-redis default layer (``relay.redis.servers``), so
        that one setting names them; ``None``: no Redis (this process relays only to itself).
        """
        url: str | list[str] | None = setting("RELAY_REDIS_URL", None)
        return url

    @property
    def RELAY_HISTORY(self) -> bool | None:
        """Whether deliveries are kept in a stream per client id; None (the default): where there is Redis."""
        history: bool | None = setting("RELAY_HISTORY", None)
        return history

    @property
    def RELAY_HISTORY_SIZE(self) -> int:
        """How many of the last deliveries each client id's stream keeps."""
        return setting("RELAY_HISTORY_SIZE", 100)

    @property
    def RELAY_HISTORY_TTL(self) -> int:
        """Seconds a delivery is kept for clients that resume."""
        return setting("RELAY_HISTORY_TTL", 300)

    @property
    def RELAY_HISTORY_RATE(self) -> int | None:
        """Bytes a second one client id's frames may store in streams, per process; None for no limit.

        A frame stores, in each target's stream, its payload and sender plus ``ENTRY_COST``
        (``relay.redis.streams``): what an entry and a new stream's keys cost Redis.
        """
        rate: int | None = setting("RELAY_HISTORY_RATE", 64 * 1024)
        return rate

    @property
    def RELAY_HISTORY_BURST(self) -> int:
        """Bytes one client id's frames may store at once above ``RELAY_HISTORY_RATE``."""
        return setting("RELAY_HISTORY_BURST", 2 * 1024 * 1024)

    @property
    def RELAY_HISTORY_STREAM_TTL(self) -> int:
        """Seconds a stream's position (epoch and offset) outlives its last delivery."""
        return setting("RELAY_HISTORY_STREAM_TTL", 86400)

    @property
    def RELAY_REDIS_PREFIX(self) -> str:
        """Prefix of the relay's Redis keys and pub/sub channels (pub/sub ignores the db number)."""
        return setting("RELAY_REDIS_PREFIX", "relay")

    @property
    def RELAY_PRESENCE_TTL(self) -> int:
        """Seconds after which a process that stopped heartbeating no longer counts as online."""
        return setting("RELAY_PRESENCE_TTL", 30)

    @property
    def RELAY_PRESENCE_HEARTBEAT(self) -> float:
        """Seconds between a process's presence heartbeats (well under the TTL)."""
        return setting("RELAY_PRESENCE_HEARTBEAT", 10)

    @property
    def RELAY_AUDIT_RETENTION_DAYS(self) -> int:
        """Days the audit log keeps each push."""
        return setting("RELAY_AUDIT_RETENTION_DAYS", 90)

    @property
    def RELAY_MAX_PENDING_BYTES(self) -> int:
        """Bytes a client may leave unread in its send buffer before it is closed with 1013."""
        return setting("RELAY_MAX_PENDING_BYTES", 1024 * 1024)

    @property
    def RELAY_MAX_CONNECTIONS_PER_ID(self) -> int:
        """Connections one client id may hold in one process; the next handshake is refused."""
        return setting("RELAY_MAX_CONNECTIONS_PER_ID", 20)

    @property
    def RELAY_FRAMINGS(self) -> list[str]:
        """The framings clients may choose: ``"relay.v1"`` and ``"original"`` (no subprotocol).

        Defaults to both with DEBUG on, else ``relay.v1`` only: in the original framing a
        delivery is the bare payload, so a client's message and a server push look the same.
        """
        default = [SUBPROTOCOL_V1, FRAMING_ORIGINAL]
        return setting("RELAY_FRAMINGS", default if settings.DEBUG else default[:1])

    @property
    def RELAY_TRUSTED_PROXIES(self) -> list[str]:
        """Addresses or networks of the proxies whose X-Forwarded-For names the client.

        A peer on a unix socket (a proxy on this host) is always trusted.
        """
        return setting("RELAY_TRUSTED_PROXIES", [])

    @property
    def RELAY_SHUTDOWN_TIMEOUT(self) -> float:
        """Seconds a SIGTERM'd process waits for its clients to close before it exits anyway."""
        return setting("RELAY_SHUTDOWN_TIMEOUT", 5.0)

    @property
    def RELAY_METRICS_ALLOWED_IPS(self) -> list[str]:
        """Addresses or networks that may read /relay/metrics without the token."""
        return setting("RELAY_METRICS_ALLOWED_IPS", ["127.0.0.1/32", "::1/128"])

    @property
    def RELAY_METRICS_TOKEN(self) -> str | None:
        """A bearer token that may read /relay/metrics from anywhere; None for none."""
        return setting("RELAY_METRICS_TOKEN", None)

    @property
    def RELAY_GROUPS_ON_BUS(self) -> bool:
        """Whether the bus carries the layer groups ``relay.<id>`` (channels-redis pub/sub layer only)."""
        return setting("RELAY_GROUPS_ON_BUS", True)

    @property
    def RELAY_DEMO(self) -> bool:
        """Whether /relay/demo/ serves the demo (clients chatting in one page) and its call answers."""
        return setting("RELAY_DEMO", False)


conf = Settings()
