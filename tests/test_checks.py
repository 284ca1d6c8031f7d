"""System checks: every relay.E0xx for a wrong setting, none for a clean one, and the deploy warnings."""

import pytest
from django.core import checks
from django.test import override_settings

from relay.checks import check_deploy, check_settings


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def describe(overrides) -> str:
    return ",".join(f"{name}={value!r}" for name, value in overrides.items()) if isinstance(overrides, dict) else None


def test_test_settings_are_clean():
    assert check_settings() == []


def test_defaults_are_clean(settings):
    for name in ("RELAY_ALLOW_QUERY_ID", "RELAY_RATE_LIMIT"):
        delattr(settings, name)
    assert check_settings() == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RELAY_ALLOW_QUERY_ID", True),
        ("RELAY_ALLOW_QUERY_ID", False),
        ("RELAY_MAX_TARGETS", 1),
        ("RELAY_MAX_MESSAGE_BYTES", 1),
        ("RELAY_TOKEN_SECRET", "s" * 32),
        ("RELAY_TOKEN_SECRET", None),  # unset: SECRET_KEY
        ("RELAY_TOKEN_LEEWAY", 0),
        ("RELAY_TOKEN_LEEWAY", 2.5),
        ("RELAY_ALLOWED_ORIGINS", []),
        ("RELAY_ALLOWED_ORIGINS", ("https://example.com",)),
        ("RELAY_ALLOWED_ORIGINS", ["https://*.example.com", "https://app.example.com:8443", "http://[::1]:8000", "*"]),
        ("RELAY_ALLOWED_ORIGINS", None),
        ("RELAY_FRAMINGS", ["relay.v1"]),
        ("RELAY_FRAMINGS", ("original",)),
        ("RELAY_FRAMINGS", ["original", "relay.v1"]),
        ("RELAY_MAX_CONNECTIONS_PER_ID", 1),
        ("RELAY_TRUSTED_PROXIES", []),
        ("RELAY_TRUSTED_PROXIES", ["127.0.0.1", "10.0.0.0/8", "::1"]),
        ("RELAY_TOKEN_AUDIENCE", "relay"),
        ("RELAY_TOKEN_ISSUER", "https://accounts.example.com"),
        ("RELAY_SEND_POLICY", "relay.server.policies.SameIdOnly"),
        ("RELAY_RATE_LIMIT", "1/d"),
        ("RELAY_RATE_LIMIT", "10/min"),
        ("RELAY_RATE_BURST", None),
        ("RELAY_RATE_BURST", 1),
        ("RELAY_RATE_LIMIT_CLOSE_AFTER", 1),
        ("RELAY_REDIS_URL", None),
        ("RELAY_REDIS_URL", "redis://localhost:6379/1"),
        ("RELAY_REDIS_URL", "unix:///run/redis.sock"),
        ("RELAY_REDIS_PREFIX", "r"),
        ("RELAY_PRESENCE_HEARTBEAT", 29.5),
        ("RELAY_IDENTITY_BACKENDS", ("relay.identity.backends.TokenBackend",)),
        ("RELAY_IDENTITY_BACKENDS", ["relay.identity.backends.QueryIdBackend", "relay.identity.backends.TokenBackend"]),
    ],
)
def test_valid_values_pass(name, value):
    with override_settings(**{name: value}):
        assert check_settings() == []


