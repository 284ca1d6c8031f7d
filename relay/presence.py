"""Who is online: client ids with at least one open connection, across every process.

With Redis, on each Redis server (shard) for the ids it holds, each relay process
("node") keeps a hash ``<prefix>:presence:node:<node>`` of client id -> open
connections in that node, and its heartbeat in the sorted set
``<prefix>:presence:nodes``. Both are refreshed every ``RELAY_PRESENCE_HEARTBEAT``
seconds and expire after ``RELAY_PRESENCE_TTL``, so a process that dies without
cleaning up stops counting within that time; a clean disconnect counts at once.
Readers count only nodes whose heartbeat is recent. Without Redis (the in-memory
layer), presence is this process's own connections.

Reading: ``is_online(id)``, ``online(ids)``, ``count()``, ``connections()``, and the
async forms ``ais_online`` and so on, from any Django code.
"""

import time
from collections.abc import Iterable
from typing import Any, cast

import redis
from asgiref.sync import sync_to_async

from relay.conf import conf
from relay.protocol import normalize_client_id
from relay.redis import servers
from relay.redis.keys import node_key, nodes_key


def connections(client_ids: Iterable[str | int] | None = None) -> dict[str, int]:
    """Open connections per online client id (of ``client_ids``, or of everyone).

    Ids are normalized like targets (``2`` is ``"2"``); an invalid id is never online.
    """
    ids = None
    if client_ids is not None:
        ids = [client_id for client_id in map(normalize_client_id, client_ids) if client_id is not None]
    shards = servers.configured()
    if not shards:
        # The in-memory layer: presence is this process's own connections, so the engine
        # is running here if anything is; imported only then, to keep this module light.
        from relay.server.hub import local_connections

        counts = local_connections()
    elif ids is None:  # everyone: each shard holds the presence of its own ids
        counts = {}
        for server in shards:
            counts.update(_redis_connections(servers.sync_client(server), conf.RELAY_REDIS_PREFIX, None))
    else:
        counts = {}
        for index, on_shard in servers.group_by_shard(ids, shards, servers.layer_prefix()).items():
            client = servers.sync_client(shards[index])
            counts.update(_redis_connections(client, conf.RELAY_REDIS_PREFIX, on_shard))
    if ids is not None:
        wanted = set(ids)
        counts = {client_id: n for client_id, n in counts.items() if client_id in wanted}
    return counts


def _redis_connections(client: redis.Redis, prefix: str, ids: list[str] | None) -> dict[str, int]:
    # The client decodes responses (decode_responses=True): the members, node names, are str.
    alive = cast(list[str], client.zrangebyscore(nodes_key(prefix), time.time() - conf.RELAY_PRESENCE_TTL, "+inf"))
    pipe = client.pipeline(transaction=False)
    for node in alive:
        if ids is None:
            pipe.hgetall(node_key(prefix, node))
        elif ids:
            pipe.hmget(node_key(prefix, node), ids)
    counts: dict[str, int] = {}
    for reply in pipe.execute() if alive and ids != [] else ():
        pairs: Iterable[tuple[str, Any]]
        if isinstance(reply, dict):
            pairs = reply.items()
        else:
            assert ids is not None  # only HMGET replies are lists, one value per id asked
            pairs = zip(ids, reply, strict=True)
        for client_id, n in pairs:
            if n:
                counts[client_id] = counts.get(client_id, 0) + int(n)
    return counts


def online(client_ids: Iterable[str | int]) -> set[str]:
    """The client ids of ``client_ids`` that have at least one open connection."""
    return set(connections(client_ids))


def is_online(client_id: str | int) -> bool:
    """Whether ``client_id`` has at least one open connection anywhere."""
    return bool(connections([client_id]))


def count() -> int:
    """How many client ids have at least one open connection."""
    return len(connections())


# Async forms, for async views and consumers: the sync ones in a worker thread.
aconnections = sync_to_async(connections, thread_sensitive=False)
aonline = sync_to_async(online, thread_sensitive=False)
ais_online = sync_to_async(is_online, thread_sensitive=False)
acount = sync_to_async(count, thread_sensitive=False)
