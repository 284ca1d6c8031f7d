"""relay.redis.streams: the resume rules (pure), and the Lua scripts against the real Redis."""

import time
import uuid

import pytest
import redis

from relay.redis import streams
from relay.redis.keys import bus_channel, history_key, stream_key
from relay.redis.streams import Entry, Position, Recovery, Settings, Stream, recover

SETTINGS = Settings(size=5, ttl=300, stream_ttl=3600)
WIDE = Settings(size=100, ttl=300, stream_ttl=3600)


def entries(first: int, last: int, time_: int = 1000) -> tuple[Entry, ...]:
    return tuple(Entry(offset, time_, "alice", f'"m{offset}"') for offset in range(first, last + 1))


def stream(last: int, kept: tuple[Entry, ...], now: int = 1000, epoch: str = "e1") -> Stream:
    return Stream(Position(epoch, last), now, kept)


# The rules of a resume


def test_nothing_missed_is_a_recovery_with_nothing_to_replay():
    assert recover(Position("e1", 7), stream(7, entries(3, 7)), SETTINGS) == Recovery(True)


def test_only_the_last_size_entries_are_kept_even_if_the_list_holds_more():
    listed = stream(10, entries(4, 10))  # the list is trimmed lazily: 7 entries for a size of 5
    assert recover(Position("e1", 5), listed, SETTINGS) == Recovery(True, entries(6, 10))
    assert recover(Position("e1", 4), listed, SETTINGS) == Recovery(False, reason="too_old")


def test_every_missed_entry_is_replayed_in_order():
    assert recover(Position("e1", 4), stream(7, entries(3, 7)), SETTINGS) == Recovery(True, entries(5, 7))


def test_a_first_connection_has_no_position():
    assert recover(None, stream(7, entries(3, 7)), SETTINGS) == Recovery(False, reason="no_position")


@pytest.mark.parametrize("since", [Position("old", 4), Position("e1", 8)])
def test_another_epoch_or_a_position_ahead_of_the_stream(since):
    assert recover(since, stream(7, entries(3, 7)), SETTINGS) == Recovery(False, reason="epoch_changed")


def test_more_missed_than_kept_is_too_old_and_replays_nothing():
    assert recover(Position("e1", 1), stream(7, entries(3, 7)), SETTINGS) == Recovery(False, reason="too_old")


def test_entries_past_their_ttl_are_not_kept():
    kept = entries(5, 6, time_=600) + entries(7, 7, time_=990)
    assert recover(Position("e1", 4), stream(7, kept, now=1000), WIDE) == Recovery(False, reason="too_old")
    assert recover(Position("e1", 6), stream(7, kept, now=1000), WIDE) == Recovery(True, entries(7, 7, 990))


def test_position_covers():
    assert Position("e", 5).covers(Position("e", 5)) and Position("e", 5).covers(Position("e", 1))
    assert not Position("e", 5).covers(Position("e", 6)) and not Position("e", 5).covers(Position("f", 1))


# The scripts, in Redis


@pytest.fixture
def store(redis_url):
    """A redis-py client and a key prefix of this test's own; its keys are deleted after."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield client, prefix
    keys = client.keys(f"{prefix}:*")
    if keys:
        client.delete(*keys)
    client.close()


def read(client: redis.Redis, prefix: str, client_id: str, since: Position | None = None, size: int = 5) -> Stream:
    """The read script's answer to a client resuming after ``since``, with ``size`` entries kept."""
    script = client.register_script(streams.READ_SCRIPT)
    keys = [stream_key(prefix, client_id), history_key(prefix, client_id)]
    args = streams.read_arguments(Settings(size=size, ttl=300, stream_ttl=3600), since)
    return streams.parse_stream(script(keys=keys, args=args), streams.now())


def stored(client: redis.Redis, prefix: str, client_id: str) -> list[Entry]:
    """Every entry the history list holds, oldest first."""
    return [streams.parse_entry(raw) for raw in client.lrange(history_key(prefix, client_id), 0, -1)]


