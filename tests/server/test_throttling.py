"""Rate limits: parse_rate, the token bucket with a patched clock, and the consumer enforcing them."""

import json
from types import SimpleNamespace

import pytest

from relay.server import throttling
from relay.server.throttling import BucketsById, TokenBucket, bucket_for, parse_rate
from tests.conftest import frame, send_text


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The monotonic clock relay.throttling sees: ``clock[0] += 1`` moves it a second on."""
    now = [1000.0]
    monkeypatch.setattr(throttling, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


@pytest.mark.parametrize(
    ("rate", "parsed"),
    [
        ("50/s", (50, 1)),
        ("1/sec", (1, 1)),
        ("10/m", (10, 60)),
        ("10/min", (10, 60)),
        ("3/hour", (3, 3600)),
        ("3/h", (3, 3600)),
        ("100/day", (100, 86400)),
        ("7/ s", (7, 1)),
        (None, None),
    ],
)
def test_parse_rate(rate, parsed):
    assert parse_rate(rate) == parsed


@pytest.mark.parametrize("rate", ["fast", "5", "5/x", "a/s", "5/s/s", "5/"])
def test_parse_rate_refuses_what_is_not_a_rate(rate):
    with pytest.raises((ValueError, KeyError, IndexError)):
        parse_rate(rate)


def test_bucket_allows_a_burst_then_refuses(clock):
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.allow() for _ in range(5)] == [True, True, True, False, False]
    assert bucket.refused_in_a_row == 2


def test_bucket_refills_at_the_rate_up_to_the_burst(clock):
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.allow() for _ in range(3)] == [True, True, True]
    clock[0] += 0.5  # one token at 2/s
    assert [bucket.allow() for _ in range(2)] == [True, False]
    clock[0] += 60  # refills to the burst, not beyond
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]


def test_bucket_refused_in_a_row_resets_on_an_allowed_frame(clock):
    bucket = TokenBucket(rate=1, burst=1)
    assert [bucket.allow() for _ in range(4)] == [True, False, False, False]
    assert bucket.refused_in_a_row == 3
    clock[0] += 1
    assert bucket.allow() is True
    assert bucket.refused_in_a_row == 0
    assert bucket.allow() is False
    assert bucket.refused_in_a_row == 1


def test_bucket_wait(clock):
    bucket = TokenBucket(rate=4, burst=1)
    assert bucket.wait() == 0.0
    assert bucket.allow() is True
    assert bucket.wait() == 0.25
    clock[0] += 0.125
    assert bucket.allow() is False
    assert bucket.wait() == 0.125


@pytest.mark.parametrize(
    ("rate", "burst", "expected"),
    [
        ("50/s", None, (50.0, 50)),
        ("50/s", 100, (50.0, 100)),
        ("60/m", None, (1.0, 60)),
        ("60/m", 5, (1.0, 5)),
        ("3600/h", 2, (1.0, 2)),
    ],
)
def test_bucket_for(clock, rate, burst, expected):
    bucket = bucket_for(rate, burst)
    assert (bucket.rate, bucket.burst, bucket.tokens) == (*expected, float(expected[1]))


@pytest.mark.parametrize("burst", [None, 10])
def test_bucket_for_no_limit(burst):
    assert bucket_for(None, burst) is None


def test_bucket_for_gives_each_connection_its_own_bucket(clock):
    first, second = bucket_for("1/s", None), bucket_for("1/s", None)
    assert first.allow() is True
    assert second.allow() is True


# Bytes stored per client id (RELAY_HISTORY_RATE)


def test_a_bucket_takes_a_cost_of_many_tokens(clock):
    bucket = TokenBucket(rate=100, burst=1000)
    assert [bucket.allow(400), bucket.allow(400), bucket.allow(400)] == [True, True, False]
    assert bucket.wait(400) == 2.0  # 200 left, 200 more at 100 a second
    assert bucket.allow(1001) is False  # more than the burst: never


def test_what_an_id_stores_over_any_time_is_at_most_the_burst_and_the_rate(clock):
    """The bound the README states: over t seconds, an id stores at most burst + rate * t bytes."""
    budgets = BucketsById(rate=65536, burst=2 * 1024 * 1024)
    stored, start = 0, clock[0]
    for _ in range(10_000):  # a greedy sender: a 60 KiB frame to 20 targets every 10 ms
        if budgets.bucket("greedy").allow(20 * (61440 + 1024)):
            stored += 20 * (61440 + 1024)
        clock[0] += 0.01
    elapsed = clock[0] - start
    assert 65536 * elapsed < stored <= 2 * 1024 * 1024 + 65536 * elapsed


def test_an_ids_connections_share_its_budget_and_reconnecting_does_not_refill_it(clock):
    budgets = BucketsById(rate=10, burst=100)
    assert budgets.bucket("alice").allow(100)
    assert budgets.bucket("alice") is budgets.bucket("alice")  # every connection of alice's
    clock[0] += 5  # alice's connections close and open again: the bucket is the one it was
    assert not budgets.bucket("alice").allow(51)
    assert budgets.bucket("bob").allow(100)  # each id its own


def test_buckets_are_forgotten_once_full_again(clock):
    budgets = BucketsById(rate=10, burst=100)
    budgets.bucket("alice").allow(100)
    budgets.bucket("bob").allow(1)
    clock[0] += 9.95  # bob is full, alice not yet; and a bucket takes 10 s to refill
    budgets.bucket("carol")
    assert len(budgets) == 3  # swept at most once per refill time
    clock[0] += 0.1
    budgets.bucket("dave")
    assert len(budgets) == 1  # alice, bob and carol full again: forgotten; dave is new


# In the consumer


@pytest.fixture
def limited(settings, clock) -> list[float]:
    """5 frames a second, bursts of 5, closing after 3 refusals in a row; the clock stands still."""
    settings.RELAY_RATE_LIMIT = "5/s"
    settings.RELAY_RATE_BURST = 5
    settings.RELAY_RATE_LIMIT_CLOSE_AFTER = 3
    return clock


RATE_LIMITED = {"error": {"code": "rate_limited", "detail": "Over the rate limit of 5/s: retry in 0.20 s."}}


async def test_frames_over_the_limit_are_refused_and_not_delivered(connect, limited):
    alice = await connect("alice")
    bob = await connect("bob")
    for n in range(8):
        await send_text(alice, frame(["bob"], n))
    assert [await bob.receive_from() for _ in range(5)] == ["0", "1", "2", "3", "4"]
    assert await bob.receive_nothing(timeout=0.01)
    assert [json.loads(await alice.receive_from()) for _ in range(3)] == [RATE_LIMITED] * 3
    assert await alice.receive_nothing(timeout=0.01)


async def test_v1_rate_limited_error(connect, limited):
    alice = await connect("alice", ["relay.v1"])
    for n in range(6):
        await send_text(alice, frame(["nobody"], n, id=f"r{n}"))
    acks = [json.loads(await alice.receive_from()) for _ in range(5)]
    assert acks == [{"type": "ack", "ref": f"r{n}", "offsets": {}} for n in range(5)]
    error = json.loads(await alice.receive_from())
    assert error == {
        "type": "error",
        "code": "rate_limited",
        "detail": "Over the rate limit of 5/s: retry in 0.20 s.",
        "ref": "r5",  # so that a client waiting for that frame's answer gets it
    }
    assert await alice.receive_nothing(timeout=0.01)


async def test_closes_with_1008_after_close_after_refusals_in_a_row(connect, limited):
    alice = await connect("alice")
    bob = await connect("bob")
    for n in range(5 + 3):
        await send_text(alice, frame(["bob"], n))
    assert [json.loads(await alice.receive_from()) for _ in range(3)] == [RATE_LIMITED] * 3
    assert await alice.receive_nothing(timeout=0.01)  # still open after exactly CLOSE_AFTER refusals

    await send_text(alice, frame(["bob"], "one too many"))
    assert await alice.receive_output() == {"type": "websocket.close", "code": 1008}
    limited[0] += 10  # even with tokens again, a closed connection relays nothing more
    await send_text(alice, frame(["bob"], "after close"))
    assert await alice.receive_nothing(timeout=0.01)
    assert [await bob.receive_from() for _ in range(5)] == ["0", "1", "2", "3", "4"]
    assert await bob.receive_nothing(timeout=0.01)


async def test_an_allowed_frame_resets_the_run_of_refusals(connect, limited):
    alice = await connect("alice")
    bob = await connect("bob")
    for n in range(5 + 3):
        await send_text(alice, frame(["bob"], n))
    assert [json.loads(await alice.receive_from()) for _ in range(3)] == [RATE_LIMITED] * 3
    limited[0] += 0.2  # one token
    await send_text(alice, frame(["bob"], "refilled"))
    for n in range(3):
        await send_text(alice, frame(["bob"], f"late{n}"))
    assert [json.loads(await alice.receive_from()) for _ in range(3)] == [RATE_LIMITED] * 3
    assert await alice.receive_nothing(timeout=0.01)  # six refusals, never more than three in a row
    assert [await bob.receive_from() for _ in range(6)] == ["0", "1", "2", "3", "4", '"refilled"']
    assert await bob.receive_nothing(timeout=0.01)


async def test_refill_lets_frames_through_again(connect, limited):
    alice = await connect("alice")
    bob = await connect("bob")
    for n in range(6):
        await send_text(alice, frame(["bob"], n))
    assert json.loads(await alice.receive_from()) == RATE_LIMITED  # the sixth was refused
    limited[0] += 1  # five tokens at 5/s
    for n in range(6, 12):
        await send_text(alice, frame(["bob"], n))
    assert json.loads(await alice.receive_from()) == RATE_LIMITED  # the eleventh was refused
    assert [await bob.receive_from() for _ in range(10)] == ["0", "1", "2", "3", "4", "6", "7", "8", "9", "10"]
    assert await bob.receive_nothing(timeout=0.01)


async def test_each_connection_has_its_own_limit(connect, limited):
    first = await connect("alice")
    second = await connect("alice")
    bob = await connect("bob")
    for communicator in (first, second):
        for n in range(5):
            await send_text(communicator, frame(["bob"], n))
    assert [await bob.receive_from() for _ in range(10)] == ["0", "1", "2", "3", "4"] * 2
    assert await first.receive_nothing(timeout=0.01)
    assert await second.receive_nothing(timeout=0.01)


async def test_bad_frames_count_against_the_limit(connect, limited):
    alice = await connect("alice")
    for _ in range(5):
        await send_text(alice, "not json")
    await send_text(alice, frame(["alice"], "over"))
    codes = [json.loads(await alice.receive_from())["error"]["code"] for _ in range(6)]
    assert codes == ["invalid_json"] * 5 + ["rate_limited"]


async def test_no_limit_when_rate_is_none(connect, settings, clock):
    settings.RELAY_RATE_LIMIT = None
    settings.RELAY_RATE_BURST = 1
    alice = await connect("alice")
    for n in range(200):
        await send_text(alice, frame(["alice"], n))
    assert [await alice.receive_from() for _ in range(200)] == [str(n) for n in range(200)]
