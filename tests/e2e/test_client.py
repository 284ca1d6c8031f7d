"""relay.client and ``manage.py relay_listen`` against real daphne processes and Redis.

Send with its ack (and the send policy's ``forbidden``), calls, reconnecting with jitter
after a drain, resuming after a restart on the same port, a refused handshake; and
relay_listen printing what a client id receives.
"""

import asyncio
import json
import signal
import subprocess
import sys

import pytest

from relay.client import Ack, Delivery, RelayClient, RelayError

from .conftest import REPO, TEST_SECRET, run_relay_send

pytestmark = pytest.mark.timeout(60)

#: The README's Python client recipe, run as a script against a server like ``make run``'s
#: (only the port is the test server's).
PYTHON_CLIENT_RECIPE = """\
import asyncio

from relay.client import RelayClient


async def main():
    async with RelayClient("ws://127.0.0.1:8000/ws", client_id="bob") as relay:
        ack = await relay.send(["bob"], {"text": "hi"})  # settles on the relay's ack
        print("ack", ack.offsets)
        async for message in relay:  # deliveries, until the client is closed
            print(message.sender, message.payload, message.offset)
            break


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def chat_server(start_server):
    """Redis and the example chat (its chat.history call)."""
    return start_server(name="client", env={"RELAY_EXAMPLES": "1"})


@pytest.fixture(scope="module")
def same_id_only(start_server):
    """The send policy that lets a client reach only its own id."""
    return start_server(name="client-policy", env={"DJANGO_SETTINGS_MODULE": "tests.e2e.send_policy_settings"})


def token_for(client_id: str) -> str:
    """A token signed like the servers' (their SECRET_KEY is TEST_SECRET)."""
    import time

    import jwt

    return jwt.encode({"sub": client_id, "exp": int(time.time()) + 600}, TEST_SECRET, algorithm="HS256")


def test_the_readme_recipe_runs_against_make_run(start_server):
    server = start_server(redis=False, name="client-make-run", env={"RELAY_EXAMPLES": "1"})
    script = PYTHON_CLIENT_RECIPE.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ack {}\nbob {'text': 'hi'} None\n"


async def wait_for_events(events: list, name: str, count: int, timeout: float = 5) -> list[dict]:
    """The details of the ``name`` events once there are ``count`` of them (fails after ``timeout`` s)."""
    for _ in range(int(timeout / 0.05)):
        found = [detail for event, detail in events if event == name]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} {name} events expected, got {events}")


async def test_send_is_acked_with_offsets_and_delivered_with_them(chat_server, uid):
    alice_id, bob_id = uid("alice"), uid("bob")
    async with (
        RelayClient(chat_server.url(), token=lambda: token_for(alice_id)) as alice,
        RelayClient(chat_server.url(), token=token_for(bob_id)) as bob,
    ):
        ack = await alice.send([bob_id, bob_id], {"text": "hi"})
        assert ack == Ack({bob_id: 1})
        delivery = await bob.recv(timeout=5)
        assert delivery == Delivery(alice_id, {"text": "hi"}, 1, bob.position.epoch)
        history = await alice.call("chat.history", {"room": uid("room")})
        assert history == []
        with pytest.raises(RelayError) as rejected:
            await alice.send([bob_id], {"type": "chat", "room": "r", "text": " "})
        assert (rejected.value.code, rejected.value.detail) == ("empty_message", "Write something first.")
        with pytest.raises(RelayError) as unknown:
            await alice.call("no.such.call")
        assert unknown.value.code == "unknown_call"


async def test_forbidden_targets_get_their_errors_and_the_others_the_message(same_id_only, uid):
    me, other = uid("me"), uid("other")
    async with RelayClient(same_id_only.url(), client_id=me) as client:
        ack = await client.send([me, other], "to both")
        assert ack.offsets == {me: 1}
        assert [error.code for error in ack.forbidden] == ["forbidden"]
        assert (await client.recv(timeout=5)).payload == "to both"
        with pytest.raises(RelayError) as refused:
            await client.send([other, uid("third")], "to nobody")
        assert refused.value.code == "forbidden"
        assert len(refused.value.errors) == 2


async def test_a_refused_handshake_raises_after_two_tries_without_retrying_forever(chat_server):
    events = []
    client = RelayClient(chat_server.url(), token="not-a-token", on_event=lambda name, detail: events.append(name))
    with pytest.raises(RelayError) as refused:
        await client.open()
    assert refused.value.code == "refused"
    assert "HTTP 403" in refused.value.detail
    assert events == ["connecting", "reconnecting", "connecting", "closed"]
    assert client.closed_because["refused"] is True


async def test_frames_sent_while_disconnected_go_out_after_the_reconnect(chat_server, uid):
    me = uid("queue")
    async with RelayClient(chat_server.url(), client_id=me, backoff_max=1) as client:
        client.drop()
        ack = await client.send([me], "queued")  # sent on the next connection
        assert list(ack.offsets) == [me]
        assert (await client.recv(timeout=5)).payload == "queued"


