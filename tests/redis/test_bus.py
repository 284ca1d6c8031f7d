"""The bus against a scripted Redis link (no server): subscriptions, publishing, receiving, keep-alive."""

import asyncio
import types
from collections import deque

import msgpack
import pytest

from relay.redis import bus as bus_module
from relay.redis import messages
from relay.redis.groups import LayerGroups
from relay.redis.keys import bus_channel, sessions_channel
from relay.redis.messages import LayerEvent
from relay.redis.resp import encode_command


class ScriptedLink:
    """Stands in for RedisLink: records writes; the test plays Redis's replies."""

    def __init__(self, server, name, on_reply):
        self.on_reply = on_reply
        self.writes: list[bytes] = []
        self.up = asyncio.Event()
        self.problem = "not connected yet"
        self._on_up, self._on_down = [], []

    connected = property(lambda self: self.up.is_set())
    starting = property(lambda self: self.problem == "not connected yet")

    def on_up(self, callback):
        self._on_up.append(callback)

    def on_down(self, callback):
        self._on_down.append(callback)

    def write(self, data):
        self.writes.append(data)

    def come_up(self):
        self.up.set()
        self.problem = None
        for callback in self._on_up:
            callback()

    def go_down(self):
        self.up.clear()
        self.problem = "connection lost"
        for callback in self._on_down:
            callback()

    def abort(self, reason):
        self.go_down()

    def close(self):
        pass


#: The channel of the orders about Django sessions (logouts), which every process listens to.
SESSIONS = b"relay:sessions"


@pytest.fixture
async def bus(monkeypatch):
    monkeypatch.setattr(bus_module, "RedisLink", ScriptedLink)
    monkeypatch.setattr(bus_module, "SUBSCRIBE_WAIT", 0.2)
    relay_bus = bus_module.RedisBus("redis://unused", "relay", "node", commands=None, receive=None)
    relay_bus._subscriber.come_up()
    assert relay_bus._subscriber.writes == [subscribe(SESSIONS)]  # with no id held yet
    relay_bus._subscriber.writes.clear()
    yield relay_bus
    relay_bus.close()


def subscribe(*channels: bytes) -> bytes:
    return encode_command(b"SUBSCRIBE", *channels)


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
    assert link.writes == [subscribe(b"relay:bus:x"), subscribe(SESSIONS)]  # x left: not resubscribed
    again = asyncio.ensure_future(bus.subscribe("x", first=True))
    await asyncio.sleep(0.01)
    assert link.writes[-1] == subscribe(b"relay:bus:x")  # a fresh SUBSCRIBE, not a stale wait
    confirm(link, b"relay:bus:x")
    await asyncio.wait_for(again, 1)


async def test_the_first_handshakes_after_a_start_wait_for_the_link(bus):
    link = bus._subscriber
    link.up.clear()
    link.problem = "not connected yet"  # as a RedisLink is before its first connection
    joining = asyncio.ensure_future(bus.subscribe("x", first=True))
    await asyncio.sleep(0.01)
    assert link.writes == [] and not joining.done()
    link.come_up()  # resubscribes every id, x included, and x then sends its own
    await asyncio.sleep(0.01)
    assert link.writes == [subscribe(SESSIONS, b"relay:bus:x"), subscribe(b"relay:bus:x")]
    confirm(link, b"relay:bus:x")
    confirm(link, b"relay:bus:x")
    await asyncio.wait_for(joining, 1)


# Publishing, receiving, the PING keep-alive and problem(), with a fake command pipe.

PREFIX = "test-prefix"
NODE = "node-1"


async def until(predicate, timeout: float = 2.0) -> None:
    """Wait until ``predicate()`` is true; fail the test if it is not within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail("the expected state was not reached in time")
        await asyncio.sleep(0.001)


def channel(client_id: str) -> bytes:
    return bus_channel(PREFIX, client_id).encode()


def message(client_id: str, data: bytes) -> list[bytes]:
    """What Redis sends a subscriber for a PUBLISH on the id's channel."""
    return [b"message", channel(client_id), data]