@pytest.mark.parametrize(
    ("overrides", "error_id"),
    [
        ({"RELAY_ALLOW_QUERY_ID": "yes"}, "relay.E001"),
        ({"RELAY_ALLOW_QUERY_ID": 1}, "relay.E001"),
        ({"RELAY_ALLOW_QUERY_ID": None}, "relay.E001"),
        ({"RELAY_MAX_TARGETS": 0}, "relay.E002"),
        ({"RELAY_MAX_TARGETS": -1}, "relay.E002"),
        ({"RELAY_MAX_TARGETS": "100"}, "relay.E002"),
        ({"RELAY_MAX_TARGETS": 1.5}, "relay.E002"),
        ({"RELAY_MAX_TARGETS": True}, "relay.E002"),
        ({"RELAY_MAX_TARGETS": None}, "relay.E002"),
        ({"RELAY_MAX_MESSAGE_BYTES": 0}, "relay.E003"),
        ({"RELAY_MAX_MESSAGE_BYTES": "64k"}, "relay.E003"),
        ({"RELAY_MAX_MESSAGE_BYTES": 65536.0}, "relay.E003"),
        ({"RELAY_MAX_MESSAGE_BYTES": True}, "relay.E003"),
        ({"RELAY_TOKEN_SECRET": "short"}, "relay.E004"),
        ({"RELAY_TOKEN_SECRET": "s" * 31}, "relay.E004"),
        ({"RELAY_TOKEN_SECRET": b"s" * 40}, "relay.E004"),
        ({"RELAY_TOKEN_SECRET": 12345678901234567890123456789012345}, "relay.E004"),
        ({"RELAY_TOKEN_SECRET": None, "SECRET_KEY": "too-short-secret-key"}, "relay.E004"),
        ({"RELAY_TOKEN_LEEWAY": -1}, "relay.E005"),
        ({"RELAY_TOKEN_LEEWAY": "10"}, "relay.E005"),
        ({"RELAY_TOKEN_LEEWAY": True}, "relay.E005"),
        ({"RELAY_TOKEN_LEEWAY": None}, "relay.E005"),
        ({"RELAY_ALLOWED_ORIGINS": "example.com"}, "relay.E006"),
        ({"RELAY_ALLOWED_ORIGINS": ["example.com", 1]}, "relay.E006"),
        ({"RELAY_ALLOWED_ORIGINS": [b"example.com"]}, "relay.E006"),
        ({"RELAY_ALLOWED_ORIGINS": 5}, "relay.E006"),
        # Host patterns of older releases (any scheme, any port): not origins, so they allow nothing.
        ({"RELAY_ALLOWED_ORIGINS": ["example.com"]}, "relay.E024"),
        ({"RELAY_ALLOWED_ORIGINS": [".example.com", "https://ok.example.com"]}, "relay.E024"),
        ({"RELAY_ALLOWED_ORIGINS": ["https://user@example.com"]}, "relay.E024"),
        ({"RELAY_ALLOWED_ORIGINS": ["ws://example.com"]}, "relay.E024"),
        ({"RELAY_ALLOWED_ORIGINS": ["https://example.com/path"]}, "relay.E024"),
        ({"RELAY_ALLOWED_ORIGINS": ["https://ex*.com"]}, "relay.E024"),
        ({"RELAY_FRAMINGS": []}, "relay.E025"),
        ({"RELAY_FRAMINGS": "relay.v1"}, "relay.E025"),
        ({"RELAY_FRAMINGS": ["relay.v2"]}, "relay.E025"),
        ({"RELAY_FRAMINGS": None}, "relay.E025"),
        ({"RELAY_MAX_CONNECTIONS_PER_ID": 0}, "relay.E026"),
        ({"RELAY_MAX_CONNECTIONS_PER_ID": "20"}, "relay.E026"),
        ({"RELAY_MAX_CONNECTIONS_PER_ID": None}, "relay.E026"),
        ({"RELAY_TRUSTED_PROXIES": "127.0.0.1"}, "relay.E027"),
        ({"RELAY_TRUSTED_PROXIES": ["localhost"]}, "relay.E027"),
        ({"RELAY_TRUSTED_PROXIES": None}, "relay.E027"),
        ({"RELAY_TOKEN_SECRETS": []}, "relay.E028"),
        ({"RELAY_TOKEN_SECRETS": "s" * 40}, "relay.E028"),
        ({"RELAY_TOKEN_SECRETS": ["s" * 40, "short"]}, "relay.E028"),
        ({"RELAY_TOKEN_SECRETS": ["s" * 40], "RELAY_TOKEN_SECRET": "t" * 40}, "relay.E028"),
        ({"RELAY_TOKEN_AUDIENCE": ""}, "relay.E029"),
        ({"RELAY_TOKEN_ISSUER": 5}, "relay.E029"),
        ({"RELAY_SEND_POLICY": "relay.server.policies.NoSuchPolicy"}, "relay.E007"),
        ({"RELAY_SEND_POLICY": "no_such_module.Policy"}, "relay.E007"),
        ({"RELAY_SEND_POLICY": "SameIdOnly"}, "relay.E007"),
        ({"RELAY_SEND_POLICY": ""}, "relay.E007"),
        ({"RELAY_SEND_POLICY": None}, "relay.E007"),
        ({"RELAY_SEND_POLICY": "relay.protocol.SUBPROTOCOL_V1"}, "relay.E007"),  # imports, but is not callable
        ({"RELAY_RATE_LIMIT": "fast"}, "relay.E008"),
        ({"RELAY_RATE_LIMIT": "50"}, "relay.E008"),
        ({"RELAY_RATE_LIMIT": "50/x"}, "relay.E008"),
        ({"RELAY_RATE_LIMIT": "fifty/s"}, "relay.E008"),
        ({"RELAY_RATE_LIMIT": "50/"}, "relay.E008"),
        ({"RELAY_RATE_LIMIT": 50}, "relay.E008"),
        ({"RELAY_RATE_LIMIT": "0/s"}, "relay.E008"),
        ({"RELAY_RATE_LIMIT": "-5/s"}, "relay.E008"),
        ({"RELAY_RATE_BURST": 0}, "relay.E009"),
        ({"RELAY_RATE_BURST": -1}, "relay.E009"),
        ({"RELAY_RATE_BURST": "10"}, "relay.E009"),
        ({"RELAY_RATE_BURST": True}, "relay.E009"),
        ({"RELAY_RATE_LIMIT_CLOSE_AFTER": 0}, "relay.E010"),
        ({"RELAY_RATE_LIMIT_CLOSE_AFTER": "50"}, "relay.E010"),
        ({"RELAY_RATE_LIMIT_CLOSE_AFTER": None}, "relay.E010"),
        ({"RELAY_REDIS_URL": "http://localhost:6379"}, "relay.E011"),
        ({"RELAY_REDIS_URL": "localhost:6379"}, "relay.E011"),
        ({"RELAY_REDIS_URL": 6379}, "relay.E011"),
        ({"RELAY_REDIS_PREFIX": ""}, "relay.E012"),
        ({"RELAY_REDIS_PREFIX": None}, "relay.E012"),
        ({"RELAY_REDIS_PREFIX": 5}, "relay.E012"),
        ({"RELAY_PRESENCE_TTL": 0}, "relay.E013"),
        ({"RELAY_PRESENCE_TTL": "30"}, "relay.E013"),
        ({"RELAY_PRESENCE_TTL": 30.0}, "relay.E013"),
        ({"RELAY_PRESENCE_HEARTBEAT": 30}, "relay.E013"),
        ({"RELAY_PRESENCE_HEARTBEAT": 0}, "relay.E013"),
        ({"RELAY_PRESENCE_HEARTBEAT": "10"}, "relay.E013"),
        ({"RELAY_PRESENCE_TTL": 5, "RELAY_PRESENCE_HEARTBEAT": 10}, "relay.E013"),
        ({"RELAY_MAX_PENDING_BYTES": 0}, "relay.E014"),
        ({"RELAY_MAX_PENDING_BYTES": "1M"}, "relay.E014"),
        ({"RELAY_SHUTDOWN_TIMEOUT": 0}, "relay.E015"),
        ({"RELAY_SHUTDOWN_TIMEOUT": "5"}, "relay.E015"),
        ({"RELAY_AUDIT_RETENTION_DAYS": -1}, "relay.E016"),
        ({"RELAY_METRICS_ALLOWED_IPS": "127.0.0.1"}, "relay.E017"),
        ({"RELAY_METRICS_ALLOWED_IPS": ["localhost"]}, "relay.E017"),
        ({"RELAY_METRICS_ALLOWED_IPS": None}, "relay.E017"),
        ({"RELAY_METRICS_TOKEN": "short"}, "relay.E018"),
        ({"RELAY_METRICS_TOKEN": 12345678901234567}, "relay.E018"),
        ({"CHANNEL_LAYERS": {}}, "relay.E019"),
        ({"CHANNEL_LAYERS": {"other": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}}, "relay.E019"),
        ({"CHANNEL_LAYERS": {"default": {}}}, "relay.E019"),
        ({"CHANNEL_LAYERS": None}, "relay.E019"),
        ({"RELAY_MESSAGE_HANDLERS": "tests.test_handlers.shout"}, "relay.E021"),
        ({"RELAY_MESSAGE_HANDLERS": ["tests.test_handlers.no_such"]}, "relay.E021"),
        ({"RELAY_MESSAGE_HANDLERS": ["tests.test_handlers.HERE"]}, "relay.E021"),
        ({"RELAY_HISTORY": "yes"}, "relay.E022"),
        ({"RELAY_HISTORY_SIZE": 0}, "relay.E023"),
        ({"RELAY_HISTORY_TTL": "300"}, "relay.E023"),
        ({"RELAY_HISTORY_STREAM_TTL": 10}, "relay.E023"),
        ({"RELAY_HISTORY_RATE": 0}, "relay.E031"),
        ({"RELAY_HISTORY_RATE": "64KB"}, "relay.E031"),
        ({"RELAY_HISTORY_BURST": None}, "relay.E031"),
        ({"RELAY_IDENTITY_BACKENDS": []}, "relay.E020"),
        ({"RELAY_IDENTITY_BACKENDS": ()}, "relay.E020"),
        ({"RELAY_IDENTITY_BACKENDS": None}, "relay.E020"),
        ({"RELAY_IDENTITY_BACKENDS": "relay.identity.backends.TokenBackend"}, "relay.E020"),  # a string, not a list
        ({"RELAY_IDENTITY_BACKENDS": ["relay.identity.backends.NoSuchBackend"]}, "relay.E020"),
        ({"RELAY_IDENTITY_BACKENDS": ["no_such_module.Backend"]}, "relay.E020"),
        ({"RELAY_IDENTITY_BACKENDS": ["TokenBackend"]}, "relay.E020"),
        ({"RELAY_IDENTITY_BACKENDS": [""]}, "relay.E020"),
        ({"RELAY_IDENTITY_BACKENDS": [None]}, "relay.E020"),
        ({"RELAY_IDENTITY_BACKENDS": ["relay.identity.backends.identify"]}, "relay.E020"),  # a function, not a class
        ({"RELAY_IDENTITY_BACKENDS": ["relay.server.policies.AllowAll"]}, "relay.E020"),  # no authenticate method
        ({"RELAY_IDENTITY_BACKENDS": ["relay.identity.backends.IdentityBackend"]}, "relay.E020"),  # the base class
        (
            {"RELAY_IDENTITY_BACKENDS": ["relay.identity.backends.TokenBackend", "relay.identity.backends.Nope"]},
            "relay.E020",
        ),
    ],
    ids=describe,
)
def test_wrong_value_is_exactly_one_error(overrides, error_id):
    with override_settings(**overrides):
        errors = check_settings()
    assert ids(errors) == [error_id]
    assert all(isinstance(error, checks.Error) for error in errors)