def test_appends_count_up_in_one_epoch_and_publish_what_they_store(store):
    client, prefix = store
    pubsub = client.pubsub()
    pubsub.subscribe(bus_channel(prefix, "bob"))
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    positions = [streams.append_pushes(client, prefix, SETTINGS, ["bob"], f'{{"n":{n}}}')["bob"] for n in range(3)]
    assert [p.offset for p in positions] == [1, 2, 3]
    assert len({p.epoch for p in positions}) == 1
    published = [pubsub.get_message(timeout=1)["data"] for _ in range(3)]
    assert published == [f'h\n{positions[0].epoch}\n{n + 1}\n\n{{"n":{n}}}' for n in range(3)]
    pubsub.close()
    assert read(client, prefix, "bob").position == positions[-1]
    kept = stored(client, prefix, "bob")
    assert [(e.offset, e.sender, e.payload_json) for e in kept] == [(n + 1, None, f'{{"n":{n}}}') for n in range(3)]
    assert all(abs(e.time - time.time()) < 5 for e in kept)


def test_the_list_is_trimmed_to_size_once_it_holds_a_quarter_more_and_both_keys_expire(store):
    client, prefix = store
    size = Settings(size=8, ttl=300, stream_ttl=3600)
    for n in range(10):
        streams.append_pushes(client, prefix, size, ["bob"], str(n))
    assert [e.offset for e in stored(client, prefix, "bob")] == list(range1(1, 10))  # 10 <= 8 + 2
    streams.append_pushes(client, prefix, size, ["bob"], "10")
    assert read(client, prefix, "bob").position.offset == 11
    assert [e.offset for e in stored(client, prefix, "bob")] == list(range1(4, 11))
    assert 300 < client.ttl(history_key(prefix, "bob")) <= 450  # 1.5 TTL: each entry lives its TTL
    assert 3000 < client.ttl(stream_key(prefix, "bob")) <= 3600  # read: its position is kept the stream TTL


def range1(first: int, last: int) -> range:
    return range(first, last + 1)


def test_a_read_streams_expiry_is_pushed_back_at_most_every_half_ttl(store):
    client, prefix = store
    streams.append_pushes(client, prefix, SETTINGS, ["bob"], "1")
    read(client, prefix, "bob")  # a client of bob's read it: its position is kept
    streams.append_pushes(client, prefix, SETTINGS, ["bob"], "2")
    client.expire(stream_key(prefix, "bob"), 50)  # as if time had passed since
    streams.append_pushes(client, prefix, SETTINGS, ["bob"], "3")
    assert client.ttl(stream_key(prefix, "bob")) <= 50  # within TTL/2 of the last push-back: not again
    client.hset(stream_key(prefix, "bob"), "r", streams.now() - 200)  # longer ago than TTL/2 = 150 s
    streams.append_pushes(client, prefix, SETTINGS, ["bob"], "4")
    assert client.ttl(stream_key(prefix, "bob")) > 3000
    assert 300 < client.ttl(history_key(prefix, "bob")) <= 450


def test_a_stream_no_client_read_expires_with_its_entries(store):
    """What a sender writes to ids nobody reads is gone from Redis with its entries, not a day later."""
    client, prefix = store
    streams.append_pushes(client, prefix, SETTINGS, ["nobody"], "1")
    assert 300 < client.ttl(stream_key(prefix, "nobody")) <= 450
    assert 300 < client.ttl(history_key(prefix, "nobody")) <= 450
    client.hset(stream_key(prefix, "nobody"), "r", streams.now() - 200)
    client.expire(stream_key(prefix, "nobody"), 50)
    streams.append_pushes(client, prefix, SETTINGS, ["nobody"], "2")
    assert 300 < client.ttl(stream_key(prefix, "nobody")) <= 450  # pushed back with its list, no further


def test_a_list_made_again_between_push_backs_gets_an_expiry(store):
    """A list evicted (or expired) alone starts again with an expiry, not without one until the next push-back."""
    client, prefix = store
    streams.append_pushes(client, prefix, SETTINGS, ["bob"], "1")
    client.delete(history_key(prefix, "bob"))
    streams.append_pushes(client, prefix, SETTINGS, ["bob"], "2")
    assert 300 < client.ttl(history_key(prefix, "bob")) <= 450