async def test_the_client_resumes_after_a_restart_on_the_same_port(start_server, uid):
    server = start_server(name="client-restart")
    me = uid("resume")
    events = []
    client = RelayClient(server.url(), client_id=me, backoff_max=1, on_event=lambda name, d: events.append((name, d)))
    await client.open()
    try:
        await client.send([me], "before")
        assert (await client.recv(timeout=5)).offset == 1
        server.process.kill()
        await asyncio.to_thread(server.process.wait)
        sent = await run_relay_send(server, me, "--payload", '"while it was down"')
        assert sent.returncode == 0, sent.stderr
        await asyncio.to_thread(start_server, name="client-restart-again", port=server.port)
        delivery = await client.recv(timeout=15)
        assert (delivery.payload, delivery.offset, delivery.sender) == ("while it was down", 2, None)
        # The replayed entry is handed over before the frame saying how the resume went.
        recovered = await wait_for_events(events, "recovered", 2)
        assert [(r["recovered"], r["replayed"]) for r in recovered] == [(False, 0), (True, 1)]
        assert recovered[0]["reason"] == "no_position"
    finally:
        await client.close()


async def test_a_drain_sends_the_clients_back_after_jittered_delays(start_server, uid):
    server = start_server(name="client-drain")
    first_delays: dict[int, float] = {}

    def recorder(n):
        # A client that comes back while the process still drains is closed with 1001 again:
        # each client's first delay is the one the drain chose.
        def record(name, detail):
            if name == "reconnecting" and detail["code"] == 1001:
                first_delays.setdefault(n, detail["delay"])

        return record

    clients = [
        RelayClient(server.url(), client_id=uid(f"d{n}"), backoff_max=2, on_event=recorder(n)) for n in range(12)
    ]
    await asyncio.gather(*(client.open() for client in clients))
    try:
        await asyncio.to_thread(server.stop)  # SIGTERM: 1001 to every client
        delays = list(first_delays.values())
        assert len(delays) == 12
        assert all(0 <= delay <= 0.5 for delay in delays), delays
        assert len(set(delays)) == 12, delays
        await asyncio.to_thread(start_server, name="client-drain-again", port=server.port)
        for client in clients:
            for _ in range(200):
                if client.state == "open":
                    break
                await asyncio.sleep(0.05)
        assert {client.state for client in clients} == {"open"}
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def test_a_frozen_server_is_noticed_by_the_keepalive_pings(start_server, uid):
    server = start_server(name="client-frozen")
    reconnecting = asyncio.Event()
    reasons = []

    def record(name, detail):
        if name == "reconnecting":
            reasons.append((detail["code"], detail["reason"]))
            reconnecting.set()

    client = RelayClient(
        server.url(), client_id=uid("frozen"), ping_interval=0.3, ping_timeout=0.3, close_timeout=0.3, on_event=record
    )
    await client.open()
    server.process.send_signal(signal.SIGSTOP)
    try:
        await asyncio.wait_for(reconnecting.wait(), 5)
    finally:
        server.process.send_signal(signal.SIGCONT)
    try:
        assert reasons[0] == (1006, "keepalive ping timeout"), reasons
        for _ in range(200):
            if client.state == "open":
                break
            await asyncio.sleep(0.05)
        assert client.state == "open"
    finally:
        await client.close()


# --- manage.py relay_listen ------------------------------------------------------------


def listen(server, *args: str) -> subprocess.Popen:
    """``manage.py relay_listen ARGS`` with the server's settings (so its RELAY_TOKEN_SECRET)."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "relay_listen", *args],
        cwd=REPO,
        env=server.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_relay_listen_prints_one_json_line_per_delivery(chat_server, uid):
    me = uid("listen")
    listener = listen(chat_server, me, "--url", chat_server.url(), "--count", "2")
    try:
        connected = await asyncio.to_thread(listener.stderr.readline)
        assert connected.startswith("relay_listen: "), connected
        await chat_server.wait_for_events("connect", client=me)
        async with RelayClient(chat_server.url(), client_id=uid("sender")) as sender:
            await sender.send([me], {"n": 1})
        assert (await run_relay_send(chat_server, me, "--payload", '"two"')).returncode == 0
        out, err = await asyncio.to_thread(listener.communicate, timeout=20)
    finally:
        listener.kill()
    assert listener.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    epoch = lines[0]["epoch"]
    assert lines == [
        {"from": uid("sender"), "payload": {"n": 1}, "offset": 1, "epoch": epoch},
        {"from": None, "payload": "two", "offset": 2, "epoch": epoch},
    ]
    assert chat_server.events("connect", client=me), "it connected as the id, with a token minted for it"


async def test_relay_listen_resumes_from_since(chat_server, uid):
    me = uid("since")
    async with RelayClient(chat_server.url(), client_id=me) as client:
        first = await client.send([me], "one")
        await client.send([me], "two")
        epoch = (await client.recv(timeout=5)).epoch
    listener = listen(
        chat_server, me, "--url", chat_server.url(), "--count", "1", "--since", f"{epoch}:{first.offsets[me]}"
    )
    out, err = await asyncio.to_thread(listener.communicate, timeout=20)
    assert listener.returncode == 0, err
    assert [json.loads(line)["payload"] for line in out.splitlines()] == ["two"]
    assert "replayed 1" in err


async def test_relay_listen_with_another_secret_is_refused_with_a_clear_error(chat_server, uid):
    listener = subprocess.run(
        [sys.executable, "manage.py", "relay_listen", uid("x"), "--url", chat_server.url()],
        cwd=REPO,
        env={**chat_server.env, "RELAY_TOKEN_SECRET": "another-secret-another-secret-another-secret"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listener.returncode == 1
    assert "the server refused the handshake" in listener.stderr
    assert "RELAY_TOKEN_SECRET" in listener.stderr
    assert listener.stdout == ""