def test_errors_name_the_setting_and_say_how_to_fix():
    with override_settings(RELAY_RATE_LIMIT="fast"):
        (error,) = check_settings()
    assert "RELAY_RATE_LIMIT" in error.msg
    assert "'fast'" in error.msg
    assert error.hint == 'Write it as "<frames>/<s|m|h|d>" with a positive number, e.g. "50/s", or None for no limit.'


def test_several_wrong_settings_give_several_errors():
    with override_settings(RELAY_ALLOW_QUERY_ID="yes", RELAY_MAX_TARGETS=0, RELAY_RATE_BURST=0):
        assert ids(check_settings()) == ["relay.E001", "relay.E002", "relay.E009"]


#: What a production site sets, so that each deploy warning below shows alone: relay.v1 only,
#: a token secret of its own, no demo.
PRODUCTION = {
    "RELAY_ALLOW_QUERY_ID": False,
    "RELAY_FRAMINGS": ["relay.v1"],
    "RELAY_TOKEN_SECRET": "t" * 40,
    "RELAY_DEMO": False,
}


@pytest.mark.parametrize(
    ("overrides", "warning_ids"),
    [
        ({"RELAY_ALLOW_QUERY_ID": False, "RELAY_ALLOWED_ORIGINS": ["https://example.com"]}, []),
        ({"RELAY_ALLOW_QUERY_ID": True, "RELAY_ALLOWED_ORIGINS": ["https://example.com"]}, ["relay.W001"]),
        ({"RELAY_ALLOW_QUERY_ID": False, "RELAY_ALLOWED_ORIGINS": ["https://example.com", "*"]}, ["relay.W002"]),
        ({"RELAY_ALLOW_QUERY_ID": True, "RELAY_ALLOWED_ORIGINS": ["*"]}, ["relay.W001", "relay.W002"]),
        # ALLOWED_HOSTS no longer lists browser origins: "*" there lets no foreign page connect.
        ({"RELAY_ALLOW_QUERY_ID": False, "RELAY_ALLOWED_ORIGINS": None, "ALLOWED_HOSTS": ["*"]}, []),
    ],
)
def test_deploy_warnings(overrides, warning_ids):
    with override_settings(**{**PRODUCTION, **overrides}):
        warnings = check_deploy()
    assert ids(warnings) == warning_ids
    assert all(isinstance(warning, checks.Warning) for warning in warnings)