class RecordingLink(ScriptedLink):
    """A ScriptedLink that also records why it was aborted."""

    def __init__(self, server, name, on_reply):
        super().__init__(server, name, on_reply)
        self.aborts: list[str] = []

    def abort(self, reason):
        self.aborts.append(reason)
        super().abort(reason)


class FakeCommands:
    """Stands in for CommandPipe: records (command, reply callback) pairs."""

    def __init__(self):
        self.connected = True
        self.sent: list[tuple[bytes, object]] = []
        self.link = types.SimpleNamespace(problem="refused: WRONGPASS invalid username-password pair")

    def send(self, command, on_reply=None):
        self.sent.append((command, on_reply))


class ManualSleep:
    """Stands in for the bus module's ``asyncio``: ``sleep()`` returns when the test calls ``tick()``."""

    def __init__(self):
        self._sleepers: deque = deque()

    def __getattr__(self, name):  # the rest of asyncio
        return getattr(asyncio, name)

    async def sleep(self, delay):
        woken = asyncio.get_running_loop().create_future()
        self._sleepers.append(woken)
        await woken

    async def tick(self):
        """Let the keep-alive wake once, and run until it sleeps again."""
        await until(lambda: self._sleepers)
        self._sleepers.popleft().set_result(None)
        await until(lambda: self._sleepers)


def recorder():
    """(received, receive): a receive callback recording (client id, message)."""
    received: list = []

    async def receive(client_id, bus_message):
        received.append((client_id, bus_message))

    return received, receive


@pytest.fixture
async def make_bus(monkeypatch):
    """``make_bus(receive, commands)``: a bus on a recording subscriber link that is up."""
    monkeypatch.setattr(bus_module, "RedisLink", RecordingLink)
    made = []

    def make(receive=None, commands=None):
        relay_bus = bus_module.RedisBus("redis://unused", PREFIX, NODE, commands or FakeCommands(), receive)
        relay_bus._subscriber.come_up()
        made.append(relay_bus)
        return relay_bus

    yield make
    for relay_bus in made:
        relay_bus.close()
    await asyncio.sleep(0)


async def test_publish_writes_one_publish_per_target_marked_with_the_node(make_bus):
    commands = FakeCommands()
    relay_bus = make_bus(commands=commands)
    replies = []
    assert relay_bus.publish(["alice", "bob"], "carol", '{"n":1}', replies.append) is True
    data = messages.encode_live(NODE.encode(), "carol", '{"n":1}')
    assert commands.sent == [  # each PUBLISH's reply goes to the frame's callback
        (encode_command(b"PUBLISH", channel("alice"), data), replies.append),
        (encode_command(b"PUBLISH", channel("bob"), data), replies.append),
    ]
    assert messages.decode(data) == messages.Live(NODE.encode(), "carol", '{"n":1}')


async def test_publish_without_a_connection_returns_false_and_sends_nothing(make_bus):
    commands = FakeCommands()
    relay_bus = make_bus(commands=commands)
    commands.connected = False
    assert relay_bus.publish(["alice"], "carol", "1", None) is False
    assert commands.sent == []


async def test_frames_of_this_node_are_skipped_and_the_others_received_in_order(make_bus):
    received, receive = recorder()
    link = make_bus(receive)._subscriber
    link.on_reply(message("alice", messages.encode_live(NODE.encode(), "carol", "1")))  # ours: delivered already
    link.on_reply(message("alice", messages.encode_live(b"node-2", "carol", "2")))
    link.on_reply(message("bob", messages.encode_live(b"node-10", None, "3")))  # "node-1" starts its name
    link.on_reply(message("alice", messages.encode_disconnect(4000, "banned")))
    await until(lambda: len(received) == 3)
    await asyncio.sleep(0.01)
    assert received == [
        ("alice", messages.Live(b"node-2", "carol", "2")),
        ("bob", messages.Live(b"node-10", None, "3")),
        ("alice", messages.Disconnect(4000, "banned")),
    ]


