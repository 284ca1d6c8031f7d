"""The Redis servers the relay uses, read from the settings, and which one holds each client id.

One list configures everything: ``RELAY_REDIS_URL`` where set (a URL or a list of them),
else the ``hosts`` of a channels-redis default layer, so that one setting names the
servers of the channel layer and of the relay alike. Each entry is one of what
channels-redis accepts: a URL (``redis://``, ``rediss://`` for TLS, ``unix://``), a
``("host", port)`` pair, a dict with ``address`` (a URL) and redis-py connection options
(``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``, …), or a dict with
``sentinels`` (``[("host", port), …]``) and ``master_name`` (and ``sentinel_kwargs``, and
options for the master). A ``redis+sentinel://[password@]host:port[,host:port…]/master[/db]``
URL names sentinels too.

Several entries are shards: each client id's bus channel, presence and history live on
one of them, chosen by the same hash channels-redis uses to place that id's group
(``relay.<id>``) over the same hosts, so that pushes and frames for one id use one Redis.
"""

import binascii
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from django.conf import settings as django_settings
from redis.connection import parse_url
from redis.sentinel import Sentinel

from relay.conf import conf

#: redis-py's TLS options, as they may appear in a URL's query or a hosts dict.
TLS_OPTIONS = (
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
    "ssl_password",
)
SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class RedisServer:
    """One Redis (a shard): where it is, how to talk to it, or which sentinels to ask for it."""

    #: ``redis://``, ``rediss://`` or ``unix://`` URL; for a Sentinel-managed master, its options only.
    url: str | None
    #: redis-py connection options beyond the URL (TLS files, ``username``/``password``, ``db``).
    options: tuple[tuple[str, Any], ...] = ()
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    sentinel_options: tuple[tuple[str, Any], ...] = field(default=(), repr=False)

    @property
    def uses_sentinel(self) -> bool:
        """Whether the master is found through sentinels."""
        return self.master_name is not None

    def params(self) -> dict[str, Any]:
        """redis-py's connection keywords for this server: the URL's, then the options."""
        params = parse_url(self.url) if self.url else {}
        params.update(self.options)
        return params

    @property
    def tls(self) -> bool:
        """Whether connections use TLS."""
        if self.url and self.url.startswith("rediss://"):
            return True
        return bool(dict(self.options).get("ssl"))

    def display(self) -> str:
        """A name for logs and health, without credentials."""
        if self.uses_sentinel:
            where = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"sentinel {where} master {self.master_name}"
        parts = urlsplit(self.url or "")
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}/{parts.path.strip('/') or 0}"


def split_urls(urls: str) -> list[str]:
    """Several Redis URLs written as one, comma-separated (a Sentinel URL's own commas kept)."""
    found: list[str] = []
    for piece in (piece.strip() for piece in urls.split(",")):
        if not piece:
            continue
        if "://" in piece or not found:
            found.append(piece)
        else:  # the next sentinel of a redis+sentinel:// URL
            found[-1] += "," + piece
    return found


def channels_redis_host(url: str, tls: Mapping[str, str] | None = None) -> str | dict[str, Any]:
    """The channels-redis ``hosts`` entry for ``url``; ``tls`` (redis-py's ``ssl_*`` options) for rediss://."""
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        server = parse_sentinel_url(url)
        return {
            "sentinels": [list(sentinel) for sentinel in server.sentinels],
            "master_name": server.master_name,
            "sentinel_kwargs": dict(server.sentinel_options),
            **dict(server.options),
        }
    if url.startswith("rediss://") and tls:
        return {"address": url, **tls}
    return url


def ssl_context(params: Mapping[str, Any]) -> ssl.SSLContext:
    """The TLS context redis-py would build from these options: the system CAs unless a CA is given."""
    context = ssl.create_default_context(cafile=params.get("ssl_ca_certs"), capath=params.get("ssl_ca_path"))
    if params.get("ssl_certfile"):
        context.load_cert_chain(params["ssl_certfile"], params.get("ssl_keyfile"), params.get("ssl_password"))
    requirement = str(params.get("ssl_cert_reqs", "required")).lower()
    check_hostname = params.get("ssl_check_hostname", True)
    if isinstance(check_hostname, str):
        check_hostname = check_hostname.lower() not in ("0", "false", "no", "off")
    context.check_hostname = bool(check_hostname) and requirement == "required"
    context.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(requirement, ssl.CERT_REQUIRED)
    return context