def append_written_at(client: redis.Redis, prefix: str, client_id: str, payload: str, written: int) -> None:
    """Append as a writer whose clock says ``written`` (entries are stamped with the writer's time)."""
    keys, args = streams.append_arguments(SETTINGS, [(client_id, "alice", payload)], prefix)
    args[3] = written
    client.register_script(streams.APPEND_SCRIPT)(keys=keys, args=args)


def test_an_append_drops_the_entries_older_than_the_ttl(store):
    """So that no entry stays in Redis long past its TTL, however often its list is written."""
    client, prefix = store
    now = streams.now()
    for payload, written in (("old", now - 400), ("older than ttl", now - 301), ("young", now - 100)):
        append_written_at(client, prefix, "bob", payload, written)
    assert [e.payload_json for e in stored(client, prefix, "bob")] == ["old", "older than ttl", "young"]
    streams.append_pushes(client, prefix, SETTINGS, ["bob"], "now")
    assert [e.payload_json for e in stored(client, prefix, "bob")] == ["young", "now"]
    assert int(client.hget(stream_key(prefix, "bob"), "a")) == now - 100  # the oldest entry left


def test_one_push_to_several_ids_gets_a_position_in_each(store):
    client, prefix = store
    streams.append_pushes(client, prefix, SETTINGS, ["a"], "1")
    positions = streams.append_pushes(client, prefix, SETTINGS, ["a", "b"], "2")
    assert (positions["a"].offset, positions["b"].offset) == (2, 1)
    assert positions["a"].epoch != "" and positions["b"].epoch != ""


def test_streams_started_together_have_epochs_of_their_own(store):
    """A position in one id's stream must never pass for one in another's (a new user in the same tab)."""
    client, prefix = store
    for _ in range(3):
        positions = streams.append_pushes(client, prefix, SETTINGS, ["alice", "bob"], "1")
    assert positions["alice"].offset == positions["bob"].offset == 3
    assert positions["alice"].epoch != positions["bob"].epoch
    streams.append_pushes(client, prefix, SETTINGS, ["bob"], "2")
    from_alice = read(client, prefix, "bob", positions["alice"])
    assert recover(positions["alice"], from_alice, SETTINGS) == Recovery(False, reason="epoch_changed")
    read_together = [read(client, prefix, name).position.epoch for name in ("carol", "dave")]
    assert read_together[0] != read_together[1]


def test_reading_a_stream_that_does_not_exist_starts_it(store):
    client, prefix = store
    first = read(client, prefix, "new")
    assert (first.position.offset, first.entries) == (0, ())
    assert read(client, prefix, "new").position == first.position  # the same epoch: it exists now
    pushed = streams.append_pushes(client, prefix, SETTINGS, ["new"], "1")["new"]
    assert pushed == Position(first.position.epoch, 1)


def test_a_lost_stream_starts_again_in_a_new_epoch(store):
    client, prefix = store
    before = streams.append_pushes(client, prefix, SETTINGS, ["bob"], "1")["bob"]
    client.delete(stream_key(prefix, "bob"), history_key(prefix, "bob"))  # as FLUSHALL or a restart would
    after = streams.append_pushes(client, prefix, SETTINGS, ["bob"], "2")["bob"]
    assert after.offset == 1 and after.epoch != before.epoch
    assert recover(before, read(client, prefix, "bob", before), SETTINGS) == Recovery(False, reason="epoch_changed")


def test_a_resume_reads_only_the_entries_after_its_offset(store):
    """A resume's read costs Redis what it sends: the entries the client missed, not the whole list."""
    client, prefix = store
    for n in range(20):
        last = streams.append_pushes(client, prefix, WIDE, ["bob"], f'"{n}"')["bob"]
    for since, expected in ((15, range1(16, 20)), (19, [20]), (20, [])):
        after = read(client, prefix, "bob", Position(last.epoch, since), size=WIDE.size)
        assert [e.offset for e in after.entries] == list(expected)
        assert recover(Position(last.epoch, since), after, WIDE) == Recovery(True, after.entries)


