"""System checks for the ``RELAY_*`` settings (``relay.E001``…), run by ``manage.py check``."""

import ipaddress
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from relay.conf import conf
from relay.server.throttling import parse_rate


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@register(Tags.security, "relay")
def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Reject ``RELAY_*`` settings of the wrong type or value, saying how to fix them."""
    errors: list[CheckMessage] = []
    if not isinstance(conf.RELAY_ALLOW_QUERY_ID, bool):
        errors.append(Error("RELAY_ALLOW_QUERY_ID must be True or False.", id="relay.E001"))
    if not _positive_int(conf.RELAY_MAX_TARGETS):
        errors.append(Error("RELAY_MAX_TARGETS must be a positive integer, e.g. 100.", id="relay.E002"))
    if not _positive_int(conf.RELAY_MAX_MESSAGE_BYTES):
        errors.append(
            Error("RELAY_MAX_MESSAGE_BYTES must be a positive integer of bytes, e.g. 65536.", id="relay.E003")
        )
    secret = conf.RELAY_TOKEN_SECRET
    if not isinstance(secret, str) or len(secret) < 32:
        errors.append(
            Error(
                "RELAY_TOKEN_SECRET must be a string of at least 32 characters (HS256 wants 256 bits).",
                hint="Leave it unset to use SECRET_KEY, or set a long random string shared with your backends.",
                id="relay.E004",
            )
        )
    leeway = conf.RELAY_TOKEN_LEEWAY
    if not isinstance(leeway, (int, float)) or isinstance(leeway, bool) or leeway < 0:
        errors.append(Error("RELAY_TOKEN_LEEWAY must be a number of seconds >= 0, e.g. 10.", id="relay.E005"))
    origins = getattr(settings, "RELAY_ALLOWED_ORIGINS", None)
    if origins is not None and (not isinstance(origins, (list, tuple)) or not all(isinstance(o, str) for o in origins)):
        errors.append(
            Error(
                "RELAY_ALLOWED_ORIGINS must be a list of strings.",
                hint='e.g. ["example.com", "https://app.example.com:8443"], or ["*"] to allow any origin.',
                id="relay.E006",
            )
        )
    try:
        policy = import_string(conf.RELAY_SEND_POLICY)
        if not callable(policy):
            raise TypeError("it is not callable")
    except (AttributeError, ImportError, TypeError, ValueError) as exc:
        errors.append(
            Error(
                f"RELAY_SEND_POLICY {conf.RELAY_SEND_POLICY!r} is not a usable policy: {exc}.",
                hint="Give the dotted path of a callable (sender, target) -> bool, or of a class of them.",
                id="relay.E007",
            )
        )
    try:
        rate = parse_rate(conf.RELAY_RATE_LIMIT)
        if rate is not None and rate[0] <= 0:
            raise ValueError("not positive")
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        errors.append(
            Error(
                f"RELAY_RATE_LIMIT {conf.RELAY_RATE_LIMIT!r} is not a rate.",
                hint='Write it as "<frames>/<s|m|h|d>" with a positive number, e.g. "50/s", or None for no limit.',
                id="relay.E008",
            )
        )
    burst = conf.RELAY_RATE_BURST
    if burst is not None and not _positive_int(burst):
        errors.append(Error("RELAY_RATE_BURST must be a positive integer or None.", id="relay.E009"))
    if not _positive_int(conf.RELAY_RATE_LIMIT_CLOSE_AFTER):
        errors.append(Error("RELAY_RATE_LIMIT_CLOSE_AFTER must be a positive integer.", id="relay.E010"))
    redis_url = conf.RELAY_REDIS_URL
    if redis_url is not None and not (isinstance(redis_url, str) and redis_url.startswith(("redis://", "unix://"))):
        errors.append(Error("RELAY_REDIS_URL must be a redis:// or unix:// URL, or None.", id="relay.E011"))
    if not isinstance(conf.RELAY_REDIS_PREFIX, str) or not conf.RELAY_REDIS_PREFIX:
        errors.append(Error("RELAY_REDIS_PREFIX must be a non-empty string.", id="relay.E012"))
    ttl, heartbeat = conf.RELAY_PRESENCE_TTL, conf.RELAY_PRESENCE_HEARTBEAT
    if not _positive_int(ttl) or not isinstance(heartbeat, (int, float)) or not 0 < heartbeat < ttl:
        errors.append(
            Error(
                "RELAY_PRESENCE_TTL must be a positive integer of seconds and RELAY_PRESENCE_HEARTBEAT "
                "a number of seconds below it.",
                hint="e.g. RELAY_PRESENCE_TTL = 30 and RELAY_PRESENCE_HEARTBEAT = 10.",
                id="relay.E013",
            )
        )
    if not _positive_int(conf.RELAY_MAX_PENDING_BYTES):
        errors.append(
            Error("RELAY_MAX_PENDING_BYTES must be a positive integer of bytes, e.g. 1048576.", id="relay.E014")
        )
    if not _positive_number(conf.RELAY_SHUTDOWN_TIMEOUT):
        errors.append(Error("RELAY_SHUTDOWN_TIMEOUT must be a positive number of seconds, e.g. 5.", id="relay.E015"))
    if not _positive_int(conf.RELAY_AUDIT_RETENTION_DAYS):
        errors.append(Error("RELAY_AUDIT_RETENTION_DAYS must be a positive integer of days, e.g. 90.", id="relay.E016"))
    errors.extend(check_metrics_access())
    errors.extend(check_identity_backends())
    errors.extend(check_channel_layer())
    errors.extend(check_message_handlers())
    errors.extend(check_history())
    return errors


def _positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def check_metrics_access() -> list[CheckMessage]:
    """RELAY_METRICS_ALLOWED_IPS must be addresses or networks; RELAY_METRICS_TOKEN a string."""
    errors: list[CheckMessage] = []
    allowed = conf.RELAY_METRICS_ALLOWED_IPS
    try:
        if isinstance(allowed, str):
            raise TypeError("a string, not a list")
        for network in allowed:
            ipaddress.ip_network(network, strict=False)
    except (TypeError, ValueError) as exc:
        errors.append(
            Error(
                f"RELAY_METRICS_ALLOWED_IPS is not a list of addresses or networks: {exc}.",
                hint='e.g. ["127.0.0.1/32", "10.0.0.0/8"], or [] to require RELAY_METRICS_TOKEN.',
                id="relay.E017",
            )
        )
    token = conf.RELAY_METRICS_TOKEN
    if token is not None and (not isinstance(token, str) or len(token) < 16):
        errors.append(Error("RELAY_METRICS_TOKEN must be None or a string of 16+ characters.", id="relay.E018"))
    return errors


def check_identity_backends() -> list[CheckMessage]:
    """RELAY_IDENTITY_BACKENDS must be a non-empty list of dotted paths of identity backend classes."""
    # Late: the check imports the backends (and Channels' auth) anyway; django.setup() need not.
    from relay.identity.backends import IdentityBackend

    hint = (
        'e.g. ["relay.identity.backends.TokenBackend", "relay.identity.backends.SessionBackend", '
        '"relay.identity.backends.QueryIdBackend"], with your own subclasses of '
        "relay.identity.backends.IdentityBackend where they should decide."
    )
    paths = conf.RELAY_IDENTITY_BACKENDS
    if not isinstance(paths, (list, tuple)) or not paths:
        # Without a backend every handshake is refused; a bare string would be read letter by letter.
        return [
            Error(
                f"RELAY_IDENTITY_BACKENDS must be a non-empty list of dotted paths, not {paths!r}.",
                hint=hint,
                id="relay.E020",
            )
        ]
    errors: list[CheckMessage] = []
    for path in paths:
        try:
            backend = import_string(path)
            if not isinstance(backend, type) or not callable(getattr(backend, "authenticate", None)):
                raise TypeError("it is not a class with an authenticate(scope) method")
            if backend is IdentityBackend:
                raise TypeError("it is the base class, which decides nothing")
        except (AttributeError, ImportError, TypeError, ValueError) as exc:
            errors.append(
                Error(
                    f"RELAY_IDENTITY_BACKENDS entry {path!r} is not an identity backend: {exc}.",
                    hint=hint,
                    id="relay.E020",
                )
            )
    return errors


def check_message_handlers() -> list[CheckMessage]:
    """RELAY_MESSAGE_HANDLERS must be a list of dotted paths of callables (or classes of them)."""
    paths = conf.RELAY_MESSAGE_HANDLERS
    hint = 'e.g. ["myapp.handlers.save_message"]: functions or classes taking a relay.Message.'
    if not isinstance(paths, (list, tuple)):
        return [
            Error(f"RELAY_MESSAGE_HANDLERS must be a list of dotted paths, not {paths!r}.", hint=hint, id="relay.E021")
        ]
    errors: list[CheckMessage] = []
    for path in paths:
        try:
            if not callable(import_string(path)):
                raise TypeError("it is not callable")
        except (AttributeError, ImportError, TypeError, ValueError) as exc:
            errors.append(
                Error(f"RELAY_MESSAGE_HANDLERS entry {path!r} is not a handler: {exc}.", hint=hint, id="relay.E021")
            )
    return errors


def check_history() -> list[CheckMessage]:
    """The RELAY_HISTORY_* settings: a flag and positive numbers, the stream outliving its entries."""
    errors: list[CheckMessage] = []
    if not isinstance(conf.RELAY_HISTORY, bool):
        errors.append(Error("RELAY_HISTORY must be True or False.", id="relay.E022"))
    size, ttl, stream_ttl = conf.RELAY_HISTORY_SIZE, conf.RELAY_HISTORY_TTL, conf.RELAY_HISTORY_STREAM_TTL
    if not _positive_int(size) or not _positive_int(ttl) or not _positive_int(stream_ttl) or stream_ttl < ttl:
        errors.append(
            Error(
                "RELAY_HISTORY_SIZE, RELAY_HISTORY_TTL and RELAY_HISTORY_STREAM_TTL must be positive integers, "
                "the stream's TTL at least the entries' TTL.",
                hint="e.g. RELAY_HISTORY_SIZE = 100, RELAY_HISTORY_TTL = 300, RELAY_HISTORY_STREAM_TTL = 86400.",
                id="relay.E023",
            )
        )
    if conf.RELAY_HISTORY is True and conf.RELAY_REDIS_URL is None and hasattr(settings, "RELAY_HISTORY"):
        errors.append(
            Warning(
                "RELAY_HISTORY is on but there is no Redis: history needs Redis, so it is off.",
                hint="Configure a channels_redis layer (or RELAY_REDIS_URL), or leave RELAY_HISTORY unset.",
                id="relay.W003",
            )
        )
    return errors


def check_channel_layer() -> list[CheckMessage]:
    """Pushes (``relay.send``, the admin, the API) and connections need a default channel layer."""
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    if isinstance(layers, dict) and isinstance(layers.get("default"), dict) and layers["default"].get("BACKEND"):
        return []
    return [
        Error(
            'CHANNEL_LAYERS has no "default" layer: relay.send() and server pushes cannot reach any client.',
            hint='e.g. CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", '
            '"CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]}}}, or channels.layers.InMemoryChannelLayer '
            "for one process in development.",
            id="relay.E019",
        )
    ]


@register(Tags.security, "relay", deploy=True)
def check_deploy(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Warn about settings that are fine in development but unsafe on the internet."""
    warnings: list[CheckMessage] = []
    if conf.RELAY_ALLOW_QUERY_ID:
        warnings.append(
            Warning(
                "RELAY_ALLOW_QUERY_ID is on: anyone can connect as any client id with ?id=.",
                hint="Set RELAY_ALLOW_QUERY_ID=False and connect with tokens or session logins.",
                id="relay.W001",
            )
        )
    if "*" in conf.RELAY_ALLOWED_ORIGINS:
        warnings.append(
            Warning(
                "RELAY_ALLOWED_ORIGINS allows any origin: any website can open a socket with your users' sessions.",
                id="relay.W002",
            )
        )
    return warnings
