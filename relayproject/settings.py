"""Settings for the deployable relay site, read from the environment.

SECRET_KEY, DEBUG, ALLOWED_HOSTS, REDIS_URL and DATABASE_URL are the knobs; see the
README's "Configuration" section. Everything relay-specific is a ``RELAY_*`` setting
with its default in ``relay/conf.py``.
"""

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean environment variable written as 1/0, true/false, yes/no, on/off."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use 1/0 or true/false.")


def env_list(name: str, default: list[str]) -> list[str]:
    """Read a comma-separated environment variable, ignoring blanks."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(url: str | None) -> dict[str, Any]:
    """Turn ``sqlite:///path`` or ``postgres://user:pass@host:port/name`` into a DATABASES entry."""
    if not url:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute/path.db, as dj-database-url reads them.
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path[1:]) or ":memory:"}
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
        }
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {parts.scheme!r} is not supported: use sqlite:///path or postgres://…"
    )


def channel_layer_from_url(url: str | None, prefix: str = "asgi", tls: dict[str, str] | None = None) -> dict[str, Any]:
    """The channel layer: channels-redis pub/sub on REDIS_URL, else in-memory (one process only).

    Several comma-separated URLs are shards; ``rediss://`` URLs get the ``tls`` options
    (REDIS_SSL_*); a ``redis+sentinel://`` URL becomes channels-redis's sentinel entry.
    The relay reads its own Redis servers from these hosts, so one variable configures both.
    """
    if not url:
        return {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    from relay.redis.servers import channels_redis_host, split_urls  # pure functions, no Django needed

    # The pub/sub layer, not the core one: cheaper per message (README), and it has no
    # per-process capacity that silently drops group messages (README, "Channel layer").
    return {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [channels_redis_host(part, tls) for part in split_urls(url)], "prefix": prefix},
    }


DEBUG = env_bool("DEBUG", False)

DEVELOPMENT_SECRET_KEY = "django-insecure-relay-development-key-do-not-use-in-production"

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not DEBUG and (len(SECRET_KEY) < 50 or SECRET_KEY.startswith("django-insecure")):
    raise ImproperlyConfigured(
        "SECRET_KEY is missing or weak. Production (DEBUG off) needs a real secret of 50+ characters: "
        "export SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
        "or set DEBUG=1 for local development."
    )
SECRET_KEY = SECRET_KEY or DEVELOPMENT_SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "relay",
    "relay.contrib.http_api",  # the HTTP API and its keys
    "relay.contrib.admin",  # admin pages and the audit log
]

# The example chat (examples/chat: a message handler, a call, a signal receiver), for
# `make run` and its tests; a real site installs its own apps instead.
RELAY_EXAMPLES = env_bool("RELAY_EXAMPLES", False)
if RELAY_EXAMPLES:
    INSTALLED_APPS.append("examples.chat")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "relayproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "relayproject.asgi.application"
WSGI_APPLICATION = None

DATABASES = {"default": database_from_url(os.environ.get("DATABASE_URL"))}

