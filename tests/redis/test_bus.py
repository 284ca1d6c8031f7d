"""The bus's subscription bookkeeping, against a scripted Redis link (no server)."""

import asyncio

import pytest

from relay.redis import bus as bus_module
from relay.redis.resp import encode_command


class ScriptedLink:
    """Stands in for RedisLink: records writes; the test plays Redis's replies."""

    def __init__(self, url, name, on_reply):
        self.on_reply = on_reply
        self.writes: list[bytes] = []
        self.up = asyncio.Event()
        self._on_up, self._on_down = [], []

    connected = property(lambda self: self.up.is_set())

    def on_up(self, callback):
        self._on_up.append(callback)

    def on_down(self, callback):
        self._on_down.append(callback)

    def write(self, data):
        self.writes.append(data)

    def come_up(self):
        self.up.set()
        for callback in self._on_up:
            callback()

    def go_down(self):
        self.up.clear()
        for callback in self._on_down:
            callback()

    def abort(self, reason):
        self.go_down()

    def close(self):
        pass


@pytest.fixture
async def bus(monkeypatch):
    monkeypatch.setattr(bus_module, "RedisLink", ScriptedLink)
    monkeypatch.setattr(bus_module, "SUBSCRIBE_WAIT", 0.2)
    relay_bus = bus_module.RedisBus("redis://unused", "relay", "node", commands=None, deliver=None)
    relay_bus._subscriber.come_up()
    yield relay_bus
    relay_bus.close()


def subscribe(channel: bytes) -> bytes:
    return encode_command(b"SUBSCRIBE", channel)


def confirm(link: ScriptedLink, channel: bytes) -> None:
    link.on_reply([b"subscribe", channel, 1])


async def test_a_handshake_waits_until_redis_confirms_the_subscription(bus):
    link = bus._subscriber
    joining = asyncio.ensure_future(bus.subscribe("x", first=True))
    await asyncio.sleep(0.01)
    assert link.writes == [subscribe(b"relay:bus:x")] and not joining.done()
    confirm(link, b"relay:bus:x")
    await asyncio.wait_for(joining, 1)


async def test_a_second_connection_also_waits_for_the_pending_confirmation(bus):
    link = bus._subscriber
    first = asyncio.ensure_future(bus.subscribe("x", first=True))
    second = asyncio.ensure_future(bus.subscribe("x", first=False))
    await asyncio.sleep(0.01)
    assert not first.done() and not second.done()
    assert link.writes == [subscribe(b"relay:bus:x")]  # one SUBSCRIBE for both
    confirm(link, b"relay:bus:x")
    await asyncio.wait_for(asyncio.gather(first, second), 1)


async def test_leaving_while_a_subscribe_is_pending_then_coming_back_subscribes_again(bus):
    link = bus._subscriber
    first = asyncio.ensure_future(bus.subscribe("x", first=True))
    await asyncio.sleep(0.01)
    bus.unsubscribe("x")  # the id's only connection left before Redis answered
    again = asyncio.ensure_future(bus.subscribe("x", first=True))
    await asyncio.sleep(0.01)
    # SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE: Redis runs them in order and ends subscribed.
    assert link.writes == [
        subscribe(b"relay:bus:x"),
        encode_command(b"UNSUBSCRIBE", b"relay:bus:x"),
        subscribe(b"relay:bus:x"),
    ]
    confirm(link, b"relay:bus:x")
    await asyncio.wait_for(first, 1)
    assert not again.done()  # it waits for the confirmation of its own SUBSCRIBE
    confirm(link, b"relay:bus:x")
    await asyncio.wait_for(again, 1)


async def test_a_link_lost_while_a_subscribe_is_pending_leaves_nothing_stale(bus):
    link = bus._subscriber
    first = asyncio.ensure_future(bus.subscribe("x", first=True))
    await asyncio.sleep(0.01)
    link.go_down()
    await asyncio.wait_for(first, 1)  # not left waiting for a reply that cannot come
    bus.unsubscribe("x")
    link.come_up()
    assert link.writes == [subscribe(b"relay:bus:x")]  # x left: not resubscribed
    again = asyncio.ensure_future(bus.subscribe("x", first=True))
    await asyncio.sleep(0.01)
    assert link.writes[-1] == subscribe(b"relay:bus:x")  # a fresh SUBSCRIBE, not a stale wait
    confirm(link, b"relay:bus:x")
    await asyncio.wait_for(again, 1)


async def test_the_first_handshakes_after_a_start_wait_for_the_link(bus):
    link = bus._subscriber
    link.up.clear()
    joining = asyncio.ensure_future(bus.subscribe("x", first=True))
    await asyncio.sleep(0.01)
    assert link.writes == [] and not joining.done()
    link.come_up()  # resubscribes every id, x included, and x then sends its own
    await asyncio.sleep(0.01)
    assert link.writes == [subscribe(b"relay:bus:x"), subscribe(b"relay:bus:x")]
    confirm(link, b"relay:bus:x")
    confirm(link, b"relay:bus:x")
    await asyncio.wait_for(joining, 1)
