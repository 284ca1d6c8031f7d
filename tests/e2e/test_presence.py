"""Presence across daphne processes sharing the real Redis, including one that is SIGKILLed.

Every server here runs ``tests.e2e.presence_settings`` (heartbeat 1 s, TTL 3 s), readers
included, since a reader decides which heartbeats still count. Presence is read over the
HTTP API of another process, and with ``relay.presence`` from a management shell.
"""

import asyncio
import json
import os
import signal
import time
import uuid

import pytest
import redis
from websockets.exceptions import ConnectionClosed

from relay.redis import keys

from .conftest import REDIS_KEY_PREFIX, run_manage_sync, run_relay_send
from .test_http_api import api_presence, create_named_api_key, wait_online

PRESENCE_ENV = {"DJANGO_SETTINGS_MODULE": "tests.e2e.presence_settings"}
TTL = 3
HEARTBEAT = 1


@pytest.fixture(scope="module")
def a(start_server):
    return start_server(name="a", env=PRESENCE_ENV)


@pytest.fixture(scope="module")
def b(start_server):
    return start_server(name="b", env=PRESENCE_ENV)


@pytest.fixture(scope="module")
def api_key(a) -> str:
    return create_named_api_key(a, f"e2e-presence-{uuid.uuid4().hex[:8]}")


async def wait_offline(server, key, client_id, timeout: float) -> float:
    """Poll presence on ``server`` until ``client_id`` is offline; the seconds it took."""
    started = time.monotonic()
    while (await api_presence(server, key, [client_id]))["online"]:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{client_id} still online on {server} after {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_connect_on_a_is_online_on_b_and_a_clean_disconnect_at_once(a, b, api_key, connect, uid):
    client = await connect(a, uid("alice"))
    await wait_online(b, api_key, {client.client_id: 1}, timeout=1.0)
    assert await api_presence(a, api_key, [client.client_id]) == {
        "online": [client.client_id],
        "connections": {client.client_id: 1},
    }

    await client.close()

    # At once: well within one heartbeat, not when the TTL runs out.
    assert await wait_offline(b, api_key, client.client_id, timeout=0.5) < 0.5
    assert await api_presence(a, api_key, [client.client_id]) == {"online": [], "connections": {}}


async def test_connections_on_both_processes_add_up(a, b, api_key, connect, uid):
    target, single = uid("devices"), uid("single")
    on_a = [await connect(a, target), await connect(a, target)]
    on_b = await connect(b, target)
    await connect(b, single)
    await wait_online(a, api_key, {target: 3, single: 1})

    for reader in (a, b):
        assert await api_presence(reader, api_key, [target, single]) == {
            "online": [target, single],
            "connections": {target: 3, single: 1},
        }

    await on_a[0].close()
    await wait_online(b, api_key, {target: 2, single: 1}, timeout=0.5)
    await on_b.close()
    await wait_online(b, api_key, {target: 1, single: 1}, timeout=0.5)
    await on_a[1].close()
    await wait_online(a, api_key, {target: 0, single: 1}, timeout=0.5)


PRESENCE_SCRIPT = """
import json
from relay import presence
ids = {ids!r}
print(json.dumps({{
    "connections": presence.connections(ids),
    "online": sorted(presence.online(ids)),
    "is_online": [presence.is_online(i) for i in ids],
    "all": {{k: v for k, v in presence.connections().items() if k in ids}},
}}))
"""


async def test_python_presence_api_sees_both_processes(a, b, api_key, connect, uid):
    two, one, none = uid("two"), uid("one"), uid("none")
    await connect(a, two)
    await connect(b, two)
    await connect(b, one)
    await wait_online(a, api_key, {two: 2, one: 1})

    result = await asyncio.to_thread(
        run_manage_sync, b, "shell", "-v", "0", "-c", PRESENCE_SCRIPT.format(ids=[two, one, none])
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "connections": {two: 2, one: 1},
        "online": sorted([two, one]),
        "is_online": [True, True, False],
        "all": {two: 2, one: 1},
    }


async def test_relay_send_reports_targets_and_online(a, b, api_key, connect, uid):
    on_a, on_b, offline = uid("on-a"), uid("on-b"), uid("offline")
    client_a, client_b = await connect(a, on_a), await connect(b, on_b)
    await wait_online(a, api_key, {on_a: 1, on_b: 1})

    result = await run_relay_send(b, on_a, on_b, offline, on_a, "--payload", '{"n": 1}')

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"Sent to {on_a} (online, offset 1), {on_b} (online, offset 1), {offline} (not online, offset 1)."
    )
    assert await client_a.recv_json() == {"n": 1}
    assert await client_b.recv_json() == {"n": 1}


async def test_sigkilled_process_stops_counting_within_the_ttl(start_server, a, b, api_key, connect, uid):
    doomed = start_server(name="doomed", env=PRESENCE_ENV)
    victim, survivor = uid("victim"), uid("survivor")
    victim_client = await connect(doomed, victim)
    await connect(a, survivor)
    await wait_online(b, api_key, {victim: 1, survivor: 1})
    await asyncio.sleep(HEARTBEAT * 1.5)  # a heartbeat or two after the connect: still counted

    os.kill(doomed.process.pid, signal.SIGKILL)
    await asyncio.to_thread(doomed.process.wait, 5)
    killed = time.monotonic()

    # Its last heartbeat is at most one period old: it still counts right after the kill...
    assert await api_presence(b, api_key, [victim, survivor]) == {
        "online": [victim, survivor],
        "connections": {victim: 1, survivor: 1},
    }
    # ...and stops counting once that heartbeat is TTL old: 2 to 3 s after the kill.
    await wait_offline(b, api_key, victim, timeout=TTL + 2)
    gone_after = time.monotonic() - killed
    assert TTL - HEARTBEAT - 0.5 <= gone_after <= TTL + 1, gone_after
    assert await api_presence(a, api_key, [victim, survivor]) == {
        "online": [survivor],
        "connections": {survivor: 1},
    }
    with pytest.raises(ConnectionClosed) as closed:
        await victim_client.ws.recv()
    assert closed.value.rcvd is None  # the process died: no close frame


async def test_a_process_killed_right_after_a_connect_leaves_no_key_that_never_expires(
    start_server, redis_url, connect, uid
):
    """README: a node's presence hash expires after RELAY_PRESENCE_TTL, so a crash leaves nothing behind.

    Default timings (heartbeat 10 s, TTL 30 s): the client connects and the process is
    killed well before its next heartbeat.
    """
    early = start_server(name="early-death")
    client = await connect(early, uid("short-lived"))
    with redis.Redis.from_url(redis_url, decode_responses=True) as db:
        [node_key] = db.keys(keys.node_key(REDIS_KEY_PREFIX, f"*:{early.process.pid}:*"))
        deadline = time.monotonic() + 2
        while db.hget(node_key, client.client_id) != "1" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert db.hget(node_key, client.client_id) == "1"

        os.kill(early.process.pid, signal.SIGKILL)
        await asyncio.to_thread(early.process.wait, 5)

        ttl = db.ttl(node_key)
        if ttl == -1:
            db.delete(node_key)  # do not leave the leak in the shared Redis
        assert 0 < ttl <= 30, f"{node_key} of a dead process has TTL {ttl}: it will never expire"
