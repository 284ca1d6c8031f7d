"""Delivery history against real daphne processes and Redis: resume after an absence, races with
the replay, a window too small or expired, a restarted Redis, a killed process, acks and outages.

The servers run ``tests.e2e.history_settings`` (600 entries per id). ``Client.positions``
records the ``(epoch, offset)`` of every delivery a client received and checks that they
follow each other without a gap.
"""

import asyncio
import json
import os
import signal
import time
import uuid

import pytest
import redis
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import NO_RATE_LIMIT, SUBPROTOCOL_V1, Client, Server, open_ws, run_manage_sync

HISTORY_SETTINGS = "tests.e2e.history_settings"
HISTORY = {"DJANGO_SETTINGS_MODULE": HISTORY_SETTINGS, **NO_RATE_LIMIT}

PUSH_SCRIPT = """
import relay
for n in range({first}, {last}):
    relay.send({target!r}, {{"n": n, "by": "push"}})
"""


@pytest.fixture(scope="module")
def a(start_server) -> Server:
    return start_server(name="history-a", env=HISTORY)


@pytest.fixture(scope="module")
def b(start_server) -> Server:
    return start_server(name="history-b", env=HISTORY)


def since_of(client: Client) -> str:
    """The ``since`` value that resumes after the last delivery ``client`` received."""
    epoch, offset = client.positions[-1]
    return f"{epoch}:{offset}"


async def resume(connect, server: Server, client_id: str, since: str) -> Client:
    """A relay.v1 connection of ``client_id`` resuming after ``since``."""
    return await connect(server, client_id, subprotocol=SUBPROTOCOL_V1, query=f"since={since}")


async def learn_position(connect, server: Server, client_id: str) -> tuple[Client, dict]:
    """Connect with ``?since=`` (no position yet): the ``recovered`` frame says where the stream is."""
    client = await resume(connect, server, client_id, "")
    recovered = await client.recv_json()
    assert (recovered["type"], recovered["recovered"], recovered["reason"]) == ("recovered", False, "no_position")
    client.positions.append((recovered["epoch"], recovered["offset"]))
    return client, recovered


async def receive_until_recovered(client: Client, timeout: float = 20) -> tuple[list[dict], dict]:
    """The deliveries a resume replays, and the ``recovered`` frame after them."""
    replayed = []
    while True:
        frame = await client.recv_json(timeout)
        if frame["type"] == "recovered":
            return replayed, frame
        replayed.append(frame)


async def pushes(server: Server, target: str, first: int, last: int) -> None:
    """``relay.send`` to ``target`` for n in [first, last), from a management shell (another process)."""
    result = await asyncio.to_thread(
        run_manage_sync, server, "shell", "-v", "0", "-c", PUSH_SCRIPT.format(first=first, last=last, target=target)
    )
    assert result.returncode == 0, result.stderr


async def drain_acks(sender: Client, count: int) -> list[dict]:
    """The ``count`` acks a sender got, checked."""
    acks = await sender.recv_many(count, timeout=20)
    assert all(frame["type"] == "ack" for frame in acks), [f for f in acks if f["type"] != "ack"][:3]
    return acks


async def test_a_client_away_gets_all_500_it_missed_in_order_then_live_ones(a, b, connect, uid):
    target = uid("away")
    client, _ = await learn_position(connect, a, target)
    sender = await connect(b, uid("sender"), subprotocol=SUBPROTOCOL_V1)
    await client.close()

    for n in range(250):  # client frames, from another process than the one the target was on
        await sender.send_json({"targets": [target], "payload": {"n": n, "by": "frame"}, "id": n})
    await drain_acks(sender, 250)
    await pushes(a, target, 250, 500)  # server pushes (relay.send)

    resumed = await resume(connect, b, target, since_of(client))
    resumed.positions = list(client.positions)  # the offsets go on from where they stopped
    replayed, recovered = await receive_until_recovered(resumed)
    assert [frame["payload"]["n"] for frame in replayed] == list(range(500))
    assert [frame["from"] for frame in replayed] == [sender.client_id] * 250 + [None] * 250
    assert recovered == {
        "type": "recovered",
        "recovered": True,
        "replayed": 500,
        "epoch": client.positions[-1][0],
        "offset": client.positions[-1][1] + 500,
    }
    await sender.send_json({"targets": [target], "payload": "live"})
    assert await resumed.recv_json() == {"type": "message", "from": sender.client_id, "payload": "live"}
    assert resumed.positions[-1][1] == recovered["offset"] + 1


