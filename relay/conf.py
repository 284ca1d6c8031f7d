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
    def RELAY_BUS_URL(self) -> str | None:
        """The Redis that carries client frames between processes.

        Defaults to the first host of a channels-redis default layer, so one Redis is
        configured once; ``None`` (the in-memory layer) relays within this process only.
        """
        if hasattr(settings, "RELAY_BUS_URL"):
            return settings.RELAY_BUS_URL
        layer = settings.CHANNEL_LAYERS.get("default", {})
        if not layer.get("BACKEND", "").startswith("channels_redis."):
            return None
        hosts = layer.get("CONFIG", {}).get("hosts") or ["redis://localhost:6379"]
        host = hosts[0]
        return host if isinstance(host, str) else host.get("address")

    @property
    def RELAY_BUS_PREFIX(self) -> str:
        """Prefix of the Redis pub/sub channels of the bus (pub/sub ignores the db number)."""
        return getattr(settings, "RELAY_BUS_PREFIX", "relay")


conf = Settings()