# Redis pub/sub channels ignore the db number: two sites on one Redis need two prefixes,
# for the channel layer's groups and for the relay's own channels and keys.
REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "")
# TLS files for rediss:// URLs (also possible as the URL's query: ?ssl_ca_certs=/etc/ca.pem).
REDIS_TLS = {
    option: os.environ[variable]
    for option, variable in (
        ("ssl_ca_certs", "REDIS_SSL_CA_CERTS"),
        ("ssl_certfile", "REDIS_SSL_CERTFILE"),
        ("ssl_keyfile", "REDIS_SSL_KEYFILE"),
        ("ssl_cert_reqs", "REDIS_SSL_CERT_REQS"),
    )
    if os.environ.get(variable)
}
CHANNEL_LAYERS = {
    "default": channel_layer_from_url(
        os.environ.get("REDIS_URL"), f"{REDIS_PREFIX}.asgi" if REDIS_PREFIX else "asgi", REDIS_TLS
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The relay (defaults and meaning: relay/conf.py). The environment can set the ones a
# deployment usually changes; unset ones keep the app's defaults.
RELAY_ALLOW_QUERY_ID = env_bool("RELAY_ALLOW_QUERY_ID", DEBUG)
# The demo at / and /relay/demo/ (relay.js, clients chatting in one page): with DEBUG on.
RELAY_DEMO = env_bool("RELAY_DEMO", DEBUG)
if RELAY_EXAMPLES:
    RELAY_MESSAGE_HANDLERS = ["examples.chat.handlers.save_chat_message"]
if REDIS_PREFIX:
    RELAY_REDIS_PREFIX = REDIS_PREFIX
if "RELAY_ALLOWED_ORIGINS" in os.environ:
    RELAY_ALLOWED_ORIGINS = env_list("RELAY_ALLOWED_ORIGINS", [])
if os.environ.get("RELAY_TOKEN_SECRET"):
    RELAY_TOKEN_SECRET = os.environ["RELAY_TOKEN_SECRET"]
if os.environ.get("RELAY_TOKEN_SECRETS"):  # rotation: the first signs, all verify
    RELAY_TOKEN_SECRETS = env_list("RELAY_TOKEN_SECRETS", [])
if os.environ.get("RELAY_TOKEN_AUDIENCE"):
    RELAY_TOKEN_AUDIENCE = os.environ["RELAY_TOKEN_AUDIENCE"]
if os.environ.get("RELAY_TOKEN_ISSUER"):
    RELAY_TOKEN_ISSUER = os.environ["RELAY_TOKEN_ISSUER"]
if "RELAY_FRAMINGS" in os.environ:
    RELAY_FRAMINGS = env_list("RELAY_FRAMINGS", [])
if "RELAY_TRUSTED_PROXIES" in os.environ:
    RELAY_TRUSTED_PROXIES = env_list("RELAY_TRUSTED_PROXIES", [])
if os.environ.get("RELAY_MAX_CONNECTIONS_PER_ID"):
    RELAY_MAX_CONNECTIONS_PER_ID = int(os.environ["RELAY_MAX_CONNECTIONS_PER_ID"])
if os.environ.get("RELAY_METRICS_TOKEN"):
    RELAY_METRICS_TOKEN = os.environ["RELAY_METRICS_TOKEN"]
if "RELAY_HISTORY" in os.environ:
    RELAY_HISTORY = env_bool("RELAY_HISTORY", True)
if "RELAY_GROUPS_ON_BUS" in os.environ:
    RELAY_GROUPS_ON_BUS = env_bool("RELAY_GROUPS_ON_BUS", True)
if "RELAY_RATE_LIMIT" in os.environ:
    RELAY_RATE_LIMIT = (
        None if os.environ["RELAY_RATE_LIMIT"].lower() in {"", "none", "off"} else os.environ["RELAY_RATE_LIMIT"]
    )
if "RELAY_HISTORY_RATE" in os.environ:  # bytes a second a client id may store in streams
    _history_rate = os.environ["RELAY_HISTORY_RATE"]
    RELAY_HISTORY_RATE = None if _history_rate.lower() in {"", "none", "off"} else int(_history_rate)

# HTTPS hardening for production (DEBUG off); nginx terminates TLS and says so.
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # Health checks and scrapes talk to daphne directly, without TLS.
    SECURE_REDIRECT_EXEMPT = [r"^relay/healthz$", r"^relay/metrics$"]
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"one_line": {"()": "relay.logs.OneLineExceptions"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "console_one_line": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["one_line"]},
    },
    # The site's own loggers (its handlers, calls, receivers) too: uvicorn configures only its
    # own, so without a root handler their INFO lines would be lost there (daphne's
    # basicConfig, which this replaces, used to show them).
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "relay": {"handlers": ["console"], "level": os.environ.get("RELAY_LOG_LEVEL", "INFO"), "propagate": False},
        "channels_redis": {"handlers": ["console_one_line"], "level": "WARNING", "propagate": False},
    },
}