async def test_deliveries_racing_the_replay_arrive_once_each_in_order(a, b, connect, uid):
    target = uid("racing")
    client, _ = await learn_position(connect, a, target)
    await client.close()
    sender = await connect(b, uid("sender"), subprotocol=SUBPROTOCOL_V1)
    total = 400

    async def keep_sending() -> None:
        for n in range(total):
            await sender.send_json({"targets": [target], "payload": n})
            await asyncio.sleep(0.002)

    sending = asyncio.create_task(keep_sending())
    await asyncio.sleep(0.2)  # well into the stream, and still sending
    resumed = await resume(connect, a, target, since_of(client))
    resumed.positions = list(client.positions)
    replayed, recovered = await receive_until_recovered(resumed)
    await sending
    assert recovered["recovered"] is True and recovered["replayed"] == len(replayed) > 0
    live = await resumed.recv_many(total - len(replayed), timeout=20)
    payloads = [frame["payload"] for frame in replayed + live]
    assert payloads == list(range(total))  # each exactly once, in order: no gap, no duplicate
    offsets = [offset for _, offset in resumed.positions[1:]]
    assert offsets == list(range(1, total + 1))
    await resumed.assert_silent()


async def test_resuming_again_and_again_under_a_flood_gets_every_entry_once(a, connect, uid):
    """A sender on the same process floods the target while it resumes 60 times: no duplicate, no gap.

    The replay is read on the process's command connection to Redis, while the deliveries
    published before that read still travel on its subscriber connection: they reach the
    resumed connection after ``recovered`` and must not be sent to it a second time.
    """
    target, resumes = uid("resumer"), 60
    client, _ = await learn_position(connect, a, target)
    sender = await connect(a, uid("flood"), subprotocol=SUBPROTOCOL_V1)
    flooding = True

    async def flood() -> None:
        """A frame every half millisecond or so: the server stores one in (nearly) every turn of its
        event loop, so the resume's read goes to Redis right behind appends, whose deliveries then
        come back on the other connection after the read's reply. The client keeps up."""
        n = 0
        while flooding:
            await sender.send_json({"targets": [target], "payload": n})
            n += 1
            await asyncio.sleep(0.0005)

    flooding_task = asyncio.create_task(flood())
    epoch, last = client.positions[-1]
    problems: dict[int, list[str]] = {}  # per resume, the deliveries out of place
    closing = []  # not waiting for each closing handshake, which the flood slows down
    try:
        for attempt in range(resumes):
            closing.append(asyncio.create_task(client.close()))
            client = await resume(connect, a, target, f"{epoch}:{last}")
            live = None  # deliveries since the recovered frame: the race is right after it
            while live is None or live < 30:
                frame = json.loads(await client.recv_text(10))
                if frame["type"] == "recovered":
                    assert frame["recovered"] is True, (frame, last)
                    live = 0
                    continue
                if (frame["epoch"], frame["offset"]) != (epoch, last + 1):
                    doubled = frame["epoch"] == epoch and frame["offset"] <= last
                    wrong = f"{'duplicate' if doubled else 'gap'}: {frame['offset']} after {last}"
                    problems.setdefault(attempt, []).append(wrong)
                epoch, last = frame["epoch"], max(last, frame["offset"])
                live = None if live is None else live + 1
    finally:
        flooding = False
        await asyncio.gather(flooding_task, *closing)
    assert not problems, f"{len(problems)} of {resumes} resumes had deliveries out of place: {problems}"


