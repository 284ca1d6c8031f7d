"""relay.conf: settings read at access time, with their defaults."""

from relay.conf import conf


def test_settings_are_read_at_access_time(settings):
    settings.RELAY_MAX_TARGETS = 7
    assert conf.RELAY_MAX_TARGETS == 7
    del settings.RELAY_MAX_TARGETS
    assert conf.RELAY_MAX_TARGETS == 100


def test_token_secret_defaults_to_secret_key(settings):
    assert conf.RELAY_TOKEN_SECRET == settings.SECRET_KEY
    settings.RELAY_TOKEN_SECRET = "s" * 40
    assert conf.RELAY_TOKEN_SECRET == "s" * 40


def test_history_defaults_to_none_meaning_where_there_is_redis(settings):
    assert conf.RELAY_HISTORY is None
    settings.RELAY_HISTORY = False
    assert conf.RELAY_HISTORY is False
