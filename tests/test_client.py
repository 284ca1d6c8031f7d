"""relay.client against a scripted server (a websockets server the test plays the relay with).

What a real relay cannot be made to do on cue: a gap, a new epoch, a frame left unanswered,
a refusal at will. ``tests/e2e/test_client.py`` runs the client against real daphne.
"""

import asyncio
import json
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve

from relay.client import Ack, Delivery, Position, RelayClient, RelayError, backoff_delay

pytestmark = pytest.mark.timeout(20)


class FakeRelay:
    """A relay.v1 server whose every connection the test drives: ``ws = await relay.accepted()``."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.refuse = 0  # handshakes to answer with 403
        self.handshakes: list[tuple[dict[str, list[str]], str | None]] = []
        self.url = ""

    def process_request(self, connection, request):
        query = parse_qs(urlsplit(request.path).query, keep_blank_values=True)
        self.handshakes.append((query, request.headers.get("Authorization")))
        if self.refuse:
            self.refuse -= 1
            return connection.respond(HTTPStatus.FORBIDDEN, "refused\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        await self.connections.put(ws)
        await ws.wait_closed()

    async def accepted(self) -> ServerConnection:
        return await asyncio.wait_for(self.connections.get(), 5)


@pytest.fixture
async def relay():
    fake = FakeRelay()
    async with serve(
        fake.handler, "127.0.0.1", 0, subprotocols=["relay.v1"], process_request=fake.process_request
    ) as server:
        port = server.sockets[0].getsockname()[1]
        fake.url = f"ws://127.0.0.1:{port}/ws"
        yield fake


async def wait_state(client: RelayClient, state: str) -> None:
    """Wait until ``client.state`` is ``state`` (2 s at most)."""
    for _ in range(200):
        if client.state == state:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{client} is {client.state}, not {state}")


async def frame(ws: ServerConnection) -> dict:
    """The next frame the client sent."""
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def send(ws: ServerConnection, data: dict) -> None:
    await ws.send(json.dumps(data))


@pytest.fixture
async def clients():
    """Factory of RelayClients (fast backoff) closed after the test."""
    made: list[RelayClient] = []

    def make(url: str, **options) -> RelayClient:
        client = RelayClient(url, **{"backoff_min": 0.01, "backoff_max": 0.05, **options})
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def test_it_connects_with_relay_v1_the_token_as_a_header_and_asks_for_its_position(relay, clients):
    tokens = iter(["t1", "t2"])
    client = clients(relay.url + "?x=1", token=lambda: next(tokens))
    await client.open()
    ws = await relay.accepted()
    assert ws.subprotocol == "relay.v1"
    await ws.close(1001)
    await relay.accepted()
    assert relay.handshakes == [({"x": ["1"], "since": [""]}, "Bearer t1"), ({"x": ["1"], "since": [""]}, "Bearer t2")]


async def test_async_tokens_and_the_development_id(relay, clients):
    async def token():
        return "async-token"

    await clients(relay.url, token=token).open()
    await clients(relay.url, client_id=42).open()
    assert relay.handshakes == [({"since": [""]}, "Bearer async-token"), ({"id": ["42"], "since": [""]}, None)]
    with pytest.raises(ValueError, match="not a client id"):
        RelayClient(relay.url, client_id="a b")


async def test_resume_dedup_and_the_position_after_a_reconnect(relay, clients):
    events = []
    client = clients(relay.url, client_id="a", on_event=lambda name, detail: events.append((name, detail)))
    await client.open()
    ws = await relay.accepted()
    await send(
        ws, {"type": "recovered", "recovered": False, "replayed": 0, "reason": "no_position", "epoch": "e", "offset": 4}
    )
    await send(ws, {"type": "message", "from": "b", "offset": 5, "epoch": "e", "payload": 5})
    assert await client.recv(timeout=5) == Delivery("b", 5, 5, "e")
    await ws.close(1001)
    ws = await relay.accepted()
    assert relay.handshakes[-1][0]["since"] == ["e:5"]
    await send(ws, {"type": "message", "from": "b", "offset": 5, "epoch": "e", "payload": "again"})
    await send(ws, {"type": "message", "from": "b", "offset": 6, "epoch": "e", "payload": 6})
    await send(ws, {"type": "recovered", "recovered": True, "replayed": 1, "epoch": "e", "offset": 6})
    assert await client.recv(timeout=5) == Delivery("b", 6, 6, "e")
    assert client.position == Position("e", 6)
    recovered = [detail for name, detail in events if name == "recovered"]
    assert recovered[1] == {"recovered": True, "replayed": 1, "reason": None, "epoch": "e", "offset": 6, "live": False}


async def test_a_gap_reconnects_from_the_last_offset_and_a_new_epoch_is_told(relay, clients):
    events = []
    client = clients(
        relay.url, client_id="a", position="e:1", on_event=lambda name, detail: events.append((name, detail))
    )
    await client.open()
    ws = await relay.accepted()
    assert relay.handshakes[-1][0]["since"] == ["e:1"]
    await send(ws, {"type": "message", "from": "b", "offset": 3, "epoch": "e", "payload": 3})
    ws = await relay.accepted()  # the gap: given up, resumed from e:1
    assert relay.handshakes[-1][0]["since"] == ["e:1"]
    assert [d["reason"] for name, d in events if name == "reconnecting"] == ["gap: offset 3 after 1"]
    await send(ws, {"type": "message", "from": None, "offset": 1, "epoch": "new", "payload": "after a flush"})
    assert await client.recv(timeout=5) == Delivery(None, "after a flush", 1, "new")
    live = [d for name, d in events if name == "recovered"]
    assert live == [
        {"recovered": False, "replayed": 0, "reason": "epoch_changed", "epoch": "new", "offset": 1, "live": True}
    ]
    with pytest.raises(ValueError):
        Position.parse("no-offset")


async def test_send_settles_on_its_ack_and_on_forbidden_errors(relay, clients):
    client = clients(relay.url, client_id="a")
    await client.open()
    ws = await relay.accepted()

    sent = asyncio.ensure_future(client.send(["a", "b", 2, "2"], {"x": 1}))
    request = await frame(ws)
    assert request == {"targets": ["a", "b", 2, "2"], "payload": {"x": 1}, "id": request["id"]}
    await send(ws, {"type": "error", "code": "forbidden", "detail": "You may not send to b.", "ref": request["id"]})
    await send(ws, {"type": "error", "code": "forbidden", "detail": "You may not send to 2.", "ref": request["id"]})
    await asyncio.sleep(0.05)
    assert not sent.done(), "three distinct targets, two refused: the ack for the third is awaited"
    await send(ws, {"type": "ack", "ref": request["id"], "offsets": {"a": 7}})
    ack = await sent
    assert ack.offsets == {"a": 7}
    assert [error.detail for error in ack.forbidden] == ["You may not send to b.", "You may not send to 2."]

    refused = asyncio.ensure_future(client.send([2, "2", "bob"], None))
    request = await frame(ws)
    for target in ("2", "bob"):
        await send(
            ws, {"type": "error", "code": "forbidden", "detail": f"You may not send to {target}.", "ref": request["id"]}
        )
    with pytest.raises(RelayError) as error:
        await refused
    assert (error.value.code, len(error.value.errors)) == ("forbidden", 2)


def unavailable(target: str, ref: int) -> dict:
    """The error for one target whose Redis could not take the frame, as the relay sends it."""
    detail = f"The relay cannot reach the Redis of {target} now; the message was not delivered to it."
    return {"type": "error", "code": "unavailable", "detail": detail, "ref": ref, "target": target}


async def test_send_settles_on_the_ack_after_unavailable_errors_naming_their_targets(relay, clients):
    """With shards, a frame may reach the targets on one Redis and not those on another that is down."""
    client = clients(relay.url, client_id="a")
    await client.open()
    ws = await relay.accepted()

    sent = asyncio.ensure_future(client.send(["x", "y", "z"], "hi"))
    request = await frame(ws)
    await send(ws, unavailable("y", request["id"]))
    await asyncio.sleep(0.05)
    assert not sent.done(), "one target missed it: the ack for the others is awaited"
    await send(ws, {"type": "ack", "ref": request["id"], "offsets": {"x": 2, "z": 5}})
    ack = await sent
    assert ack.offsets == {"x": 2, "z": 5} and ack.forbidden == ()
    assert [(error.code, error.target) for error in ack.unavailable] == [("unavailable", "y")]

    nobody = asyncio.ensure_future(client.send(["x", "y"], "hi"))
    request = await frame(ws)
    await send(ws, {"type": "error", "code": "forbidden", "detail": "You may not send to x.", "ref": request["id"]})
    await send(ws, unavailable("y", request["id"]))
    with pytest.raises(RelayError) as error:
        await nobody
    assert (error.value.code, [e.code for e in error.value.errors]) == ("unavailable", ["forbidden", "unavailable"])

    one = asyncio.ensure_future(client.send("y", "hi"))
    await send(ws, unavailable("y", (await frame(ws))["id"]))
    with pytest.raises(RelayError) as error:
        await one
    assert (error.value.code, error.value.target) == ("unavailable", "y")
    assert "not delivered to it" in error.value.detail

    whole = asyncio.ensure_future(client.send(["x", "y"], "hi"))  # an unavailable about the whole frame
    detail = "The relay cannot reach its other processes now; the message reached this process only."
    await send(ws, {"type": "error", "code": "unavailable", "detail": detail, "ref": (await frame(ws))["id"]})
    with pytest.raises(RelayError) as error:
        await whole
    assert (error.value.code, error.value.target, error.value.detail) == ("unavailable", None, detail)


async def test_calls_errors_and_events(relay, clients):
    events = []
    client = clients(relay.url, client_id="a", on_event=lambda name, detail: events.append((name, detail)))
    await client.open()
    ws = await relay.accepted()
    call = asyncio.ensure_future(client.call("chat.history", {"room": "lobby"}))
    request = await frame(ws)
    assert request == {"call": "chat.history", "payload": {"room": "lobby"}, "id": request["id"]}
    await send(ws, {"type": "error", "code": "rate_limited", "detail": "slow down", "ref": 999})
    await send(ws, {"type": "reply", "ref": request["id"], "payload": [1, 2]})
    assert await call == [1, 2]
    rejected = asyncio.ensure_future(client.send("b", "x"))
    request = await frame(ws)
    await send(ws, {"type": "error", "code": "quota_exceeded", "detail": "no more", "ref": request["id"]})
    with pytest.raises(RelayError, match="quota_exceeded: no more"):
        await rejected
    assert ("error", {"code": "rate_limited", "detail": "slow down", "ref": 999}) in events


async def test_timeouts_lost_connections_and_the_bounded_queue(relay, clients):
    client = clients(relay.url, client_id="a", queue_size=1, timeout=0.1)
    await client.open()
    ws = await relay.accepted()
    with pytest.raises(RelayError, match="no answer within 0.1 s: it may still have been relayed"):
        await client.send("b", 1)
    pending = asyncio.ensure_future(client.call("slow", timeout=5))
    await frame(ws)
    await frame(ws)
    relay.refuse = 100  # going away, then refusing: the client waits, disconnected
    await ws.close(1001)
    with pytest.raises(RelayError) as lost:
        await pending
    assert lost.value.code == "disconnected"
    queued = asyncio.ensure_future(client.send("b", "queued", timeout=5))
    await asyncio.sleep(0.01)
    with pytest.raises(RelayError) as full:
        await client.send("b", "one too many")
    assert full.value.code == "queue_full"
    relay.refuse = 0
    ws = await relay.accepted()
    request = await frame(ws)
    assert request["payload"] == "queued"
    await send(ws, {"type": "ack", "ref": request["id"], "offsets": {}})
    assert await queued == Ack({})
    relay.refuse = 100
    await ws.close(1001)
    await wait_state(client, "reconnecting")
    with pytest.raises(RelayError, match="it was never sent"):
        await client.send("b", "never", timeout=0.05)


async def test_a_refusal_stops_after_two_but_not_while_the_server_is_going_away(relay, clients):
    relay.refuse = 2
    client = clients(relay.url, client_id="a")
    with pytest.raises(RelayError) as refused:
        await client.open()
    assert refused.value.code == "refused" and "HTTP 403" in refused.value.detail
    assert client.state == "closed" and client.closed_because["refused"]

    again = clients(relay.url, client_id="a")
    await again.open()
    ws = await relay.accepted()
    relay.refuse = 4  # a proxy refuses handshakes until the server is back
    await ws.close(1001)
    await relay.accepted()
    await wait_state(again, "open")


async def test_no_reconnect_after_1008_and_reading_after_close(relay, clients):
    client = clients(relay.url, client_id="a")
    await client.open()
    ws = await relay.accepted()
    await send(ws, {"type": "message", "from": "b", "payload": "last"})
    await ws.close(1008)
    await wait_state(client, "closed")
    assert client.closed_because == {"code": 1008, "reason": "", "refused": False}
    assert [delivery.payload async for delivery in client] == ["last"]
    with pytest.raises(RelayError, match="closed"):
        await client.send("b", 1)
    assert len(relay.handshakes) == 1


async def test_backoff_is_full_jitter_within_the_cap():
    assert all(0 <= backoff_delay(0) <= 0.5 for _ in range(200))
    assert all(0 <= backoff_delay(10) <= 20 for _ in range(200))
    assert max(backoff_delay(3, 0.5, 20) for _ in range(500)) > 3.5
    assert len({backoff_delay(1) for _ in range(50)}) == 50


def test_the_client_needs_no_django_and_the_relay_does_not_load_the_client():
    import subprocess
    import sys

    code = (
        "import sys, relay.client; print('django' in sys.modules);"
        "del sys.modules['relay.client'], sys.modules['websockets'];"
        "import django; django.setup(); import relay.api, relay.routing, relay.management.commands.relay_listen;"
        "print('relay.client' in sys.modules, 'websockets' in sys.modules)"
    )
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.stdout.split() == ["False", "False", "False"], result.stderr


async def test_a_failing_token_callback_is_retried_and_a_bad_url_stops(relay, clients):
    calls = []

    def token():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("token service down")
        return "t"

    events = []
    client = clients(relay.url, token=token, on_event=lambda name, detail: events.append((name, detail)))
    await client.open()
    assert ("error", {"code": "token_failed", "detail": "RuntimeError: token service down", "ref": None}) in events
    assert relay.handshakes == [({"since": [""]}, "Bearer t")]

    bad = clients("http://not-a-websocket-url", client_id="a")
    with pytest.raises(RelayError) as stopped:
        await bad.open()
    assert stopped.value.code == "closed" and "InvalidURI" in stopped.value.detail