async def test_more_missed_than_kept_is_too_old_and_replays_nothing(a, connect, uid):
    target = uid("far-behind")
    client, _ = await learn_position(connect, a, target)
    await client.close()
    await pushes(a, target, 0, 601)  # one more than RELAY_HISTORY_SIZE
    resumed = await resume(connect, a, target, since_of(client))
    recovered = await resumed.recv_json()
    assert recovered == {
        "type": "recovered",
        "recovered": False,
        "replayed": 0,
        "reason": "too_old",
        "epoch": client.positions[-1][0],
        "offset": 601,
    }
    await resumed.assert_silent()


async def test_entries_past_their_ttl_are_too_old(start_server, connect, uid):
    server = start_server(name="history-short-ttl", env={**HISTORY, "HISTORY_TTL": "1"})
    target = uid("late")
    client, _ = await learn_position(connect, server, target)
    await client.close()
    await pushes(server, target, 0, 1)
    await asyncio.sleep(2.5)  # Redis's clock counts in whole seconds: well past the 1 s TTL
    resumed = await resume(connect, server, target, since_of(client))
    recovered = await resumed.recv_json()
    assert (recovered["recovered"], recovered["reason"], recovered["offset"]) == (False, "too_old", 1)


async def test_a_redis_restart_changes_the_epoch(start_server, private_redis, connect, uid):
    store = private_redis()
    server = start_server(name="history-restart", env={**HISTORY, "REDIS_URL": store.url})
    target = uid("restarted")
    sender = await connect(server, uid("sender"), subprotocol=SUBPROTOCOL_V1)
    client, _ = await learn_position(connect, server, target)
    await sender.send_json({"targets": [target], "payload": "before"})
    assert (await client.recv_json())["payload"] == "before"
    await client.close()
    old_epoch = client.positions[-1][0]

    store.stop()
    store.start()  # empty: no stream, no scripts
    for link in ("commands", "subscribe"):
        assert await wait_for(lambda link=link: server.log_lines(f"redis {link}: connected again"))

    resumed = await resume(connect, server, target, since_of(client))
    recovered = await resumed.recv_json()
    assert (recovered["recovered"], recovered["reason"], recovered["offset"]) == (False, "epoch_changed", 0)
    assert recovered["epoch"] != old_epoch
    await sender.send_json({"targets": [target], "payload": "after", "id": "x"})  # the script is loaded again
    assert (await resumed.recv_json())["payload"] == "after"
    assert resumed.positions == [(recovered["epoch"], 1)]


async def test_clients_of_a_killed_process_resume_on_another_and_lose_nothing(start_server, connect, uid):
    doomed = start_server(name="history-doomed", env=HISTORY)
    survivor = start_server(name="history-survivor", env=HISTORY)
    sender = await connect(survivor, uid("sender"), subprotocol=SUBPROTOCOL_V1)
    targets = [uid(f"t{i}") for i in range(10)]
    clients = {t: (await learn_position(connect, doomed, t))[0] for t in targets}
    received: dict[str, list[int]] = {t: [] for t in targets}
    sent = 0

    async def receive_on(target: str, client: Client) -> None:
        try:
            while True:
                received[target].append((await client.recv_json(10))["payload"])
        except ConnectionClosed:
            pass

    readers = [asyncio.create_task(receive_on(t, c)) for t, c in clients.items()]

    async def send_for(seconds: float) -> None:
        nonlocal sent
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await sender.send_json({"targets": targets, "payload": sent, "id": sent})
            sent += 1
            await asyncio.sleep(0.01)

    await send_for(0.5)
    os.kill(doomed.process.pid, signal.SIGKILL)
    assert await asyncio.to_thread(doomed.process.wait, 5) == -signal.SIGKILL
    await asyncio.gather(*readers)
    resumed = {}
    sending = asyncio.create_task(send_for(0.5))  # the sender goes on while they come back
    for target, old in clients.items():
        resumed[target] = await resume(connect, survivor, target, since_of(old))
        resumed[target].positions = list(old.positions)
    await sending
    acks = await drain_acks(sender, sent)
    assert {ack["ref"] for ack in acks} == set(range(sent))
    for target, client in resumed.items():
        replayed, recovered = await receive_until_recovered(client)
        assert recovered["recovered"] is True, recovered
        rest = [f["payload"] for f in replayed]
        missing = sent - len(received[target]) - len(rest)
        rest += [f["payload"] for f in await client.recv_many(missing, timeout=20)] if missing > 0 else []
        assert received[target] + rest == list(range(sent)), target  # each once, in order
    print(f"\nSIGKILL with 10 clients receiving: {sent} messages each, none lost, none doubled")


