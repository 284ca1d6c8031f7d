"""Operations, end to end: /relay/healthz, /relay/metrics (one process and several), and the
relay's ``event=...`` log lines (the README's "Operations")."""

import asyncio
import http.client
import os
import re
import signal
import socket
import time

import pytest
from websockets.exceptions import InvalidStatus

from .conftest import (
    LIVE_SERVERS,
    START_TIMEOUT,
    Server,
    free_port,
    http_get,
    http_get_sync,
    open_ws,
    raw_websocket,
    read_metrics,
    site_env,
)

METRICS_TOKEN = "e2e-metrics-token-0123456789"
FORBIDDEN = {"error": {"code": "forbidden", "detail": "Metrics are not public."}}


# --- health ------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["server", "memory_server"])
async def test_healthz_is_ok_on_redis_and_on_the_in_memory_layer(request, asgi_server, layer):
    server = request.getfixturevalue(layer)
    response = await http_get(server, "/relay/healthz")
    assert response.status == 200, response
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


#: An ACL user that is enough for channels-redis's pub/sub layer, not for the relay's own
#: links (which need +info, +hset, ...).
PUBSUB_ONLY_USER = ("--user", "pubonly", "on", ">pw", "~*", "&*", "+@pubsub", "+@connection")


async def test_a_fresh_process_whose_redis_links_cannot_work_is_unhealthy_before_any_socket(
    start_server, private_redis
):
    """The findings: before the first WebSocket no hub (nor its Redis links) had started, so
    /relay/healthz answered 200; and each unhealthy probe logged three lines."""
    store = private_redis(PUBSUB_ONLY_USER)
    env = {"REDIS_URL": f"redis://pubonly:pw@127.0.0.1:{store.port}/0", "RELAY_METRICS_TOKEN": METRICS_TOKEN}
    server = start_server(name="pubsub-only", env=env, probe=False)  # it has served no WebSocket

    answers = [await http_get(server, "/relay/healthz") for _ in range(3)]

    assert [(a.status, a.json()) for a in answers] == [(503, {"status": "unavailable", "reason": "redis"})] * 3
    detailed = await http_get(server, "/relay/healthz", {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert "+info" in detailed.json()["detail"], detailed
    # One line for four probes, and none of Django's "Service Unavailable".
    assert [event["reason"] for event in server.events("unhealthy")] == ["redis"], server.log[-3000:]
    assert server.log_lines("Service Unavailable") == []


# --- metrics of one process -------------------------------------------------------------


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What changed in the relay's samples between two reads (a new sample counts from 0).

    ``*_created`` samples (when a label value was first seen) are left out.
    """
    return {
        name: value - before.get(name, 0.0)
        for name, value in after.items()
        if name.startswith("relay_")
        and not name.partition("{")[0].endswith("_created")
        and value != before.get(name, 0.0)
    }


async def refuse_without_identity(server) -> None:
    """One handshake with no identity: 403."""
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(server)
    assert refused.value.response.status_code == 403


async def test_metrics_count_a_scripted_session_exactly(server, connect, uid):
    before = await read_metrics(server)
    for name in (
        "relay_connections_open",
        "relay_connects_total",
        "relay_deliveries_total",
        "relay_frames_received_total",
        'relay_delivery_latency_seconds_bucket{le="+Inf"}',
    ):
        assert name in before, name

    alice = await connect(server, uid("alice"))
    bob = await connect(server, uid("bob"))
    await alice.send_json({"targets": [bob.client_id], "payload": "hi"})
    assert await bob.recv_json() == "hi"
    await alice.send_text("not json")
    assert (await alice.recv_json())["error"]["code"] == "invalid_json"
    await refuse_without_identity(server)
    during = await read_metrics(server)

    changed = delta(before, during)
    latency = {name: changed.pop(name) for name in list(changed) if name.startswith("relay_delivery_latency")}
    assert changed == {
        "relay_connections_open": 2.0,
        "relay_connects_total": 2.0,
        "relay_frames_received_total": 2.0,
        "relay_deliveries_total": 1.0,
        'relay_errors_total{code="invalid_json"}': 1.0,
        'relay_handshakes_refused_total{reason="no_identity"}': 1.0,
    }
    # One frame was relayed: one observation, in every bucket from its latency up.
    assert latency.pop("relay_delivery_latency_seconds_count") == 1.0
    assert 0 < latency.pop("relay_delivery_latency_seconds_sum") < 1.0
    assert latency['relay_delivery_latency_seconds_bucket{le="+Inf"}'] == 1.0
    assert latency['relay_delivery_latency_seconds_bucket{le="1.0"}'] == 1.0
    assert set(latency.values()) == {1.0}, latency

    await alice.close()
    await bob.close()
    assert len(await server.wait_for_events("disconnect", client=bob.client_id)) == 1
    after = await read_metrics(server)
    assert after["relay_connections_open"] == before["relay_connections_open"]
    assert (
        after['relay_disconnects_total{reason="normal"}'] - before.get('relay_disconnects_total{reason="normal"}', 0.0)
        == 2.0
    )


@pytest.fixture(scope="module")
def token_server(start_server):
    """A server that allows no address to read metrics: only the token opens them."""
    return start_server(
        redis=False,
        name="metrics-token",
        env={"DJANGO_SETTINGS_MODULE": "tests.e2e.metrics_settings", "RELAY_METRICS_TOKEN": METRICS_TOKEN},
    )


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x", "Bearer "],
)
async def test_metrics_without_the_token_are_forbidden(token_server, authorization):
    headers = {"Authorization": authorization} if authorization else None
    response = await http_get(token_server, "/relay/metrics", headers)
    assert response.status == 403, response
    assert response.headers["content-type"] == "application/json"
    assert response.json() == FORBIDDEN


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
async def test_metrics_with_the_token(token_server, scheme):
    samples = await read_metrics(token_server, {"Authorization": f"{scheme} {METRICS_TOKEN}"})
    assert samples["relay_connections_open"] == 0.0
    assert samples["relay_connects_total"] == 1.0  # the readiness probe


# --- metrics of several processes -------------------------------------------------------


async def wait_for_metric(server, name: str, expected: float, timeout: float = 3.0) -> float:
    """Read ``name`` from the server's metrics until it equals ``expected`` (or time runs out)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = (await read_metrics(server)).get(name)
        if value == expected or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_metrics_of_processes_sharing_a_directory_add_up(start_server, connect, uid, tmp_path, how):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    p = start_server(name=f"multi-p-{how}", env=env)
    q = start_server(name=f"multi-q-{how}", env=env)
    on_p = [await connect(p, uid(f"p{i}")) for i in range(3)]
    on_q = [await connect(q, uid(f"q{i}")) for i in range(5)]

    for server in (p, q):
        assert await wait_for_metric(server, "relay_connections_open", 8.0) == 8.0, server
        samples = await read_metrics(server)
        assert samples["relay_connects_total"] == 10.0  # 8 clients and one readiness probe each

    if how == "sigterm":
        p.stop()
        assert p.process.returncode == 0
    else:
        os.kill(p.process.pid, signal.SIGKILL)
        assert await asyncio.to_thread(p.process.wait, 5) == -signal.SIGKILL
    # The next connect on the survivor forgets the processes that are gone.
    late = await connect(q, uid("late"))
    assert await wait_for_metric(q, "relay_connections_open", 6.0) == 6.0, (
        f"q counts {(await read_metrics(q))['relay_connections_open']} open connections; it has "
        f"{len(on_q) + 1} and p is gone ({how})"
    )
    assert late.ws.state.name == "OPEN"
    assert all(client.ws.state.name == "OPEN" for client in on_q)
    assert all(client.ws.state.name != "OPEN" for client in on_p)


# --- log lines -------------------------------------------------------------------------

TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "


async def test_log_lines_of_a_scripted_session(server, connect, uid):
    client = await connect(server, uid("logged"))
    client_port = client.ws.local_address[1]
    await client.send_text("{")
    assert (await client.recv_json())["error"]["code"] == "invalid_json"
    sock, answer = await asyncio.to_thread(raw_websocket, server.port, "")
    refused_port = sock.getsockname()[1]
    sock.close()
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    await server.wait_for_events("refused", peer=f"127.0.0.1:{refused_port}")
    await client.close()
    await server.wait_for_events("disconnect", client=client.client_id)

    ours = [
        re.sub(f"^{TIMESTAMP}", "", line)
        for line in server.log.splitlines()
        if f"client={client.client_id} " in line + " " or f"peer=127.0.0.1:{refused_port} " in line
    ]
    assert len(ours) == 4, ours
    assert ours[:3] == [
        f"DEBUG relay.server.consumers event=connect client={client.client_id} subprotocol=None "
        f"peer=127.0.0.1:{client_port}",
        f"INFO relay.server.consumers event=frame_refused client={client.client_id} code=invalid_json",
        f"INFO relay.identity.handshake event=refused peer=127.0.0.1:{refused_port} path=/ws reason=no_identity "
        'detail=""',
    ]
    assert re.fullmatch(
        rf"DEBUG relay\.server\.consumers event=disconnect client={client.client_id} code=1000 reason=normal "
        r"duration=\d+\.\d",
        ours[3],
    ), ours[3]


# --- issue 12: what /relay/healthz tells anyone, and whose address counts ----------------------

REDIS_PASSWORD = "e2e-ops-redis-password-0123456789"


@pytest.fixture
def locked_redis(private_redis):
    """A redis-server that wants a password the relay does not have (its errors name the server); its port."""
    return private_redis(args=("--requirepass", REDIS_PASSWORD), client={"password": REDIS_PASSWORD}).port


class HttpReadyServer(Server):
    """A server whose Redis will not let it accept sockets: ready once it answers HTTP at all."""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log
            try:
                http_get_sync(self, "/relay/healthz")
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{self} did not answer HTTP:\n{self.log}")


@pytest.fixture
def locked_redis_server(locked_redis, database_url, tmp_path):
    env = site_env(
        DATABASE_URL=database_url,
        REDIS_URL=f"redis://127.0.0.1:{locked_redis}/0",
        RELAY_METRICS_TOKEN=METRICS_TOKEN,
    )
    server = HttpReadyServer("locked-redis", free_port(), env, tmp_path / "locked-redis.log")
    LIVE_SERVERS.append(server)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        LIVE_SERVERS.remove(server)


async def test_healthz_tells_anyone_only_a_category_never_the_redis_address_or_its_error(
    locked_redis_server, locked_redis
):
    """The finding: /relay/healthz gave anyone the Redis address and its auth error text."""
    server = locked_redis_server

    public = await http_get(server, "/relay/healthz")

    assert public.status == 503, public
    body = public.json()
    assert body["status"] == "unavailable" and body["reason"] in {"channel_layer", "redis"}, body
    assert set(body) == {"status", "reason"}, body
    for secret in (str(locked_redis), "127.0.0.1", "NOAUTH", "Authentication", "AUTH"):
        assert secret not in public.text, public.text
    # The full reason is logged, and given to whoever holds the metrics token.
    assert server.events("unhealthy", reason=body["reason"]), server.log[-2000:]
    detailed = await http_get(server, "/relay/healthz", {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert detailed.status == 503
    assert detailed.json()["reason"] == body["reason"] and "auth" in detailed.json()["detail"].lower()
    print(f"\nhealthz: anyone gets {public.text}; the metrics token gets {detailed.text}")


def get_from(source: str, port: int, path: str, headers: dict[str, str]) -> int:
    """GET ``path`` from a connection whose own address is ``source`` (127.0.0.0/8 is all this host); the status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.fixture(scope="module")
def proxied_server(start_server):
    """The server believing X-Forwarded-For from anyone (daphne's --proxy-headers, as the README's unit
    ran it; uvicorn's with --forwarded-allow-ips '*'); nginx (the trusted proxy) on 127.0.0.1."""
    return start_server(name="proxied", env={"RELAY_TRUSTED_PROXIES": "127.0.0.1"}, proxy_headers=True)


async def test_x_forwarded_for_from_anyone_does_not_open_the_metrics(proxied_server):
    """The finding: a request from 127.0.0.3 with X-Forwarded-For: 127.0.0.1 read /relay/metrics."""
    forged = {"X-Forwarded-For": "127.0.0.1"}
    assert await asyncio.to_thread(get_from, "127.0.0.3", proxied_server.port, "/relay/metrics", forged) == 403
    assert await asyncio.to_thread(get_from, "127.0.0.3", proxied_server.port, "/relay/metrics", {}) == 403
    # The proxy (trusted) naming a loopback client: allowed, as that client would be.
    assert await asyncio.to_thread(get_from, "127.0.0.1", proxied_server.port, "/relay/metrics", forged) == 200
    # The proxy naming a client from elsewhere: that client's address counts, not the proxy's.
    outside = {"X-Forwarded-For": "203.0.113.9"}
    assert await asyncio.to_thread(get_from, "127.0.0.1", proxied_server.port, "/relay/metrics", outside) == 403
    if proxied_server.kind == "daphne":  # whose --proxy-headers believes anyone: the relay says so once
        assert len(proxied_server.log_lines("event=proxy_headers_ignored")) == 1


def refused_handshake_from(source: str, port: int, forwarded_for: str) -> int:
    """A handshake without an identity (refused, so logged) from ``source``; the local port it used."""
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as sock:
        sock.sendall(
            (
                f"GET /ws?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"X-Forwarded-For: {forwarded_for}\r\n\r\n"
            ).encode()
        )
        assert sock.recv(12) == b"HTTP/1.1 403"
        return sock.getsockname()[1]


async def test_a_forwarded_address_cannot_forge_fields_of_a_log_line(proxied_server, uid):
    """The finding: X-Forwarded-For wrote forged key=value fields into the peer= of log lines."""
    victim = uid("victim")
    forged = f"1.2.3.4 event=connect client={victim} subprotocol=relay.v1"

    port = await asyncio.to_thread(refused_handshake_from, "127.0.0.3", proxied_server.port, forged)
    (untrusted,) = await proxied_server.wait_for_events("refused", peer=f"127.0.0.3:{port}")
    assert untrusted["reason"] == "no_identity"  # the socket's own peer; the header was not believed

    await asyncio.to_thread(refused_handshake_from, "127.0.0.1", proxied_server.port, forged)
    (from_proxy,) = await proxied_server.wait_for_events("refused", peer=forged)
    assert from_proxy["event"] == "refused" and from_proxy["reason"] == "no_identity"
    (line,) = [line for line in proxied_server.log_lines("event=refused") if "1.2.3.4" in line]
    assert f'peer="{forged}"' in line  # one quoted field
    assert proxied_server.events("connect", client=victim) == []
