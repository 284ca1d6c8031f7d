"""relay.conf: defaults, and the Redis URL derived from a channels-redis CHANNEL_LAYERS entry."""

import pytest

from relay.conf import conf, redis_url_of_host


def redis_layer(hosts: list | None = None, backend: str = "channels_redis.pubsub.RedisPubSubChannelLayer") -> dict:
    config = {} if hosts is None else {"hosts": hosts}
    return {"default": {"BACKEND": backend, "CONFIG": config}}


@pytest.mark.parametrize(
    ("hosts", "url"),
    [
        pytest.param(["redis://10.0.0.5:6380/2"], "redis://10.0.0.5:6380/2", id="url"),
        pytest.param([("10.0.0.5", 6380)], "redis://10.0.0.5:6380", id="tuple"),
        pytest.param([["10.0.0.5", 6380]], "redis://10.0.0.5:6380", id="list"),
        pytest.param([{"address": "redis://:pw@10.0.0.5:6379/1"}], "redis://:pw@10.0.0.5:6379/1", id="dict"),
        pytest.param(["redis://first:6379", "redis://second:6379"], "redis://first:6379", id="first-of-several"),
        pytest.param(None, "redis://localhost:6379", id="channels-redis-default"),
        pytest.param([], "redis://localhost:6379", id="empty-hosts"),
    ],
)
def test_redis_url_follows_the_channels_redis_layer(settings, hosts, url):
    settings.CHANNEL_LAYERS = redis_layer(hosts)
    assert conf.RELAY_REDIS_URL == url


@pytest.mark.parametrize(
    "backend", ["channels_redis.core.RedisChannelLayer", "channels_redis.pubsub.RedisPubSubChannelLayer"]
)
def test_both_channels_redis_layers_are_read(settings, backend):
    settings.CHANNEL_LAYERS = redis_layer(["redis://h:1/0"], backend)
    assert conf.RELAY_REDIS_URL == "redis://h:1/0"


def test_in_memory_layer_means_no_redis(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert conf.RELAY_REDIS_URL is None


def test_no_channel_layers_means_no_redis(settings):
    del settings.CHANNEL_LAYERS
    assert conf.RELAY_REDIS_URL is None


def test_explicit_setting_wins_even_when_none(settings):
    settings.CHANNEL_LAYERS = redis_layer(["redis://layer:6379"])
    settings.RELAY_REDIS_URL = "redis://own:6379/3"
    assert conf.RELAY_REDIS_URL == "redis://own:6379/3"
    settings.RELAY_REDIS_URL = None
    assert conf.RELAY_REDIS_URL is None


@pytest.mark.parametrize("host", [{"sentinels": [("s", 26379)], "master_name": "m"}, {"address": 5}, 5, None])
def test_hosts_the_relay_cannot_name_give_none(host):
    assert redis_url_of_host(host) is None


def test_settings_are_read_at_access_time(settings):
    settings.RELAY_MAX_TARGETS = 7
    assert conf.RELAY_MAX_TARGETS == 7
    del settings.RELAY_MAX_TARGETS
    assert conf.RELAY_MAX_TARGETS == 100


def test_token_secret_defaults_to_secret_key(settings):
    assert conf.RELAY_TOKEN_SECRET == settings.SECRET_KEY
    settings.RELAY_TOKEN_SECRET = "s" * 40
    assert conf.RELAY_TOKEN_SECRET == "s" * 40