async def test_the_sessions_channel_is_always_subscribed_and_its_orders_concern_no_one_id(make_bus):
    """A logout concerns connections of any client id (relay.logout): every process listens to it."""
    received, receive = recorder()
    link = make_bus(receive)._subscriber
    assert link.writes == [subscribe(sessions_channel(PREFIX).encode())]  # before any id is held
    ended = messages.SessionsEnded(4401, "logged out", ("session-1",), "42")
    link.on_reply([b"message", sessions_channel(PREFIX).encode(), messages.encode_sessions_ended(ended)])
    await until(lambda: received)
    assert received == [("", ended)]
    link.go_down()
    link.come_up()
    assert link.writes[-1] == subscribe(sessions_channel(PREFIX).encode())  # again after a reconnection


async def test_frames_arriving_during_a_slow_delivery_wait_their_turn(make_bus):
    started, finished = [], []
    slow = asyncio.Event()

    async def receive(client_id, bus_message):
        started.append(bus_message.payload_json)
        if bus_message.payload_json == "1":
            await slow.wait()
        finished.append(bus_message.payload_json)

    link = make_bus(receive)._subscriber
    link.on_reply(message("alice", messages.encode_live(b"node-2", "carol", "1")))
    await until(lambda: started)
    for n in ("2", "3"):
        link.on_reply(message("alice", messages.encode_live(b"node-2", "carol", n)))
    await asyncio.sleep(0.01)
    assert started == ["1"]  # one at a time
    slow.set()
    await until(lambda: len(finished) == 3)
    assert started == finished == ["1", "2", "3"]


async def test_a_message_that_is_not_the_relays_is_logged_and_ignored(make_bus, caplog):
    received, receive = recorder()
    link = make_bus(receive)._subscriber
    link.on_reply(message("alice", b"someone else's PUBLISH"))
    link.on_reply(message("alice", b"d\nnode-2\n\xff\xfe\n1"))  # not UTF-8
    link.on_reply(message("alice", b"x\nnot-a-code\nreason"))
    link.on_reply(message("alice", messages.encode_live(b"node-2", "carol", "4")))
    await until(lambda: received)
    await asyncio.sleep(0.01)
    assert received == [("alice", messages.Live(b"node-2", "carol", "4"))]
    ignored = [record for record in caplog.records if "event=bus_frame_ignored" in record.getMessage()]
    assert len(ignored) == 3


