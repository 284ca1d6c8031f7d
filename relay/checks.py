"""System checks for the ``RELAY_*`` settings (``relay.E001``…), run by ``manage.py check``."""

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from relay.conf import conf
from relay.redis import servers
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
                hint='e.g. ["https://app.example.com", "https://*.example.com"], or ["*"] to allow any origin.',
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
    try:
        servers.configured()
    except (TypeError, ValueError) as exc:
        errors.append(
            Error(
                f"The relay's Redis servers cannot be read: {exc}.",
                hint="RELAY_REDIS_URL (or the channels-redis layer's hosts) takes redis://, rediss:// (TLS), "
                "unix:// or redis+sentinel:// URLs, (host, port) pairs, or channels-redis hosts dicts.",
                id="relay.E011",
            )
        )
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
    errors.extend(check_origins())
    errors.extend(check_connections())
    errors.extend(check_tokens())
    return errors


def _positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def network_list_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a list of addresses or networks (``"10.0.0.0/8"``), or None."""
    if isinstance(value, str):
        return "a string, not a list"
    try:
        for network in value:
            ipaddress.ip_network(network, strict=False)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def check_metrics_access() -> list[CheckMessage]:
    """RELAY_METRICS_ALLOWED_IPS must be addresses or networks; RELAY_METRICS_TOKEN a string."""
    errors: list[CheckMessage] = []
    problem = network_list_problem(conf.RELAY_METRICS_ALLOWED_IPS)
    if problem is not None:
        errors.append(
            Error(
                f"RELAY_METRICS_ALLOWED_IPS is not a list of addresses or networks: {problem}.",
                hint='e.g. ["127.0.0.1/32", "10.0.0.0/8"], or [] to require RELAY_METRICS_TOKEN.',
                id="relay.E017",
            )
        )
    token = conf.RELAY_METRICS_TOKEN
    if token is not None and (not isinstance(token, str) or len(token) < 16):
        errors.append(Error("RELAY_METRICS_TOKEN must be None or a string of 16+ characters.", id="relay.E018"))
    return errors


def check_dotted_paths(
    name: str, paths: object, what: str, usable: Callable[[Any], None], hint: str, check_id: str, empty_ok: bool
) -> list[CheckMessage]:
    """A setting that lists dotted paths: a list (non-empty unless ``empty_ok``) of what ``usable`` accepts.

    ``usable(imported)`` raises TypeError saying what is wrong with one entry.
    """
    # A bare string would be read letter by letter; no identity backend refuses every handshake.
    if not isinstance(paths, (list, tuple)) or (not paths and not empty_ok):
        adjective = "" if empty_ok else "non-empty "
        return [Error(f"{name} must be a {adjective}list of dotted paths, not {paths!r}.", hint=hint, id=check_id)]
    errors: list[CheckMessage] = []
    for path in paths:
        try:
            usable(import_string(path))
        except (AttributeError, ImportError, TypeError, ValueError) as exc:
            errors.append(Error(f"{name} entry {path!r} is not {what}: {exc}.", hint=hint, id=check_id))
    return errors


def check_identity_backends() -> list[CheckMessage]:
    """RELAY_IDENTITY_BACKENDS must be a non-empty list of dotted paths of identity backend classes."""
    # Late: the check imports the backends (and Channels' auth) anyway; django.setup() need not.
    from relay.identity.backends import IdentityBackend

    def usable(backend: Any) -> None:
        if not isinstance(backend, type) or not callable(getattr(backend, "authenticate", None)):
            raise TypeError("it is not a class with an authenticate(scope) method")
        if backend is IdentityBackend:
            raise TypeError("it is the base class, which decides nothing")

    hint = (
        'e.g. ["relay.identity.backends.TokenBackend", "relay.identity.backends.SessionBackend", '
        '"relay.identity.backends.QueryIdBackend"], with your own subclasses of '
        "relay.identity.backends.IdentityBackend where they should decide."
    )
    paths = conf.RELAY_IDENTITY_BACKENDS
    return check_dotted_paths(
        "RELAY_IDENTITY_BACKENDS", paths, "an identity backend", usable, hint, "relay.E020", False
    )


def check_message_handlers() -> list[CheckMessage]:
    """RELAY_MESSAGE_HANDLERS must be a list of dotted paths of callables (or classes of them)."""

    def usable(handler: Any) -> None:
        if not callable(handler):
            raise TypeError("it is not callable")

    hint = 'e.g. ["myapp.handlers.save_message"]: functions or classes taking a relay.Message.'
    paths = conf.RELAY_MESSAGE_HANDLERS
    return check_dotted_paths("RELAY_MESSAGE_HANDLERS", paths, "a handler", usable, hint, "relay.E021", True)


def check_history() -> list[CheckMessage]:
    """The RELAY_HISTORY_* settings: a flag and positive numbers, the stream outliving its entries, the budget."""
    errors: list[CheckMessage] = []
    if conf.RELAY_HISTORY is not None and not isinstance(conf.RELAY_HISTORY, bool):
        errors.append(Error("RELAY_HISTORY must be True, False or None (where there is Redis).", id="relay.E022"))
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
    rate, burst = conf.RELAY_HISTORY_RATE, conf.RELAY_HISTORY_BURST
    if (rate is not None and not _positive_int(rate)) or not _positive_int(burst):
        errors.append(
            Error(
                "RELAY_HISTORY_RATE must be None or a positive integer of bytes a second, "
                "RELAY_HISTORY_BURST a positive integer of bytes.",
                hint="e.g. RELAY_HISTORY_RATE = 65536, RELAY_HISTORY_BURST = 2097152.",
                id="relay.E031",
            )
        )
    if conf.RELAY_HISTORY is True and not servers.configured():
        errors.append(
            Warning(
                "RELAY_HISTORY is on but there is no Redis: history needs Redis, so it is off.",
                hint="Configure a channels_redis layer (or RELAY_REDIS_URL), or leave RELAY_HISTORY unset.",
                id="relay.W003",
            )
        )
    return errors


def check_origins() -> list[CheckMessage]:
    """RELAY_ALLOWED_ORIGINS holds full origins (host patterns of older releases allow nothing now)."""
    # Late, as the identity backends: the check needs the origin syntax, django.setup() need not.
    from relay.identity.origins import allowed_hosts, is_origin_entry

    origins = getattr(settings, "RELAY_ALLOWED_ORIGINS", None)
    if origins is not None and (not isinstance(origins, (list, tuple)) or not all(isinstance(o, str) for o in origins)):
        return []  # relay.E006
    entries = list(origins or [])
    errors: list[CheckMessage] = [
        Error(
            f"RELAY_ALLOWED_ORIGINS entry {entry!r} is not an origin, so it allows nothing.",
            hint="Entries are origins as in CSRF_TRUSTED_ORIGINS, with their scheme: 'https://app.example.com' "
            "(and ':port' if not the default), 'https://*.example.com' for its subdomains, or '*'. Pages of the "
            "relay's own origin (a Host in ALLOWED_HOSTS) need no entry.",
            id="relay.E024",
        )
        for entry in entries
        if not is_origin_entry(entry)
    ]
    if not allowed_hosts() and not any(is_origin_entry(entry) for entry in entries):
        errors.append(
            Warning(
                "No browser page can open a socket: ALLOWED_HOSTS is empty (so no page is of the relay's own "
                "origin) and RELAY_ALLOWED_ORIGINS lists no origin.",
                hint="Add the site's host to ALLOWED_HOSTS, or the origins of the pages that connect to "
                "RELAY_ALLOWED_ORIGINS, e.g. ['https://app.example.com']. Clients that are not browsers "
                "(no Origin header) are not affected.",
                id="relay.W004",
            )
        )
    return errors


def check_connections() -> list[CheckMessage]:
    """RELAY_FRAMINGS, RELAY_MAX_CONNECTIONS_PER_ID and RELAY_TRUSTED_PROXIES."""
    from relay.protocol import FRAMING_ORIGINAL, SUBPROTOCOL_V1

    errors: list[CheckMessage] = []
    framings = conf.RELAY_FRAMINGS
    if (
        not isinstance(framings, (list, tuple))
        or not framings
        or not all(f in (SUBPROTOCOL_V1, FRAMING_ORIGINAL) for f in framings)
    ):
        errors.append(
            Error(
                f"RELAY_FRAMINGS must be a non-empty list of {SUBPROTOCOL_V1!r} and {FRAMING_ORIGINAL!r}, "
                f"not {framings!r}.",
                hint=f'e.g. ["{SUBPROTOCOL_V1}"] (the default with DEBUG off), or ["{SUBPROTOCOL_V1}", '
                f'"{FRAMING_ORIGINAL}"] for clients that connect without a subprotocol.',
                id="relay.E025",
            )
        )
    if not _positive_int(conf.RELAY_MAX_CONNECTIONS_PER_ID):
        errors.append(Error("RELAY_MAX_CONNECTIONS_PER_ID must be a positive integer, e.g. 20.", id="relay.E026"))
    problem = network_list_problem(conf.RELAY_TRUSTED_PROXIES)
    if problem is not None:
        errors.append(
            Error(
                f"RELAY_TRUSTED_PROXIES is not a list of addresses or networks: {problem}.",
                hint='e.g. ["127.0.0.1"] for nginx on this host over TCP, or [] (the default: a proxy on a unix '
                "socket is trusted anyway).",
                id="relay.E027",
            )
        )
    return errors


def check_tokens() -> list[CheckMessage]:
    """RELAY_TOKEN_SECRETS (rotation), RELAY_TOKEN_AUDIENCE and RELAY_TOKEN_ISSUER."""
    errors: list[CheckMessage] = []
    if hasattr(settings, "RELAY_TOKEN_SECRETS"):
        secrets = conf.RELAY_TOKEN_SECRETS
        if getattr(settings, "RELAY_TOKEN_SECRET", None):
            errors.append(
                Error(
                    "RELAY_TOKEN_SECRET and RELAY_TOKEN_SECRETS are both set: only RELAY_TOKEN_SECRETS is used.",
                    hint="Put the secret that signs first in RELAY_TOKEN_SECRETS and remove RELAY_TOKEN_SECRET.",
                    id="relay.E028",
                )
            )
        elif (
            not isinstance(secrets, (list, tuple))
            or not secrets
            or not all(isinstance(secret, str) and len(secret) >= 32 for secret in secrets)
        ):
            errors.append(
                Error(
                    "RELAY_TOKEN_SECRETS must be a non-empty list of strings of at least 32 characters.",
                    hint="The first signs new tokens, all of them verify: add the new secret first, and remove "
                    "the old one once the tokens it signed have expired.",
                    id="relay.E028",
                )
            )
    for name in ("RELAY_TOKEN_AUDIENCE", "RELAY_TOKEN_ISSUER"):
        value = getattr(conf, name)
        if value is not None and (not isinstance(value, str) or not value):
            errors.append(Error(f"{name} must be None or a non-empty string.", id="relay.E029"))
    return errors


def check_deploy_hardening() -> list[CheckMessage]:
    """Forgeable deliveries, and a token secret that is Django's SECRET_KEY."""
    from relay.protocol import FRAMING_ORIGINAL
    from relay.server.policies import SameIdOnly

    warnings: list[CheckMessage] = []
    framings = conf.RELAY_FRAMINGS
    try:
        policy = import_string(conf.RELAY_SEND_POLICY)
    except (AttributeError, ImportError, TypeError, ValueError):
        policy = None  # relay.E007
    if isinstance(framings, (list, tuple)) and FRAMING_ORIGINAL in framings and policy is not SameIdOnly:
        warnings.append(
            Warning(
                "RELAY_FRAMINGS allows the original framing while clients may send to each other: a client's "
                "message arrives there as the bare payload, the very bytes of a server push, so any client can "
                "forge one.",
                hint='Connect clients with the relay.v1 subprotocol ("from" says who sent each delivery) and set '
                'RELAY_FRAMINGS = ["relay.v1"], or RELAY_SEND_POLICY = "relay.server.policies.SameIdOnly".',
                id="relay.W005",
            )
        )
    secrets = conf.RELAY_TOKEN_SECRETS
    if isinstance(secrets, (list, tuple)) and settings.SECRET_KEY in secrets:
        warnings.append(
            Warning(
                "The client tokens' secret is Django's SECRET_KEY (RELAY_TOKEN_SECRET unset, or the same): "
                "every backend that mints tokens holds the key that signs this site's sessions.",
                hint="Set RELAY_TOKEN_SECRET (or RELAY_TOKEN_SECRETS) to a secret of its own: "
                "python -c 'import secrets; print(secrets.token_urlsafe(50))'.",
                id="relay.W006",
            )
        )
    return warnings


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
    warnings.extend(check_deploy_hardening())
    return warnings


@register("relay")
def check_groups_on_bus(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """RELAY_GROUPS_ON_BUS is a boolean."""
    if not isinstance(conf.RELAY_GROUPS_ON_BUS, bool):
        return [Error("RELAY_GROUPS_ON_BUS must be True or False.", id="relay.E032")]
    return []


@register(Tags.security, "relay")
def check_demo(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """RELAY_DEMO is a boolean."""
    if not isinstance(conf.RELAY_DEMO, bool):
        return [Error("RELAY_DEMO must be True or False.", id="relay.E030")]
    return []


@register(Tags.security, "relay", deploy=True)
def check_demo_deploy(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """The demo mints tokens for demo ids: a warning in production."""
    if conf.RELAY_DEMO is not True:
        return []
    return [
        Warning(
            "RELAY_DEMO is on: /relay/demo/ gives tokens for demo-* ids (to staff when DEBUG is off), and "
            "those may send to any client the send policy allows.",
            hint="Turn it off in production: RELAY_DEMO = False.",
            id="relay.W010",
        )
    ]