def test_checks_are_registered():
    with override_settings(**{**PRODUCTION, "RELAY_MAX_TARGETS": 0, "RELAY_ALLOW_QUERY_ID": True}):
        assert ids(checks.run_checks(tags=["relay"])) == ["relay.E002"]
        assert set(ids(checks.run_checks(tags=["relay"], include_deployment_checks=True))) == {
            "relay.E002",
            "relay.W001",
        }


def test_no_channel_layers_setting_at_all_is_an_error(settings):
    del settings.CHANNEL_LAYERS
    assert ids(check_settings()) == ["relay.E019"]


def test_history_asked_for_without_redis_is_a_warning(settings):
    settings.RELAY_HISTORY = True  # tests.settings: the in-memory layer
    (warning,) = check_settings()
    assert (warning.id, isinstance(warning, checks.Warning)) == ("relay.W003", True)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RELAY_MESSAGE_HANDLERS", []),
        ("RELAY_MESSAGE_HANDLERS", ["tests.test_handlers.shout", "tests.test_handlers.Prefix"]),
        ("RELAY_HISTORY", False),
        ("RELAY_HISTORY_SIZE", 1),
        ("RELAY_HISTORY_STREAM_TTL", 300),
        ("RELAY_HISTORY_RATE", None),
        ("RELAY_HISTORY_BURST", 1),
    ],
)
def test_site_code_and_history_settings_that_are_fine(settings, name, value):
    setattr(settings, name, value)
    assert check_settings() == []


