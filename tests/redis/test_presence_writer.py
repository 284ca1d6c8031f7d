"""PresenceWriter: the commands one node writes to Redis to publish its connection counts."""

import asyncio
from collections import deque

import hiredis
import pytest

from relay.conf import conf
from relay.redis import presence_writer
from relay.redis.keys import node_key, nodes_key
from relay.redis.presence_writer import PresenceWriter

NODE = "host-1:4242:0badcafe"
TTL = 30


async def until(predicate, timeout: float = 2.0) -> None:
    """Wait until ``predicate()`` is true; fail the test if it is not within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail("the expected state was not reached in time")
        await asyncio.sleep(0.001)


class ManualClock:
    """Stands in for the module's ``asyncio`` and ``time``: ``sleep()`` returns when the test
    calls ``tick()``, which moves ``time()`` on by the delay slept."""

    def __init__(self):
        self.now = 1_700_000_000.0
        self._sleepers: deque = deque()

    def __getattr__(self, name):  # the rest of asyncio
        return getattr(asyncio, name)

    def time(self):
        return self.now

    @property
    def sleeping(self) -> int:
        return sum(not woken.done() for _, woken in self._sleepers)

    async def sleep(self, delay):
        woken = asyncio.get_running_loop().create_future()
        self._sleepers.append((delay, woken))
        await woken

    async def tick(self):
        """Let the heartbeat wake once, and run until it sleeps again."""
        await until(lambda: self._sleepers)
        delay, woken = self._sleepers.popleft()
        self.now += delay
        woken.set_result(None)
        await until(lambda: self._sleepers)


class FakeLink:
    def __init__(self):
        self.up_callbacks = []

    def on_up(self, callback):
        self.up_callbacks.append(callback)


class FakeCommands:
    """Stands in for CommandPipe: records each command sent, decoded, and its reply callback."""

    def __init__(self):
        self.link = FakeLink()
        self.connected = True
        self.commands: list[list[bytes]] = []
        self.callbacks: list = []

    def send(self, command, on_reply=None):
        reader = hiredis.Reader()
        reader.feed(command)
        self.commands.append(reader.gets())
        assert reader.gets() is False, "one command per send"
        self.callbacks.append(on_reply)

    def come_up(self):
        self.connected = True
        for callback in self.link.up_callbacks:
            callback()

    def take(self) -> list[list[bytes]]:
        """The commands sent since the last take()."""
        taken, self.commands = self.commands, []
        return taken


@pytest.fixture
def clock(monkeypatch) -> ManualClock:
    manual = ManualClock()
    monkeypatch.setattr(presence_writer, "asyncio", manual)
    monkeypatch.setattr(presence_writer, "time", manual)
    return manual


@pytest.fixture
def keys() -> tuple[bytes, bytes]:
    """(this node's hash, the nodes' sorted set), under whatever RELAY_REDIS_PREFIX is."""
    prefix = conf.RELAY_REDIS_PREFIX
    return node_key(prefix, NODE).encode(), nodes_key(prefix).encode()


@pytest.fixture
def counts() -> dict[str, int]:
    return {}


@pytest.fixture
def commands() -> FakeCommands:
    return FakeCommands()


@pytest.fixture
async def writer(settings, clock, commands, counts):
    settings.RELAY_PRESENCE_TTL = TTL
    settings.RELAY_PRESENCE_HEARTBEAT = 10
    presence = PresenceWriter(commands, conf.RELAY_REDIS_PREFIX, NODE, lambda: dict(counts))
    yield presence
    presence.close()


def heartbeat(keys: tuple[bytes, bytes], now: float) -> list[list[bytes]]:
    """The heartbeat's commands, with the ZADD score and the ZREMRANGEBYSCORE bound as floats."""
    node_hash, nodes = keys
    return [
        [b"ZADD", nodes, now, NODE.encode()],
        [b"EXPIRE", node_hash, b"%d" % TTL],
        [b"EXPIRE", nodes, b"%d" % (TTL * 10)],
        [b"ZREMRANGEBYSCORE", nodes, b"-inf", now - TTL * 10],
    ]


