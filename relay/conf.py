"""The relay's settings: one typed property per ``RELAY_*`` name, with its default.

Each property reads ``django.conf.settings`` at access time, so ``override_settings``
works in tests and nothing needs resetting.
"""

from django.conf import settings


class Settings:
    """Typed access to the ``RELAY_*`` settings."""

    @property
    def RELAY_ALLOW_QUERY_ID(self) -> bool:
        """Whether ``?id=`` may name the client (anyone can claim any id with it)."""
        return getattr(settings, "RELAY_ALLOW_QUERY_ID", settings.DEBUG)

    @property
    def RELAY_MAX_TARGETS(self) -> int:
        """How many distinct targets one frame may address."""
        return getattr(settings, "RELAY_MAX_TARGETS", 100)

    @property
    def RELAY_MAX_MESSAGE_BYTES(self) -> int:
        """The largest client frame accepted, in UTF-8 bytes."""
        return getattr(settings, "RELAY_MAX_MESSAGE_BYTES", 64 * 1024)

    @property
    def RELAY_TOKEN_SECRET(self) -> str:
        """The HS256 secret that signs client tokens; shared with backends that mint them."""
        return getattr(settings, "RELAY_TOKEN_SECRET", None) or settings.SECRET_KEY

    @property
    def RELAY_TOKEN_LEEWAY(self) -> float:
        """Seconds of clock skew tolerated when checking a token's ``exp``."""
        return getattr(settings, "RELAY_TOKEN_LEEWAY", 10)

    @property
    def RELAY_ALLOWED_ORIGINS(self) -> list[str]:
        """Browser origins allowed to connect: host patterns as in ALLOWED_HOSTS, full origins, or "*"."""
        origins = getattr(settings, "RELAY_ALLOWED_ORIGINS", None)
        if origins is None:
            return list(settings.ALLOWED_HOSTS)
        return list(origins)

    @property
    def RELAY_SEND_POLICY(self) -> str:
        """Dotted path of the policy deciding whether a sender may reach a target."""
        return getattr(settings, "RELAY_SEND_POLICY", "relay.server.policies.AllowAll")

    @property
    def RELAY_RATE_LIMIT(self) -> str | None:
        """Frames a connection may send, as ``"50/s"`` (also /m, /h, /d); None for no limit."""
        return getattr(settings, "RELAY_RATE_LIMIT", "50/s")

    @property
    def RELAY_RATE_BURST(self) -> int | None:
        """Frames a connection may send at once above the rate; None means the rate's number."""
        return getattr(settings, "RELAY_RATE_BURST", 100)

    @property
    def RELAY_RATE_LIMIT_CLOSE_AFTER(self) -> int:
        """Rate-limited frames in a row after which the connection is closed with 1008."""
        return getattr(settings, "RELAY_RATE_LIMIT_CLOSE_AFTER", 50)

    @property
    def RELAY_REDIS_URL(self) -> str | None:
        """The Redis that carries client frames between processes and holds presence.

        Defaults to the first host of a channels-redis default layer, so one Redis is
        configured once; ``None`` (the in-memory layer) relays within this process only.
        """
        if hasattr(settings, "RELAY_REDIS_URL"):
            return settings.RELAY_REDIS_URL
        layer = settings.CHANNEL_LAYERS.get("default", {})
        if not layer.get("BACKEND", "").startswith("channels_redis."):
            return None
        hosts = layer.get("CONFIG", {}).get("hosts") or ["redis://localhost:6379"]
        host = hosts[0]
        if isinstance(host, (tuple, list)):  # ("host", port), as channels-redis accepts
            return f"redis://{host[0]}:{host[1]}"
        return host if isinstance(host, str) else host.get("address")

    @property
    def RELAY_REDIS_PREFIX(self) -> str:
        """Prefix of the relay's Redis keys and pub/sub channels (pub/sub ignores the db number)."""
        return getattr(settings, "RELAY_REDIS_PREFIX", "relay")

    @property
    def RELAY_PRESENCE_TTL(self) -> int:
        """Seconds after which a process that stopped heartbeating no longer counts as online."""
        return getattr(settings, "RELAY_PRESENCE_TTL", 30)

    @property
    def RELAY_PRESENCE_HEARTBEAT(self) -> float:
        """Seconds between a process's presence heartbeats (well under the TTL)."""
        return getattr(settings, "RELAY_PRESENCE_HEARTBEAT", 10)

    @property
    def RELAY_AUDIT_RETENTION_DAYS(self) -> int:
        """Days the audit log keeps each push."""
        return getattr(settings, "RELAY_AUDIT_RETENTION_DAYS", 90)

    @property
    def RELAY_MAX_PENDING_BYTES(self) -> int:
        """Bytes a client may leave unread in its send buffer before it is closed with 1013."""
        return getattr(settings, "RELAY_MAX_PENDING_BYTES", 1024 * 1024)

    @property
    def RELAY_SHUTDOWN_TIMEOUT(self) -> float:
        """Seconds a SIGTERM'd process waits for its clients to close before it exits anyway."""
        return getattr(settings, "RELAY_SHUTDOWN_TIMEOUT", 5.0)

    @property
    def RELAY_METRICS_ALLOWED_IPS(self) -> list[str]:
        """Addresses or networks that may read /relay/metrics without the token."""
        return getattr(settings, "RELAY_METRICS_ALLOWED_IPS", ["127.0.0.1/32", "::1/128"])

    @property
    def RELAY_METRICS_TOKEN(self) -> str | None:
        """A bearer token that may read /relay/metrics from anywhere; None for none."""
        return getattr(settings, "RELAY_METRICS_TOKEN", None)


conf = Settings()
