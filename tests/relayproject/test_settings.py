"""relayproject.settings: reading the environment, and refusing to run production without a secret."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from relayproject.settings import BASE_DIR, channel_layer_from_url, database_from_url, env_bool, env_list

VAR = "RELAY_TEST_SETTING"
PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("raw", ["1", "true", "True", "TRUE", "yes", "on", " 1 ", "On"])
def test_env_bool_true(monkeypatch, raw):
    monkeypatch.setenv(VAR, raw)
    assert env_bool(VAR, False) is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "off", " 0 ", "OFF"])
def test_env_bool_false(monkeypatch, raw):
    monkeypatch.setenv(VAR, raw)
    assert env_bool(VAR, True) is False


@pytest.mark.parametrize("default", [True, False])
@pytest.mark.parametrize("raw", [None, "", "  "])
def test_env_bool_unset_or_blank_is_the_default(monkeypatch, raw, default):
    if raw is None:
        monkeypatch.delenv(VAR, raising=False)
    else:
        monkeypatch.setenv(VAR, raw)
    assert env_bool(VAR, default) is default


@pytest.mark.parametrize("raw", ["2", "maybe", "y", "enabled", "-1"])
def test_env_bool_refuses_other_values(monkeypatch, raw):
    monkeypatch.setenv(VAR, raw)
    with pytest.raises(ImproperlyConfigured, match=f"{VAR}=.* is not a boolean: use 1/0 or true/false"):
        env_bool(VAR, False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", ["example.com"]),
        ("a.example.com,b.example.com", ["a.example.com", "b.example.com"]),
        (" a , b ,, c ,", ["a", "b", "c"]),
        ("", []),
        (" , ", []),
    ],
)
def test_env_list(monkeypatch, raw, expected):
    monkeypatch.setenv(VAR, raw)
    assert env_list(VAR, ["default"]) == expected


def test_env_list_unset_is_the_default(monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    assert env_list(VAR, ["default"]) == ["default"]


@pytest.mark.parametrize("url", [None, ""])
def test_database_default_is_sqlite_in_the_project(url):
    assert database_from_url(url) == {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("sqlite:///relay.db", "relay.db"),
        ("sqlite:///data/relay.db", "data/relay.db"),
        ("sqlite:////var/lib/relay/relay.db", "/var/lib/relay/relay.db"),
        ("sqlite:////tmp/with%20space.db", "/tmp/with space.db"),
        ("sqlite://", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_database_sqlite(url, name):
    assert database_from_url(url) == {"ENGINE": "django.db.backends.sqlite3", "NAME": name}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgres://relay:s3cret@db.example.com:6543/relaydb",
            {"NAME": "relaydb", "USER": "relay", "PASSWORD": "s3cret", "HOST": "db.example.com", "PORT": "6543"},
        ),
        (
            "postgresql://relay:p%40ss%3Aword@10.0.0.5/relaydb",
            {"NAME": "relaydb", "USER": "relay", "PASSWORD": "p@ss:word", "HOST": "10.0.0.5", "PORT": ""},
        ),
        (
            "pgsql://localhost/relaydb",
            {"NAME": "relaydb", "USER": "", "PASSWORD": "", "HOST": "localhost", "PORT": ""},
        ),
    ],
)
def test_database_postgres(url, expected):
    assert database_from_url(url) == {"ENGINE": "django.db.backends.postgresql", **expected}


@pytest.mark.parametrize("url", ["mysql://user:pass@host/db", "redis://localhost:6379/0", "db.sqlite3"])
def test_database_unsupported_scheme(url):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL scheme .* is not supported"):
        database_from_url(url)


@pytest.mark.parametrize("url", [None, ""])
def test_channel_layer_default_is_in_memory(url):
    assert channel_layer_from_url(url) == {"BACKEND": "channels.layers.InMemoryChannelLayer"}


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://:secret@redis.internal:6380/2"])
def test_channel_layer_redis(url):
    assert channel_layer_from_url(url) == {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [url], "prefix": "asgi"},
    }
    assert channel_layer_from_url(url, "site-b.asgi")["CONFIG"]["prefix"] == "site-b.asgi"


# Importing the settings in a clean environment

PROBE = (
    "import json, relayproject.settings as s; "
    "print(json.dumps([s.DEBUG, s.SECRET_KEY, s.ALLOWED_HOSTS, s.DATABASES['default']['ENGINE'], "
    "s.CHANNEL_LAYERS['default']['BACKEND']]))"
)


def import_settings(**env: str) -> subprocess.CompletedProcess:
    clean = {"PATH": os.environ.get("PATH", ""), **env}
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT_DIR, env=clean, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"DEBUG": "0"}, id="debug-0"),
        pytest.param({"DEBUG": "false"}, id="debug-false"),
        pytest.param({}, id="debug-unset"),
        pytest.param({"DEBUG": "0", "SECRET_KEY": ""}, id="empty-secret"),
        pytest.param(
            {"DEBUG": "0", "SECRET_KEY": "django-insecure-relay-development-key-do-not-use-in-production"},
            id="development-secret",
        ),
    ],
)
def test_production_refuses_to_start_without_a_secret(env):
    result = import_settings(**env)
    assert result.returncode != 0
    assert result.stdout == ""
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured: SECRET_KEY")
    assert "DEBUG=1" in last_line


def test_development_runs_without_a_secret():
    result = import_settings(DEBUG="1")
    assert result.returncode == 0, result.stderr
    debug, secret_key, allowed_hosts, database, layer = json.loads(result.stdout)
    assert debug is True
    assert secret_key.startswith("django-insecure-")
    assert allowed_hosts == ["localhost", "127.0.0.1", "[::1]"]
    assert database == "django.db.backends.sqlite3"
    assert layer == "channels.layers.InMemoryChannelLayer"


def test_production_runs_with_a_secret_and_reads_the_environment():
    secret = "production-secret-0123456789-0123456789-0123456789-0123456789"
    result = import_settings(
        DEBUG="0",
        SECRET_KEY=secret,
        ALLOWED_HOSTS="relay.example.com, .example.org",
        DATABASE_URL="postgres://u:p@db/relay",
        REDIS_URL="redis://redis:6379/0",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        False,
        secret,
        ["relay.example.com", ".example.org"],
        "django.db.backends.postgresql",
        "channels_redis.pubsub.RedisPubSubChannelLayer",
    ]


def test_invalid_debug_value_is_refused():
    result = import_settings(DEBUG="maybe", SECRET_KEY="x" * 60)
    assert result.returncode != 0
    assert "ImproperlyConfigured: DEBUG='maybe' is not a boolean" in result.stderr


PRODUCTION_ENV = {
    # The README's /etc/relay/env ("Deploy").
    "SECRET_KEY": "production-secret-0123456789-0123456789-0123456789-0123456789",
    "ALLOWED_HOSTS": "relay.example.com",
    "REDIS_URL": "redis://:password@10.0.0.5:6379/0",
    "DATABASE_URL": "postgres://relay:secret@10.0.0.6:5432/relay",
    "RELAY_TOKEN_SECRET": "token-secret-0123456789-0123456789-0123456789",
}


def check_deploy(**env: str) -> subprocess.CompletedProcess:
    clean = {"PATH": os.environ.get("PATH", ""), **env}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=PROJECT_DIR,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_is_clean_for_the_documented_production_settings():
    result = check_deploy(**PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


def test_check_deploy_warns_when_anyone_can_claim_any_id():
    result = check_deploy(**PRODUCTION_ENV, RELAY_ALLOW_QUERY_ID="1")
    assert result.returncode != 0
    assert "relay.W001" in result.stderr


def test_check_deploy_warns_when_the_token_secret_is_the_secret_key():
    """Issue 12: a backend given the token secret would hold Django's SECRET_KEY; check --deploy was silent."""
    env = {name: value for name, value in PRODUCTION_ENV.items() if name != "RELAY_TOKEN_SECRET"}
    result = check_deploy(**env)
    assert result.returncode != 0
    assert "relay.W006" in result.stderr
    assert check_deploy(**env, RELAY_TOKEN_SECRETS=f"{'n' * 40},{'o' * 40}").returncode == 0


def test_check_deploy_warns_where_a_client_could_forge_a_server_push():
    """Issue 12: the original framing with client-to-client sends makes a client's frame a push's bytes."""
    result = check_deploy(**PRODUCTION_ENV, RELAY_FRAMINGS="relay.v1,original")
    assert result.returncode != 0
    assert "relay.W005" in result.stderr


def test_check_deploy_warns_when_the_demo_is_turned_on_in_production():
    result = check_deploy(**PRODUCTION_ENV, RELAY_DEMO="1")
    assert result.returncode != 0
    assert "relay.W010" in result.stderr