async def test_every_acked_frame_is_in_the_stream_and_an_outage_is_unavailable(
    start_server, private_redis, connect, uid
):
    store = private_redis()
    server = start_server(name="history-acks", env={**HISTORY, "REDIS_URL": store.url})
    target = uid("target")
    first, _ = await learn_position(connect, server, target)
    await first.close()
    sender = await connect(server, uid("sender"), subprotocol=SUBPROTOCOL_V1)
    for n in range(20):
        await sender.send_json({"targets": [target], "payload": n, "id": f"f{n}"})
    acks = await drain_acks(sender, 20)
    assert [(ack["ref"], ack["offsets"]) for ack in acks] == [(f"f{n}", {target: n + 1}) for n in range(20)]
    replay = await resume(connect, server, target, since_of(first))
    replayed, recovered = await receive_until_recovered(replay)
    assert [frame["payload"] for frame in replayed] == list(range(20)) and recovered["recovered"] is True

    store.stop()
    assert await wait_for(lambda: server.log_lines("redis commands: connection lost"))
    for n in range(5):
        await sender.send_json({"targets": [target], "payload": n, "id": f"down{n}"})
    answers = await sender.recv_many(5)
    assert [(a["type"], a["code"], a["ref"]) for a in answers] == [
        ("error", "unavailable", f"down{n}") for n in range(5)
    ]
    assert "not delivered" in answers[0]["detail"]
    await replay.assert_silent()  # nothing stored, nothing delivered


async def test_one_sender_cannot_fill_redis_with_history(start_server, private_redis, connect, uid):
    """The reported attack, within the default rate limit: 60 KiB frames to fresh random targets.

    Before the budget, 90 such frames to 100 targets each took Redis from 2 to 569 MiB in
    3.6 s (and with noeviction every write then failed for everyone). Now what one client
    id stores is at most RELAY_HISTORY_BURST + RELAY_HISTORY_RATE x the time (README,
    "Delivery history and resume"), and the others are not affected.
    """
    store = private_redis()
    server = start_server(name="history-budget", env={"REDIS_URL": store.url})  # the defaults
    rate, burst, entry_cost = 64 * 1024, 2 * 1024 * 1024, 1024  # RELAY_HISTORY_RATE, _BURST, ENTRY_COST
    attacker = await connect(server, uid("attacker"), subprotocol=SUBPROTOCOL_V1)
    payload = "x" * (60 * 1024)
    with redis.Redis(port=store.port) as watch:
        before = watch.info("memory")["used_memory"]
        started = time.monotonic()
        for n in range(80):  # 40 frames to 100 fresh targets, 40 to 20; 40 a second, under the 50/s limit
            fresh = [uuid.uuid4().hex[:16] for _ in range(100 if n % 2 == 0 else 20)]
            await attacker.send_json({"targets": fresh, "payload": payload, "id": n})
            await asyncio.sleep(0.025)
        answers = await attacker.recv_many(80, timeout=20)
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.5)
        grown = watch.info("memory")["used_memory"] - before
    acked = [a for a in answers if a["type"] == "ack"]
    print(f"\n80 frames in {elapsed:.1f} s: {len(acked)} stored, Redis +{grown / 2**20:.2f} MiB")
    # What Redis holds for it: ~1.07 x the bytes counted for 60 KiB entries (measured), and
    # a little for the server's own keys and buffers.
    assert grown <= 1.1 * (burst + rate * elapsed) + 1024 * 1024, f"Redis grew {grown / 2**20:.1f} MiB"
    refused = [a for a in answers if a["type"] == "error"]
    assert {a["code"] for a in refused} == {"history_limited"} and len(acked) + len(refused) == 80
    assert all(a["ref"] % 2 == 1 for a in acked)  # 100 x 60 KiB is more than the burst: never stored
    assert acked, "the budget lets some through"
    stored = len(acked) * 20 * (len(payload) + 2 + len(attacker.client_id) + entry_cost)
    assert stored <= burst + rate * elapsed

    target = await connect(server, uid("bystander"), subprotocol=SUBPROTOCOL_V1)
    other = await connect(server, uid("other-sender"), subprotocol=SUBPROTOCOL_V1)
    await other.send_json({"targets": [target.client_id], "payload": "still fine", "id": "ok"})
    assert (await other.recv_json())["type"] == "ack"
    assert (await target.recv_json())["payload"] == "still fine"