def parse_sentinel_url(url: str) -> RedisServer:
    """``redis+sentinel://[[user:]password@]host:port[,host:port…]/master_name[/db][?options]``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    credentials, _, hosts = netloc.rpartition("@")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        sentinels.append((unquote(host), int(port or 26379)))
    path = [unquote(piece) for piece in parts.path.split("/") if piece]
    if not path:
        raise ValueError(f"{SENTINEL_SCHEME} URL without a master name: add /<master_name>")
    options: dict[str, Any] = {key: values[0] for key, values in parse_qs(parts.query).items()}
    if len(path) > 1:
        options["db"] = int(path[1])
    if credentials:
        username, _, password = credentials.rpartition(":")
        options["password"] = unquote(password)
        if username:
            options["username"] = unquote(username)
    sentinel_options = {key: options[key] for key in ("password", "username") if key in options}
    return RedisServer(
        None, tuple(sorted(options.items())), tuple(sentinels), path[0], tuple(sorted(sentinel_options.items()))
    )


def server_of(host: Any) -> RedisServer:
    """The server a channels-redis ``hosts`` entry (or a ``RELAY_REDIS_URL`` item) names; ValueError if none."""
    if isinstance(host, str):
        if host.startswith(f"{SENTINEL_SCHEME}://"):
            return parse_sentinel_url(host)
        parse_url(host)  # a ValueError for a scheme redis-py does not know
        return RedisServer(host)
    if isinstance(host, (tuple, list)) and len(host) == 2:
        return RedisServer(f"redis://{host[0]}:{int(host[1])}")
    if isinstance(host, Mapping):
        options = {key: value for key, value in host.items() if key not in ("address", "sentinels", "master_name")}
        if "master_name" in host:
            sentinel_options = options.pop("sentinel_kwargs", None) or {}
            sentinels = tuple((str(h), int(p)) for h, p in host.get("sentinels") or ())
            if not sentinels:
                raise ValueError("a hosts entry with master_name needs sentinels: [(host, port), ...]")
            return RedisServer(
                None, tuple(sorted(options.items())), sentinels, str(host["master_name"]),
                tuple(sorted(dict(sentinel_options).items())),
            )  # fmt: skip
        address = host.get("address")
        if isinstance(address, str):
            return RedisServer(server_of(address).url, tuple(sorted(options.items())))
        if "host" in host:
            return RedisServer(f"redis://{host['host']}:{int(host.get('port', 6379))}", tuple(sorted(options.items())))
    raise ValueError(f"{host!r} is not a Redis the relay can use: a URL, a (host, port) pair, or a hosts dict")


def configured_hosts() -> list[Any]:
    """The raw entries: ``RELAY_REDIS_URL`` where set, else the channels-redis default layer's hosts."""
    if hasattr(django_settings, "RELAY_REDIS_URL"):
        value = conf.RELAY_REDIS_URL
        if value is None:
            return []
        return list(value) if isinstance(value, (list, tuple)) else [value]
    layer = (getattr(django_settings, "CHANNEL_LAYERS", None) or {}).get("default") or {}
    if not str(layer.get("BACKEND", "")).startswith("channels_redis."):
        return []
    return list((layer.get("CONFIG") or {}).get("hosts") or ["redis://localhost:6379"])


#: Parsed host lists by their repr: settings are read at access time, parsed once.
_parsed: dict[str, tuple[RedisServer, ...]] = {}


def configured() -> tuple[RedisServer, ...]:
    """The relay's Redis servers (its shards), in order; empty without Redis (the in-memory layer)."""
    hosts = configured_hosts()
    key = repr(hosts)
    found = _parsed.get(key)
    if found is None:
        found = _parsed[key] = tuple(server_of(host) for host in hosts)
    return found


def layer_is_on_the_relays_servers() -> bool:
    """Whether the default layer is channels-redis's pub/sub layer on the relay's own Redis servers, in order.

    Then a group's messages are published where the relay holds the group's id
    (``relay.redis.groups``).
    """
    layer = (getattr(django_settings, "CHANNEL_LAYERS", None) or {}).get("default") or {}
    if layer.get("BACKEND") != "channels_redis.pubsub.RedisPubSubChannelLayer":
        return False
    hosts = list((layer.get("CONFIG") or {}).get("hosts") or ["redis://localhost:6379"])
    return tuple(server_of(host) for host in hosts) == configured()


def layer_prefix() -> str:
    """The channel layer's key prefix (channels-redis: ``prefix``, default ``asgi``)."""
    layer = (getattr(django_settings, "CHANNEL_LAYERS", None) or {}).get("default") or {}
    return str((layer.get("CONFIG") or {}).get("prefix", "asgi"))


def shard_index(client_id: str, shards: int, prefix: str) -> int:
    """Which of ``shards`` servers holds ``client_id``: channels-redis's ring over its hosts.

    channels-redis places the group ``relay.<id>`` by the CRC-32 of its channel name
    (``<prefix>__group__relay.<id>``) on a ring of 4,096 slots split evenly over the hosts;
    the relay places the id's bus channel, presence and history the same way.
    """
    if shards == 1:
        return 0
    slot = binascii.crc32(f"{prefix}__group__relay.{client_id}".encode()) & 0xFFF
    return int(slot / (4096 / shards))


def group_by_shard(ids: Sequence[str], servers: Sequence[RedisServer], prefix: str) -> dict[int, list[str]]:
    """``ids`` by the index of the server that holds each, in order."""
    shards: dict[int, list[str]] = {}
    for client_id in ids:
        shards.setdefault(shard_index(client_id, len(servers), prefix), []).append(client_id)
    return shards


@lru_cache(maxsize=16)
def sync_client(server: RedisServer) -> redis.Redis:
    """A redis-py client of ``server`` that decodes replies, shared by the process (presence, pushes)."""
    timeouts = {"socket_connect_timeout": 2, "socket_timeout": 5}
    if server.uses_sentinel:
        sentinel = Sentinel(list(server.sentinels), sentinel_kwargs={**timeouts, **dict(server.sentinel_options)})
        assert server.master_name is not None  # uses_sentinel
        master: redis.Redis = sentinel.master_for(
            server.master_name, decode_responses=True, **timeouts, **dict(server.options)
        )
        return master
    assert server.url is not None  # a server without sentinels has a URL
    return redis.Redis.from_url(server.url, decode_responses=True, **timeouts, **dict(server.options))