def scores_as_floats(commands: list[list[bytes]]) -> list[list]:
    """The commands with the ZADD score and the ZREMRANGEBYSCORE upper bound read as numbers."""
    out = []
    for command in commands:
        if command[0] == b"ZADD":
            command = [*command[:2], float(command[2]), *command[3:]]
        elif command[0] == b"ZREMRANGEBYSCORE":
            command = [*command[:3], float(command[3])]
        out.append(command)
    return out


async def test_set_writes_the_count_and_keeps_the_hash_expiring(writer, commands, keys):
    node_hash, _ = keys
    writer.set("alice", 2)
    assert commands.take() == [
        [b"HSET", node_hash, b"alice", b"2"],
        [b"EXPIRE", node_hash, b"%d" % TTL],  # HSET may have created the hash
    ]
    assert commands.callbacks == [None, None]  # fire and forget: the next publish_all repairs any loss


async def test_set_to_zero_removes_the_id(writer, commands, keys):
    node_hash, _ = keys
    writer.set("alice", 0)
    assert commands.take() == [[b"HDEL", node_hash, b"alice"]]


async def test_nothing_is_written_while_disconnected(writer, commands):
    commands.connected = False
    writer.set("alice", 1)
    writer.set("bob", 0)
    assert commands.take() == []


async def test_a_reconnection_writes_the_whole_state_again(writer, commands, keys, counts, clock):
    node_hash, _ = keys
    commands.connected = False
    writer.set("alice", 2)  # not written: Redis is away
    counts.update({"alice": 2, "bob": 1})
    commands.come_up()
    assert scores_as_floats(commands.take()) == [
        [b"DEL", node_hash],  # Redis may hold a stale hash, or none
        [b"HSET", node_hash, b"alice", b"2", b"bob", b"1"],
        *heartbeat(keys, clock.now),
    ]


async def test_a_reconnection_with_no_connections_writes_no_empty_hset(writer, commands, keys, clock):
    node_hash, _ = keys
    commands.come_up()
    assert scores_as_floats(commands.take()) == [[b"DEL", node_hash], *heartbeat(keys, clock.now)]


async def test_the_heartbeat_renews_the_node_and_forgets_long_dead_ones(writer, commands, keys, clock):
    await clock.tick()
    assert clock.now == 1_700_000_010.0  # one RELAY_PRESENCE_HEARTBEAT later
    assert scores_as_floats(commands.take()) == heartbeat(keys, clock.now)
    await clock.tick()
    assert scores_as_floats(commands.take()) == heartbeat(keys, clock.now)


async def test_no_heartbeat_is_written_while_disconnected(writer, commands, keys, clock):
    commands.connected = False
    await clock.tick()
    await clock.tick()
    assert commands.take() == []
    commands.connected = True
    await clock.tick()
    assert scores_as_floats(commands.take()) == heartbeat(keys, clock.now)


async def test_close_removes_the_node_and_stops_the_heartbeat(writer, commands, keys, clock):
    node_hash, nodes = keys
    await until(lambda: clock.sleeping)
    writer.close()
    assert commands.take() == [[b"DEL", node_hash], [b"ZREM", nodes, NODE.encode()]]
    await asyncio.sleep(0)
    assert clock.sleeping == 0  # the heartbeat task was cancelled


async def test_close_while_disconnected_writes_nothing(writer, commands):
    commands.connected = False
    writer.close()
    assert commands.take() == []


async def test_the_keys_follow_the_configured_prefix(settings, clock, commands):
    settings.RELAY_REDIS_PREFIX = "other-app"
    presence = PresenceWriter(commands, conf.RELAY_REDIS_PREFIX, NODE, dict)
    presence.set("alice", 0)
    presence.close()
    assert commands.take() == [
        [b"HDEL", node_key("other-app", NODE).encode(), b"alice"],
        [b"DEL", node_key("other-app", NODE).encode()],
        [b"ZREM", nodes_key("other-app").encode(), NODE.encode()],
    ]
