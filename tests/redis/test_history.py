"""relay.redis.history: batched appends and resume reads on the per-message path, against the real Redis."""

import asyncio
import uuid

import hiredis
import pytest
import redis

from relay.redis.history import History, answer_each
from relay.redis.resp import CommandPipe
from relay.redis.servers import server_of
from relay.redis.streams import Position, Settings

SETTINGS = Settings(size=5, ttl=300, stream_ttl=3600)


def test_each_entry_of_a_batch_hears_its_own_position_or_the_error():
    heard: list = []
    on_reply = answer_each([heard.append, None, heard.append])
    on_reply([[b"e", 1], [b"e", 2], [b"e", 3]])
    assert heard == [[b"e", 1], [b"e", 3]]
    heard.clear()
    error = hiredis.ReplyError("NOSCRIPT")
    answer_each([heard.append, None, heard.append])(error)
    assert heard == [error, error]


@pytest.fixture
async def history(redis_url):
    commands = CommandPipe(server_of(redis_url))
    await asyncio.wait_for(commands.link.up.wait(), 5)
    prefix = f"test-history-{uuid.uuid4().hex[:8]}"
    yield History(commands, prefix, SETTINGS)
    commands.close()
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


async def test_appends_get_their_positions_in_order_and_a_resume_reads_what_was_missed(history):
    positions: list = []
    for n in range(7):
        history.append("alice", "bob", f'"m{n}"', positions.append)
    for _ in range(100):
        if len(positions) == 7:
            break
        await asyncio.sleep(0.01)
    epochs = {epoch for epoch, _ in positions}
    assert len(epochs) == 1 and [offset for _, offset in positions] == list(range(1, 8))
    epoch = epochs.pop().decode()

    stream = await history.read("alice", Position(epoch, 4))
    assert stream.position == Position(epoch, 7)
    assert [(e.offset, e.sender, e.payload_json) for e in stream.entries] == [
        (5, "bob", '"m4"'),
        (6, "bob", '"m5"'),
        (7, "bob", '"m6"'),
    ]
    # Only what a resume can replay is read: nothing for a client of another epoch, or one
    # without a position, or one that missed more than the stream keeps.
    assert (await history.read("alice", Position("another", 4))).entries == ()
    assert (await history.read("alice", None)).entries == ()
    assert (await history.read("alice", Position(epoch, 1))).entries == ()


async def test_a_read_without_redis_raises_connection_error(history):
    history._commands.close()
    with pytest.raises(ConnectionError):
        await history.read("alice", None)