@pytest.mark.parametrize("since", [None, Position("another-epoch", 3)], ids=["no-position", "another-epoch"])
def test_a_client_without_a_position_or_of_another_epoch_reads_no_entry(store, since):
    client, prefix = store
    for n in range(5):
        streams.append_pushes(client, prefix, SETTINGS, ["bob"], str(n))
    answered = read(client, prefix, "bob", since)
    assert (answered.position.offset, answered.entries) == (5, ())


def test_more_missed_than_kept_reads_nothing_though_the_lazily_trimmed_list_holds_it(store):
    client, prefix = store
    size = Settings(size=8, ttl=300, stream_ttl=3600)
    for n in range(10):
        last = streams.append_pushes(client, prefix, size, ["bob"], str(n))["bob"]
    assert len(stored(client, prefix, "bob")) == 10  # up to a quarter more than it keeps
    too_far = read(client, prefix, "bob", Position(last.epoch, 1), size=8)  # 9 missed, 8 kept
    assert too_far.entries == ()
    assert recover(Position(last.epoch, 1), too_far, size) == Recovery(False, reason="too_old")
    just_kept = read(client, prefix, "bob", Position(last.epoch, 2), size=8)
    assert [e.offset for e in just_kept.entries] == list(range1(3, 10))
    assert recover(Position(last.epoch, 2), just_kept, size) == Recovery(True, just_kept.entries)


def test_an_entry_missing_from_the_list_is_too_old_not_a_partial_replay(store):
    client, prefix = store
    for n in range(6):
        last = streams.append_pushes(client, prefix, WIDE, ["bob"], str(n))["bob"]
    client.lpop(history_key(prefix, "bob"), 2)  # offsets 1 and 2 gone (expired, evicted): 3..6 remain
    after_one = read(client, prefix, "bob", Position(last.epoch, 1), size=WIDE.size)
    assert recover(Position(last.epoch, 1), after_one, WIDE) == Recovery(False, reason="too_old")


def test_payloads_and_senders_survive_the_round_trip(store):
    client, prefix = store
    history = client.register_script(streams.APPEND_SCRIPT)
    payload = '{"text":"line\\nbreak é 😀","n":[1,null]}'
    keys, args = streams.append_arguments(SETTINGS, [("bob", "alice", payload)], prefix)
    history(keys=keys, args=args)
    (entry,) = stored(client, prefix, "bob")
    assert (entry.sender, entry.payload_json) == ("alice", payload)


def test_one_script_call_stores_a_batch_in_order_even_for_one_id(store):
    client, prefix = store
    batch = [("a", "s1", "1"), ("b", "s1", "2"), ("a", "s2", "3")]
    keys, args = streams.append_arguments(SETTINGS, batch, prefix)
    replies = client.register_script(streams.APPEND_SCRIPT)(keys=keys, args=args)
    assert [streams.position_of(r).offset for r in replies] == [1, 1, 2]
    assert [(e.sender, e.payload_json) for e in stored(client, prefix, "a")] == [("s1", "1"), ("s2", "3")]


def test_a_stream_written_under_another_master_starts_a_new_epoch(store):
    """After a failover the promoted replica may lack entries: its offsets must not pass for the old ones."""
    client, prefix = store
    history = client.register_script(streams.APPEND_SCRIPT)

    def append(replication_id: str) -> Position:
        keys, args = streams.append_arguments(SETTINGS, [("bob", "alice", "1")], prefix, replication_id)
        return streams.position_of(history(keys=keys, args=args)[0])

    first, same = append("a" * 40), append("a" * 40)
    assert same == Position(first.epoch, 2)
    promoted = append("b" * 40)  # a writer that learned the new master's replication id
    assert promoted.epoch != first.epoch and promoted.offset == 3  # offsets only grow; the epoch tells
    real = client.info("replication")["master_replid"]
    by_push = streams.append_pushes(client, prefix, SETTINGS, ["bob"], "2")["bob"]  # asks INFO itself
    assert by_push.epoch != promoted.epoch and append(real) == Position(by_push.epoch, 5)