async def test_a_failing_delivery_is_logged_and_later_frames_still_arrive(make_bus, caplog):
    received, record = recorder()

    async def receive(client_id, bus_message):
        if client_id == "boom":
            raise RuntimeError("a bug in the hub")
        await record(client_id, bus_message)

    link = make_bus(receive)._subscriber
    link.on_reply(message("boom", messages.encode_live(b"node-2", "carol", "1")))
    link.on_reply(message("alice", messages.encode_live(b"node-2", "carol", "2")))
    await until(lambda: received)
    assert received == [("alice", messages.Live(b"node-2", "carol", "2"))]
    failed = [r for r in caplog.records if "delivering a frame from another process failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None


async def test_the_keep_alive_pings_and_drops_a_link_whose_redis_does_not_answer(make_bus, monkeypatch):
    ping = encode_command(b"PING")
    clock = ManualSleep()
    monkeypatch.setattr(bus_module, "asyncio", clock)
    link = make_bus()._subscriber
    link.writes.clear()  # the SUBSCRIBE of the sessions channel
    await clock.tick()
    assert link.writes == [ping]
    link.on_reply([b"pong", b""])  # the answer while subscribed
    await clock.tick()
    assert link.writes == [ping, ping]
    link.on_reply(b"PONG")  # the answer with no subscription
    await clock.tick()
    assert link.writes == [ping] * 3 and link.aborts == []
    await clock.tick()  # no answer for a whole round
    assert len(link.aborts) == 1 and "no answer to PING" in link.aborts[0]
    assert not link.connected
    await clock.tick()
    assert link.writes == [ping] * 3  # no PING while the link is down
    link.come_up()
    await clock.tick()
    resubscribed = subscribe(sessions_channel(PREFIX).encode())
    assert link.writes == [ping] * 3 + [resubscribed, ping] and len(link.aborts) == 1  # a fresh PING, not a stale wait


async def test_problem_reports_each_failure(make_bus):
    commands = FakeCommands()
    relay_bus = make_bus(commands=commands)
    assert relay_bus.problem() is None
    commands.connected = False
    assert relay_bus.problem() == "commands: refused: WRONGPASS invalid username-password pair"
    commands.connected = True
    relay_bus._subscriber.go_down()
    assert relay_bus.problem() == "subscriptions: connection lost"
    relay_bus._subscriber.come_up()
    assert relay_bus.problem() is None
    relay_bus._tasks[0].cancel()  # the dispatcher
    await asyncio.sleep(0)
    assert relay_bus.problem() == "a background task stopped"


# Channel-layer groups carried on the bus (relay.redis.groups).


@pytest.fixture
async def grouped_bus(monkeypatch):
    """A bus carrying the groups of a layer whose prefix is ``asgi``, and what it hands on."""
    monkeypatch.setattr(bus_module, "RedisLink", ScriptedLink)
    monkeypatch.setattr(bus_module, "SUBSCRIBE_WAIT", 0.2)
    received = []

    async def receive(client_id, message):
        received.append((client_id, message))

    groups = LayerGroups("asgi", msgpack.unpackb)
    relay_bus = bus_module.RedisBus("redis://unused", "relay", "node", commands=None, receive=receive, groups=groups)
    relay_bus._subscriber.come_up()
    relay_bus._subscriber.writes.clear()
    yield relay_bus, received
    relay_bus.close()


async def test_an_ids_group_channel_is_subscribed_with_its_bus_channel_and_waited_for(grouped_bus):
    bus, _ = grouped_bus
    link = bus._subscriber
    joining = asyncio.ensure_future(bus.subscribe("x", first=True))
    await asyncio.sleep(0.01)
    assert link.writes == [subscribe(b"relay:bus:x", b"asgi__group__relay.x")]
    confirm(link, b"relay:bus:x")
    await asyncio.sleep(0.01)
    assert not joining.done()  # a push sent once the handshake is seen must reach it: wait for both
    confirm(link, b"asgi__group__relay.x")
    await asyncio.wait_for(joining, 1)
    bus.unsubscribe("x")
    await asyncio.sleep(0)  # written with the others of the loop's turn
    assert link.writes[-1] == encode_command(b"UNSUBSCRIBE", b"relay:bus:x", b"asgi__group__relay.x")
    link.go_down()
    link.come_up()
    assert link.writes[-1] == subscribe(SESSIONS)  # x left: neither of its channels again


async def test_a_group_message_is_the_layers_event_for_that_id_and_garbage_is_ignored(grouped_bus, caplog):
    bus, received = grouped_bus
    link = bus._subscriber
    event = {"type": "relay.deliver", "payload": [1, "two"], "from": None}
    link.on_reply([b"message", b"asgi__group__relay.x", msgpack.packb(event)])
    link.on_reply([b"message", b"asgi__group__relay.x", b"\xc1 not msgpack"])
    link.on_reply([b"message", b"asgi__group__other.x", msgpack.packb(event)])  # not a relay group
    await asyncio.sleep(0.01)
    assert received == [("x", LayerEvent(event))]
    assert len([r for r in caplog.records if "event=bus_frame_ignored" in r.getMessage()]) == 2


async def test_the_subscriptions_of_a_burst_of_handshakes_are_one_write(bus):
    link = bus._subscriber
    joining = [asyncio.ensure_future(bus.subscribe(name, first=True)) for name in ("a", "b", "c")]
    bus.unsubscribe("old")
    await asyncio.sleep(0.01)
    assert link.writes == [
        encode_command(b"UNSUBSCRIBE", b"relay:bus:old")  # called first: the tasks run after
        + subscribe(b"relay:bus:a") + subscribe(b"relay:bus:b") + subscribe(b"relay:bus:c")
    ]  # fmt: skip
    for name in (b"a", b"b", b"c"):
        confirm(link, b"relay:bus:" + name)
    await asyncio.wait_for(asyncio.gather(*joining), 1)