# --- hardening (issue 12) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "warning_ids"),
    [
        ({"RELAY_FRAMINGS": ["relay.v1", "original"]}, ["relay.W005"]),
        ({"RELAY_FRAMINGS": ["original"], "RELAY_SEND_POLICY": "relay.server.policies.SameIdOnly"}, []),
        ({"RELAY_FRAMINGS": ["relay.v1"]}, []),
    ],
)
def test_deploy_warns_where_a_client_can_forge_a_server_push(overrides, warning_ids):
    """The original framing with client-to-client sends: a client's message is the bytes of a push."""
    with override_settings(**{**PRODUCTION, **overrides}):
        assert ids(check_deploy()) == warning_ids


SECRET_KEY = "the-site-secret-key-0123456789-0123456789-0123456789"


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [
        ({"RELAY_TOKEN_SECRET": None}, True),  # unset: SECRET_KEY
        ({"RELAY_TOKEN_SECRET": ""}, True),
        ({"RELAY_TOKEN_SECRET": SECRET_KEY}, True),
        ({"RELAY_TOKEN_SECRET": None, "RELAY_TOKEN_SECRETS": ["n" * 40, SECRET_KEY]}, True),
        ({"RELAY_TOKEN_SECRET": "t" * 40}, False),
        ({"RELAY_TOKEN_SECRET": None, "RELAY_TOKEN_SECRETS": ["n" * 40, "o" * 40]}, False),
    ],
)
def test_deploy_warns_when_the_token_secret_is_the_secret_key(overrides, warned):
    """A backend given the token secret must not hold Django's SECRET_KEY (sessions, password resets)."""
    with override_settings(**{**PRODUCTION, "SECRET_KEY": SECRET_KEY, **overrides}):
        warnings = check_deploy()
    assert ids(warnings) == (["relay.W006"] if warned else [])
    if warned:
        assert "SECRET_KEY" in warnings[0].msg and "RELAY_TOKEN_SECRET" in warnings[0].hint


def test_no_browser_origin_at_all_is_a_warning(settings):
    """ALLOWED_HOSTS empty with DEBUG off, and no RELAY_ALLOWED_ORIGINS: no page could ever connect."""
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = []
    (warning,) = check_settings()
    assert (warning.id, isinstance(warning, checks.Warning)) == ("relay.W004", True)
    settings.RELAY_ALLOWED_ORIGINS = ["https://app.example.com"]
    assert check_settings() == []
    del settings.RELAY_ALLOWED_ORIGINS
    settings.DEBUG = True  # Django's rule: an empty ALLOWED_HOSTS under DEBUG means localhost
    assert check_settings() == []


def test_old_host_patterns_are_an_error_saying_how_to_write_them(settings):
    settings.RELAY_ALLOWED_ORIGINS = [".example.com"]
    (error,) = check_settings()
    assert error.id == "relay.E024"
    assert "'.example.com'" in error.msg
    assert "'https://*.example.com'" in error.hint


def test_the_demo_setting_is_a_boolean_and_a_deploy_warning_when_on():
    from relay.checks import check_demo, check_demo_deploy

    with override_settings(RELAY_DEMO="yes"):
        assert ids(check_demo()) == ["relay.E030"]
    with override_settings(RELAY_DEMO=False):
        assert check_demo() == check_demo_deploy() == []
    with override_settings(**{**PRODUCTION, "RELAY_DEMO": True}):
        assert check_demo() == []
        assert ids(check_demo_deploy()) == ["relay.W010"]
        assert "relay.W010" in ids(checks.run_checks(tags=["relay"], include_deployment_checks=True))
        assert "relay.W010" not in ids(checks.run_checks(tags=["relay"]))
