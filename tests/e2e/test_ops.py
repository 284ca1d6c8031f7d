"""Operations, end to end: /relay/healthz, /relay/metrics (one process and several), and the
relay's ``event=...`` log lines (the README's "Operations")."""

import asyncio
import os
import re
import signal

import pytest
from websockets.exceptions import InvalidStatus

from .conftest import http_get, open_ws, raw_websocket, read_metrics

METRICS_TOKEN = "e2e-metrics-token-0123456789"
FORBIDDEN = {"error": {"code": "forbidden", "detail": "Metrics are not public."}}


# --- health ------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["server", "memory_server"])
async def test_healthz_is_ok_on_redis_and_on_the_in_memory_layer(request, layer):
    server = request.getfixturevalue(layer)
    response = await http_get(server, "/relay/healthz")
    assert response.status == 200, response
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


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
        f"INFO relay.server.consumers event=connect client={client.client_id} subprotocol=None "
        f"peer=127.0.0.1:{client_port}",
        f"INFO relay.server.consumers event=frame_refused client={client.client_id} code=invalid_json",
        f"INFO relay.identity.handshake event=refused peer=127.0.0.1:{refused_port} path=/ws reason=no_identity "
        "detail=''",
    ]
    assert re.fullmatch(
        rf"INFO relay\.server\.consumers event=disconnect client={client.client_id} code=1000 reason=normal "
        r"duration=\d+\.\d",
        ours[3],
    ), ours[3]