async def test_the_original_framing_has_no_offsets_and_no_resume(a, connect, uid):
    target = uid("raw")
    raw = await connect(a, target)
    sender = await connect(a, uid("sender"))
    await sender.send_json({"targets": [target], "payload": {"x": 1}})
    assert await raw.recv_text() == '{"x":1}'
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(a, f"id={target}&since=")
    assert refused.value.response.status_code == 403
    assert a.events("refused", reason="since_needs_v1")


@pytest.mark.parametrize(
    "since", ["x", "epoch", ":5", "e:", "e:-1", "e:1.5", "e:" + "9" * 19, "a%20b:1", "%00:1", "e" * 65 + ":1"]
)
async def test_a_bad_since_is_refused_at_the_handshake(a, uid, since):
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(a, f"id={uid('bad')}&since={since}", subprotocols=[SUBPROTOCOL_V1])
    assert refused.value.response.status_code == 403
    refusals = await a.wait_for_events("refused", reason="invalid_since")
    assert refusals


async def test_two_since_parameters_are_ambiguous(a, uid):
    with pytest.raises(InvalidStatus):
        await open_ws(a, f"id={uid('two')}&since=e:1&since=e:2", subprotocols=[SUBPROTOCOL_V1])
    assert await a.wait_for_events("refused", reason="ambiguous")


async def test_without_history_a_resume_says_history_off(start_server, connect, uid):
    server = start_server(name="history-off", env={"RELAY_HISTORY": "0"})
    client = await resume(connect, server, uid("c"), "e:5")
    assert await client.recv_json() == {"type": "recovered", "recovered": False, "replayed": 0, "reason": "history_off"}
    sender = await connect(server, uid("s"))
    await sender.send_json({"targets": [client.client_id], "payload": 1})
    assert json.loads(await client.recv_text()) == {"type": "message", "from": sender.client_id, "payload": 1}


async def test_a_message_to_an_offline_id_waits_in_its_inbox(a, b, connect, uid):
    target = uid("offline")
    client, _ = await learn_position(connect, a, target)
    await client.close()
    await asyncio.sleep(0.2)  # gone from presence
    result = await asyncio.to_thread(run_manage_sync, b, "relay_send", target, "--payload", '"while you were out"')
    assert result.stdout.strip() == f"Sent to {target} (not online, offset {client.positions[-1][1] + 1})."
    later = await resume(connect, b, target, since_of(client))
    replayed, recovered = await receive_until_recovered(later)
    assert [f["payload"] for f in replayed] == ["while you were out"] and recovered["recovered"] is True


async def wait_for(condition, timeout: float = 10.0):
    """Poll ``condition()`` until it is true or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return value
