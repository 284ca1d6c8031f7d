"""relay.redis.servers: which Redis servers the settings name, TLS options, sentinels, and shard placement."""

import binascii
import ssl

import pytest

from relay.redis import servers
from relay.redis.servers import RedisServer, server_of, shard_index


def redis_layer(hosts: list | None = None, backend: str = "channels_redis.pubsub.RedisPubSubChannelLayer") -> dict:
    config = {} if hosts is None else {"hosts": hosts}
    return {"default": {"BACKEND": backend, "CONFIG": config}}


@pytest.mark.parametrize(
    ("hosts", "urls"),
    [
        pytest.param(["redis://10.0.0.5:6380/2"], ["redis://10.0.0.5:6380/2"], id="url"),
        pytest.param([("10.0.0.5", 6380)], ["redis://10.0.0.5:6380"], id="tuple"),
        pytest.param([["10.0.0.5", 6380]], ["redis://10.0.0.5:6380"], id="list"),
        pytest.param([{"address": "redis://:pw@10.0.0.5:6379/1"}], ["redis://:pw@10.0.0.5:6379/1"], id="dict"),
        pytest.param(["redis://a:6379", "redis://b:6379"], ["redis://a:6379", "redis://b:6379"], id="shards"),
        pytest.param(None, ["redis://localhost:6379"], id="channels-redis-default"),
        pytest.param([], ["redis://localhost:6379"], id="empty-hosts"),
    ],
)
def test_the_servers_follow_the_channels_redis_layer(settings, hosts, urls):
    settings.CHANNEL_LAYERS = redis_layer(hosts)
    assert [server.url for server in servers.configured()] == urls


@pytest.mark.parametrize(
    "backend", ["channels_redis.core.RedisChannelLayer", "channels_redis.pubsub.RedisPubSubChannelLayer"]
)
def test_both_channels_redis_layers_are_read(settings, backend):
    settings.CHANNEL_LAYERS = redis_layer(["redis://h:1/0"], backend)
    assert [server.url for server in servers.configured()] == ["redis://h:1/0"]


def test_in_memory_or_no_layer_means_no_redis(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert servers.configured() == ()
    del settings.CHANNEL_LAYERS
    assert servers.configured() == ()


def test_the_relays_own_setting_wins_even_when_none(settings):
    settings.CHANNEL_LAYERS = redis_layer(["redis://layer:6379"])
    settings.RELAY_REDIS_URL = "redis://own:6379/3"
    assert [server.url for server in servers.configured()] == ["redis://own:6379/3"]
    settings.RELAY_REDIS_URL = ["redis://one:6379", "rediss://two:6380"]
    assert [server.url for server in servers.configured()] == ["redis://one:6379", "rediss://two:6380"]
    settings.RELAY_REDIS_URL = None
    assert servers.configured() == ()


def test_tls_options_come_from_the_url_query_or_the_hosts_dict(tmp_path):
    by_url = server_of("rediss://h:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required")
    assert by_url.tls and by_url.params()["ssl_ca_certs"] == "/etc/ca.pem"
    by_dict = server_of({"address": "rediss://h:6380", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"})
    assert by_dict.tls and by_dict.params()["ssl_certfile"] == "/c.pem"
    assert not server_of("redis://h").tls


def test_the_tls_context_uses_the_system_cas_unless_told_otherwise():
    context = servers.ssl_context({})
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # the system store
    lax = servers.ssl_context({"ssl_cert_reqs": "none"})
    assert lax.verify_mode == ssl.CERT_NONE and not lax.check_hostname


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database():
    server = server_of("redis+sentinel://:secret@s1:26379,s2:26380/mymaster/2")
    assert server.uses_sentinel and server.master_name == "mymaster"
    assert server.sentinels == (("s1", 26379), ("s2", 26380))
    assert server.params() == {"db": 2, "password": "secret"}
    assert dict(server.sentinel_options) == {"password": "secret"}
    assert server.display() == "sentinel s1:26379,s2:26380 master mymaster"


def test_a_sentinel_hosts_dict_as_channels_redis_takes_it():
    host = {"sentinels": [("s1", 26379)], "master_name": "m", "sentinel_kwargs": {"password": "x"}, "db": 1}
    server = server_of(host)
    assert (server.master_name, server.sentinels, server.params()) == ("m", (("s1", 26379),), {"db": 1})
    assert dict(server.sentinel_options) == {"password": "x"}


@pytest.mark.parametrize(
    "host",
    ["http://h:6379", "h:6379", 6379, None, {"master_name": "m"}, {"address": 5}, ("h",), "redis+sentinel://s1:26379"],
)
def test_what_is_not_a_redis_is_a_clear_error(host):
    with pytest.raises(ValueError):
        server_of(host)


def test_display_never_shows_a_password():
    assert server_of("redis://user:hunter2@h:6380/4").display() == "redis://h:6380/4"
    assert "hunter2" not in server_of("redis+sentinel://:hunter2@s:26379/m").display()


def test_shards_place_an_id_as_channels_redis_places_its_group():
    for client_id in ("alice", "42", "x" * 64):
        slot = binascii.crc32(f"asgi__group__relay.{client_id}".encode()) & 0xFFF
        for count in (2, 3, 5):
            assert shard_index(client_id, count, "asgi") == int(slot / (4096 / count))
    assert shard_index("alice", 1, "asgi") == 0


async def test_shards_match_channels_redis_own_placement():
    from channels_redis.pubsub import RedisPubSubChannelLayer

    layer = RedisPubSubChannelLayer(hosts=["redis://a:1", "redis://b:2", "redis://c:3"], prefix="site1.asgi")
    shards = layer._get_layer()._shards  # channels-redis's own choice of shard for a group
    for client_id in ("alice", "bob", "7", "carol"):
        group_channel = layer._get_layer()._get_group_channel_name(f"relay.{client_id}")
        chosen = layer._get_layer()._get_shard(group_channel)
        assert shards.index(chosen) == shard_index(client_id, 3, "site1.asgi")


def test_ids_spread_over_the_shards():
    counts = [0, 0]
    for i in range(1000):
        counts[shard_index(f"user-{i}", 2, "asgi")] += 1
    assert min(counts) > 400


def test_servers_are_hashable_for_caching():
    options = (("ssl_ca_certs", "/x"),)
    assert hash(RedisServer("redis://h", options)) == hash(RedisServer("redis://h", options))
