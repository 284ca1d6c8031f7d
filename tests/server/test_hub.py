"""The hub: join/leave bookkeeping, local delivery, relaying with acks and ``unavailable``, drain, hubs per loop."""

import asyncio

import hiredis
import pytest
from prometheus_client import REGISTRY

from relay import protocol
from relay.connections import Connection
from relay.redis import streams
from relay.redis.messages import Disconnect, Live, SessionsEnded, Stored
from relay.redis.resp import LINK_LOST
from relay.redis.servers import server_of, shard_index
from relay.redis.streams import Settings
from relay.server import hub as hub_module
from relay.server import sessions as sessions_module
from relay.server.hub import Hub, get_hub, running_hub
from relay.server.throttling import BucketsById

V1 = protocol.SUBPROTOCOL_V1


class FakeConnection:
    """Records what the hub sends it; ``events`` (shared) records the order of things."""

    def __init__(
        self, client_id: str, subprotocol: str | None = None, events: list | None = None, session_key=None, user=None
    ):
        self.client_id = client_id
        self.subprotocol = subprotocol
        self.session_key = session_key  # the Django session that proved the identity, if one did
        self.info = Connection(client_id, "connection-id", user)
        self.events = events if events is not None else []
        self.delivered: list[tuple[str, streams.Position | None]] = []
        self.sent: list[str] = []  # send_text and post_text
        self.errors: list[tuple[str, object]] = []
        self.error_targets: list[str] = []  # the targets errors named (``unavailable`` per target)
        self.closed: list[tuple[int, str]] = []

    async def deliver(self, text, position):
        self.events.append(("deliver", self.client_id))
        self.delivered.append((text, position))

    async def send_text(self, text):
        self.sent.append(text)

    def post_text(self, text):
        self.sent.append(text)

    def post_error(self, code, detail, ref=None, target=None):
        assert detail and (target is None or target in detail)
        self.errors.append((code, ref))
        if target is not None:
            self.error_targets.append(target)

    def on_relay_reply(self, reply):  # as the consumer's: failures of frames without an id
        if isinstance(reply, hiredis.ReplyError):
            self.post_error("unavailable", "lost", None)

    async def close(self, code, reason=""):
        self.closed.append((code, reason))


class BrokenConnection(FakeConnection):
    async def deliver(self, text, position):
        raise ConnectionResetError("the socket is gone")


class FakeBus:
    """Records subscriptions and publishes; ``reachable`` is what publish() returns."""

    def __init__(self, events: list):
        self.events = events
        self.reachable = True
        self.on_replies: list = []

    async def subscribe(self, client_id, first):
        self.events.append(("subscribe", client_id, first))

    def unsubscribe(self, client_id):
        self.events.append(("unsubscribe", client_id))

    def publish(self, targets, sender, payload_json, on_reply):
        self.events.append(("publish", tuple(targets), sender, payload_json))
        if self.reachable:
            self.on_replies.extend(on_reply for _ in targets)  # one PUBLISH, so one reply, per target
        return self.reachable


class FakePresence:
    def __init__(self, events: list):
        self.events = events

    def set(self, client_id, connections):
        self.events.append(("presence", client_id, connections))


class FakeCommands:
    def __init__(self):
        self.connected = True


class FakeShard:
    """One fake Redis server: a bus, presence, commands and (with history) streams."""

    def __init__(self, events: list, history: "FakeHistory | None" = None):
        self.bus = FakeBus(events)
        self.presence = FakePresence(events)
        self.commands = FakeCommands()
        self.history = history
        self.server = server_of("redis://fake:6379")

    def problem(self):
        return None if self.commands.connected else "commands: not connected"


class FakeHistory:
    """Records appends and their reply callbacks."""

    def __init__(self):
        self.appended: list[tuple[str, str | None, str]] = []
        self.on_replies: list = []

    def append(self, client_id, sender, payload_json, on_reply):
        self.appended.append((client_id, sender, payload_json))
        self.on_replies.append(on_reply)


async def accept():
    pass


@pytest.fixture
def events() -> list:
    return []


@pytest.fixture
def hub() -> Hub:
    """A hub without Redis."""
    return Hub((), "prefix")


@pytest.fixture
def wired_hub(events) -> Hub:
    """A hub with a fake bus and fake presence, both recording into ``events``."""
    wired = Hub((), "prefix")
    wired._shards = (FakeShard(events),)
    return wired


@pytest.fixture
def history_hub(events) -> Hub:
    """A hub with delivery history: a fake command pipe and fake streams."""
    with_history = Hub((), "prefix")
    with_history._shards = (FakeShard(events, FakeHistory()),)
    with_history.history = Settings(100, 300, 86400)
    return with_history


def deliveries() -> float:
    return REGISTRY.get_sample_value("relay_deliveries_total") or 0.0


# join and leave


async def test_join_subscribes_then_accepts_then_delivers(wired_hub, events):
    connection = FakeConnection("alice", events=events)

    async def accepting():
        events.append(("accept",))
        assert wired_hub.connection_count() == 1  # counted from the start of the handshake
        assert wired_hub.local_connections() == {}  # not delivered to before the handshake
        await wired_hub.deliver("alice", "bob", '"early"')

    await wired_hub.join(connection, accepting)
    assert events == [("subscribe", "alice", True), ("accept",), ("presence", "alice", 1)]
    assert connection.delivered == []
    assert wired_hub.local_connections() == {"alice": 1}
    await wired_hub.deliver("alice", "bob", '"now"')
    assert connection.delivered == [('"now"', None)]


async def test_a_handshake_in_progress_is_a_member_but_not_an_open_connection(hub):
    accepted = asyncio.Event()

    async def slow_accept():
        await accepted.wait()

    joining = asyncio.ensure_future(hub.join(FakeConnection("alice"), slow_accept))
    await asyncio.sleep(0)
    assert hub.connection_count() == 1
    assert hub.local_connections() == {}
    accepted.set()
    await joining
    assert hub.connection_count() == 1
    assert hub.local_connections() == {"alice": 1}


async def test_connections_of_one_id_share_its_subscription_until_the_last_leaves(wired_hub, events):
    first, second, other = FakeConnection("alice"), FakeConnection("alice"), FakeConnection("carol")
    for connection in (first, second, other):
        await wired_hub.join(connection, accept)
    assert wired_hub.local_connections() == {"alice": 2, "carol": 1}
    assert wired_hub.connection_count() == 3
    events.clear()
    wired_hub.leave(first)
    assert events == [("presence", "alice", 1)]  # alice is still here: no unsubscribe
    wired_hub.leave(second)
    assert events[1:] == [("presence", "alice", 0), ("unsubscribe", "alice")]
    assert wired_hub.local_connections() == {"carol": 1}
    assert wired_hub.connection_count() == 1


async def test_joins_after_the_first_do_not_subscribe_again(wired_hub, events):
    await wired_hub.join(FakeConnection("alice"), accept)
    await wired_hub.join(FakeConnection("alice"), accept)
    assert [event for event in events if event[0] == "subscribe"] == [
        ("subscribe", "alice", True),
        ("subscribe", "alice", False),
    ]
    assert [event for event in events if event[0] == "presence"] == [("presence", "alice", 1), ("presence", "alice", 2)]


async def test_leave_after_a_failed_handshake_releases_the_subscription_and_leaves_presence_alone(wired_hub, events):
    connection = FakeConnection("alice")

    async def refused():
        raise ConnectionResetError("the client went away during the handshake")

    with pytest.raises(ConnectionResetError):
        await wired_hub.join(connection, refused)
    wired_hub.leave(connection)
    assert events == [("subscribe", "alice", True), ("unsubscribe", "alice")]
    assert wired_hub.connection_count() == 0
    assert wired_hub.local_connections() == {}


# delivering to this process's connections


async def test_a_frame_is_encoded_once_per_framing_for_every_connection_it_reaches(hub, monkeypatch):
    encode = protocol.encode_delivery
    encoded = []

    def counting_encode(subprotocol, sender, payload_json, position=None):
        encoded.append(subprotocol)
        return encode(subprotocol, sender, payload_json, position)

    monkeypatch.setattr(protocol, "encode_delivery", counting_encode)
    plain = [FakeConnection("alice") for _ in range(3)] + [FakeConnection("bob") for _ in range(2)]
    enveloped = [FakeConnection("alice", V1) for _ in range(3)] + [FakeConnection("bob", V1) for _ in range(2)]
    for connection in plain + enveloped:
        await hub.join(connection, accept)
    await hub.relay(FakeConnection("carol"), protocol.Frame(targets=("alice", "bob"), payload_json='{"n":1}'))
    assert sorted(encoded, key=str) == [None, V1]  # once per framing, for 10 sockets over 2 targets
    assert all(connection.delivered == [('{"n":1}', None)] for connection in plain)
    v1_frame = encode(V1, "carol", '{"n":1}')
    assert all(connection.delivered == [(v1_frame, None)] for connection in enveloped)


async def test_deliver_to_an_id_without_connections_here_sends_nothing(hub):
    connection = FakeConnection("alice")
    await hub.join(connection, accept)
    before = deliveries()
    await hub.deliver("bob", "carol", "1")
    assert connection.delivered == []
    assert deliveries() == before


async def test_a_failing_connection_does_not_stop_delivery_nor_reach_the_sender(hub, caplog):
    working = [FakeConnection("alice"), FakeConnection("alice")]
    broken = BrokenConnection("alice")
    for connection in (working[0], broken, working[1]):
        await hub.join(connection, accept)
    sender = FakeConnection("carol", V1)
    before = deliveries()
    await hub.relay(sender, protocol.Frame(targets=("alice",), payload_json="1", ref="r1"))
    assert all(connection.delivered == [("1", None)] for connection in working)
    assert sender.errors == []
    assert sender.sent == [protocol.encode_ack("r1", {})]  # acked as usual
    assert deliveries() - before == 2  # the sockets actually reached
    assert len([r for r in caplog.records if "event=send_failed client=alice" in r.getMessage()]) == 1


async def test_bus_messages_are_delivered_or_close_connections(hub):
    plain, enveloped, other = FakeConnection("alice"), FakeConnection("alice", V1), FakeConnection("bob")
    for connection in (plain, enveloped, other):
        await hub.join(connection, accept)
    await hub.receive("alice", Live(b"other-node", "carol", '{"n":2}'))
    await hub.receive("alice", Stored("e1", 7, None, '{"n":3}'))
    position = streams.Position("e1", 7)
    assert plain.delivered == [('{"n":2}', None), ('{"n":3}', position)]
    assert enveloped.delivered == [
        (protocol.encode_delivery(V1, "carol", '{"n":2}'), None),
        (protocol.encode_delivery(V1, None, '{"n":3}', position), position),
    ]
    await hub.receive("alice", Disconnect(4000, "banned"))
    assert plain.closed == enveloped.closed == [(4000, "banned")]
    assert other.delivered == [] and other.closed == []
    assert await hub.disconnect("nobody", 4000, "") == 0


# relaying a client frame


@pytest.mark.parametrize(
    ("subprotocol", "ref", "acked"),
    [(V1, "m-1", True), (V1, None, False), (None, "m-1", False)],
    ids=["v1-with-id", "v1-without-id", "plain"],
)
async def test_without_redis_a_frame_is_delivered_here_and_acked_if_asked(hub, subprotocol, ref, acked):
    receiver = FakeConnection("alice")
    await hub.join(receiver, accept)
    sender = FakeConnection("carol", subprotocol)
    await hub.relay(sender, protocol.Frame(targets=("alice", "bob"), payload_json='"hi"', ref=ref))
    assert receiver.delivered == [('"hi"', None)]
    assert sender.sent == ([protocol.encode_ack(ref, {})] if acked else [])
    assert sender.errors == []


async def test_relay_delivers_here_then_publishes_and_acks_once_every_publish_was_taken(wired_hub, events):
    await wired_hub.join(FakeConnection("alice", events=events), accept)
    sender = FakeConnection("carol", V1)
    events.clear()
    await wired_hub.relay(sender, protocol.Frame(targets=("alice", "bob"), payload_json='"hi"', ref=7))
    assert events == [("deliver", "alice"), ("publish", ("alice", "bob"), "carol", '"hi"')]
    first, second = wired_hub._shards[0].bus.on_replies
    first(1)
    assert sender.sent == []  # bob's PUBLISH has not answered yet
    second(0)  # taken, whether or not a process holds bob
    assert sender.sent == [protocol.encode_ack(7, {})]
    assert sender.errors == []


@pytest.mark.parametrize(
    "replies",
    [
        [hiredis.ReplyError("NOPERM no"), 1],
        [LINK_LOST, LINK_LOST],  # the link went down with both PUBLISHes in flight
        [1, LINK_LOST],
    ],
    ids=["refused", "link-lost", "second-lost"],
)
async def test_a_publish_that_fails_sends_unavailable_with_the_ref_once_per_frame(wired_hub, replies):
    sender = FakeConnection("carol", V1)
    await wired_hub.relay(sender, protocol.Frame(targets=("alice", "bob"), payload_json='"hi"', ref="m-2"))
    for on_reply, reply in zip(wired_hub._shards[0].bus.on_replies, replies, strict=True):
        on_reply(reply)
    assert sender.errors == [(protocol.UNAVAILABLE, "m-2")]
    assert sender.sent == []  # no ack for a frame that may be lost


async def test_a_sender_in_the_original_framing_gets_no_ack_but_hears_unavailable(wired_hub):
    sender = FakeConnection("carol")  # no relay.v1: the original framing has no ack frame
    await wired_hub.relay(sender, protocol.Frame(targets=("alice",), payload_json='"hi"', ref="m-4"))
    wired_hub._shards[0].bus.on_replies[0](1)
    assert sender.sent == [] and sender.errors == []
    await wired_hub.relay(sender, protocol.Frame(targets=("alice",), payload_json='"hi"', ref="m-5"))
    wired_hub._shards[0].bus.on_replies[1](LINK_LOST)
    assert sender.errors == [(protocol.UNAVAILABLE, "m-5")]


async def test_relay_tells_the_sender_when_the_other_processes_cannot_be_reached(wired_hub):
    receiver = FakeConnection("alice")
    await wired_hub.join(receiver, accept)
    wired_hub._shards[0].bus.reachable = False
    sender = FakeConnection("carol")
    await wired_hub.relay(sender, protocol.Frame(targets=("alice", "bob"), payload_json='"hi"', ref="m-3"))
    assert receiver.delivered == [('"hi"', None)]  # this process's connections got it all the same
    assert sender.errors == [(protocol.UNAVAILABLE, "m-3")]


async def test_with_history_a_frame_is_appended_to_each_target_and_acked_with_the_offsets(history_hub):
    receiver = FakeConnection("alice")
    await history_hub.join(receiver, accept)
    sender = FakeConnection("carol", V1)
    await history_hub.relay(sender, protocol.Frame(targets=("alice", "bob"), payload_json='"hi"', ref=9))
    assert history_hub._shards[0].history.appended == [("alice", "carol", '"hi"'), ("bob", "carol", '"hi"')]
    assert receiver.delivered == []  # delivered from the stream, in its order, when Redis publishes it
    stored_alice, stored_bob = history_hub._shards[0].history.on_replies
    stored_alice([b"e1", 4])
    assert sender.sent == []
    stored_bob([b"e2", 11])
    assert sender.sent == [protocol.encode_ack(9, {"alice": 4, "bob": 11})]


async def test_with_history_every_failed_append_is_unavailable_naming_its_target_and_no_ack(history_hub):
    sender = FakeConnection("carol", V1)
    await history_hub.relay(sender, protocol.Frame(targets=("alice", "bob"), payload_json='"hi"', ref=9))
    for on_reply in history_hub._shards[0].history.on_replies:
        on_reply(LINK_LOST)
    assert sender.errors == [(protocol.UNAVAILABLE, 9)] * 2
    assert sender.error_targets == ["alice", "bob"]
    assert sender.sent == []  # no target has it: no ack


async def test_with_history_a_partly_stored_frame_names_the_target_that_missed_it_then_acks_the_others(history_hub):
    """A retry of the whole frame would deliver it twice to the targets that have it."""
    sender = FakeConnection("carol", V1)
    await history_hub.relay(sender, protocol.Frame(targets=("alice", "bob"), payload_json='"hi"', ref=9))
    stored_alice, stored_bob = history_hub._shards[0].history.on_replies
    stored_bob(LINK_LOST)
    assert (sender.errors, sender.error_targets, sender.sent) == ([(protocol.UNAVAILABLE, 9)], ["bob"], [])
    stored_alice([b"e1", 4])
    assert sender.sent == [protocol.encode_ack(9, {"alice": 4})]


def ids_on(shard: int, count: int) -> list[str]:
    """``count`` client ids that hash to ``shard`` of two."""
    return [f"id-{n}" for n in range(100) if shard_index(f"id-{n}", 2, "asgi") == shard][:count]


async def test_with_two_shards_the_targets_on_the_one_down_are_unavailable_and_the_others_acked(events):
    hub = Hub((), "prefix")
    up, down = FakeShard(events, FakeHistory()), FakeShard(events, FakeHistory())
    hub._shards, hub.history = (up, down), Settings(100, 300, 86400)
    down.commands.connected = False
    (x,), (y1, y2) = ids_on(0, 1), ids_on(1, 2)
    sender = FakeConnection("carol", V1)
    await hub.relay(sender, protocol.Frame(targets=(y1, x, y2), payload_json='"hi"', ref=2))
    assert (sender.errors, sender.error_targets) == ([(protocol.UNAVAILABLE, 2)] * 2, [y1, y2])
    assert up.history.appended == [(x, "carol", '"hi"')] and down.history.appended == []
    up.history.on_replies[0]([b"e1", 2])
    assert sender.sent == [protocol.encode_ack(2, {x: 2})]
    sender = FakeConnection("carol")  # no id: the per-message path names its target too
    await hub.relay(sender, protocol.Frame(targets=(y1,), payload_json='"hi"'))
    assert (sender.errors, sender.error_targets) == ([(protocol.UNAVAILABLE, None)], [y1])


async def test_with_history_and_redis_away_a_frame_is_refused(history_hub):
    receiver = FakeConnection("alice")
    await history_hub.join(receiver, accept)
    history_hub._shards[0].commands.connected = False
    sender = FakeConnection("carol", V1)
    await history_hub.relay(sender, protocol.Frame(targets=("alice",), payload_json='"hi"', ref=9))
    assert (sender.errors, sender.error_targets) == ([(protocol.UNAVAILABLE, 9)], ["alice"])
    assert history_hub._shards[0].history.appended == [] and receiver.delivered == []
    assert sender.sent == []


# the history budget (RELAY_HISTORY_RATE)


async def test_a_frame_over_its_senders_history_budget_is_refused_whole(history_hub):
    cost = streams.stored_bytes("carol", '"hi"', 2)
    history_hub._budgets = BucketsById(rate=1, burst=2 * cost)
    sender, other_connection = FakeConnection("carol", V1), FakeConnection("carol", V1)
    for connection, ref in ((sender, 1), (other_connection, 2), (sender, 3)):
        await history_hub.relay(connection, protocol.Frame(targets=("alice", "bob"), payload_json='"hi"', ref=ref))
    assert len(history_hub._shards[0].history.appended) == 4  # two frames: then the id's budget is spent
    assert sender.errors == [(protocol.HISTORY_LIMITED, 3)] and other_connection.errors == []
    await history_hub.relay(FakeConnection("dave", V1), protocol.Frame(("alice",), '"hi"', 4))
    assert len(history_hub._shards[0].history.appended) == 5  # every id its own budget


async def test_a_frame_that_would_store_more_than_the_burst_says_so(history_hub):
    history_hub._budgets = BucketsById(rate=1_000_000, burst=10_000)
    sender = FakeConnection("carol", V1)
    sent = []
    sender.post_error = lambda code, detail, ref=None, target=None: sent.append((code, detail))
    await history_hub.relay(sender, protocol.Frame(tuple(f"t{n}" for n in range(10)), '"hi"', 1))
    ((code, detail),) = sent
    assert code == protocol.HISTORY_LIMITED and "more than a client may store at once (10000)" in detail
    assert history_hub._shards[0].history.appended == []


# drain


class LeavingConnection(FakeConnection):
    """Leaves the hub a little after it is closed, as a consumer does once the socket is gone."""

    def __init__(self, hub: Hub, client_id: str):
        super().__init__(client_id)
        self.hub = hub

    async def close(self, code, reason=""):
        await super().close(code, reason)
        asyncio.get_running_loop().call_later(0.01, self.hub.leave, self)


async def test_drain_closes_every_connection_and_waits_for_them_to_leave(hub):
    connections = [LeavingConnection(hub, "alice"), LeavingConnection(hub, "alice"), LeavingConnection(hub, "bob")]
    for connection in connections:
        await hub.join(connection, accept)
    await asyncio.wait_for(hub.drain(protocol.CLOSE_GOING_AWAY, timeout=5), 1)
    assert hub.draining
    assert [connection.closed for connection in connections] == [[(protocol.CLOSE_GOING_AWAY, "")]] * 3
    assert hub.connection_count() == 0


async def test_drain_gives_up_waiting_after_the_timeout(hub):
    stuck = FakeConnection("alice")  # closed, but never leaves
    await hub.join(stuck, accept)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await hub.drain(protocol.CLOSE_GOING_AWAY, timeout=0.1)
    assert 0.1 <= loop.time() - started < 1
    assert stuck.closed == [(protocol.CLOSE_GOING_AWAY, "")]
    assert hub.connection_count() == 1


async def test_drain_with_no_connections_returns_at_once(hub):
    await asyncio.wait_for(hub.drain(protocol.CLOSE_GOING_AWAY, timeout=5), 0.5)
    assert hub.draining


# one hub per event loop


async def test_get_hub_returns_one_hub_per_event_loop(settings):
    settings.RELAY_REDIS_URL = None
    assert running_hub() is None  # none started yet in this loop
    hub = get_hub()
    assert get_hub() is hub and running_hub() is hub

    async def hubs_of_another_loop():
        return get_hub(), get_hub()

    first, second = await asyncio.to_thread(asyncio.run, hubs_of_another_loop())
    assert first is second
    assert first is not hub


async def test_local_connections_adds_up_every_hub(monkeypatch):
    one, two = Hub((), "prefix"), Hub((), "prefix")
    for client_id in ("alice", "bob"):
        await one.join(FakeConnection(client_id), accept)
    for client_id in ("alice", "alice", "carol"):
        await two.join(FakeConnection(client_id), accept)
    handshaking = asyncio.ensure_future(two.join(FakeConnection("dave"), asyncio.Event().wait))
    await asyncio.sleep(0)
    monkeypatch.setattr(hub_module, "_hubs", {"loop-1": one, "loop-2": two})
    try:
        assert hub_module.local_connections() == {"alice": 3, "bob": 1, "carol": 1}  # open ones only
        assert hub_module.local_hubs() == [one, two]
    finally:
        handshaking.cancel()


async def test_a_hub_without_redis_has_no_redis_state(hub):
    assert hub.redis_up("alice") is None
    assert hub.problem() is None
    assert hub.history is None


# closing one session's connections (logout; issue 12)


async def test_a_session_disconnect_closes_only_that_sessions_connections(hub):
    tab, other_tab = FakeConnection("alice"), FakeConnection("alice")
    tab.session_key = other_tab.session_key = "session-1"
    other_browser = FakeConnection("alice")
    other_browser.session_key = "session-2"
    by_token = FakeConnection("alice")  # no session_key: a token or ?id= connection
    for connection in (tab, other_tab, other_browser, by_token):
        await hub.join(connection, accept)
    await hub.receive("alice", Disconnect(4401, "logged out", "session-1"))
    assert tab.closed == other_tab.closed == [(4401, "logged out")]
    assert other_browser.closed == by_token.closed == []
    assert await hub.disconnect("alice", 4401, "logged out", "session-3") == 0
    assert await hub.disconnect("alice", 4000, "") == 4  # without a session: every connection of the id


class User:
    def __init__(self, pk):
        self.pk = pk


async def test_the_end_of_sessions_closes_their_connections_whatever_their_id_and_checks_the_users_others(
    hub, monkeypatch
):
    """The findings: a logout missed a socket whose session key had changed, and those of a site's own backend."""
    checked = []

    async def session_logs_in(session_key, user):  # what relay.identity.sessions reads from Django
        checked.append((session_key, user))
        return session_key == "still-valid"

    monkeypatch.setattr(sessions_module, "session_logs_in", session_logs_in)
    alice = User(7)
    logging_out = FakeConnection("user-7", session_key="s-1", user=alice)  # a site's own backend's client id
    cycled_away = FakeConnection("7", session_key="s-cycled", user=alice)  # gone with a password change, say
    other_browser = FakeConnection("7", session_key="still-valid", user=alice)
    someone_else = FakeConnection("8", session_key="s-8", user=User(8))
    by_token = FakeConnection("7")
    for connection in (logging_out, cycled_away, other_browser, someone_else, by_token):
        await hub.join(connection, accept)

    await hub.receive("", SessionsEnded(4401, "logged out", ("s-1",), "7"))  # as the bus hands it on
    assert logging_out.closed == []  # not yet: in a task of its own, not holding up the bus's deliveries
    await asyncio.wait_for(asyncio.gather(*hub._ending), 1)
    assert logging_out.closed == cycled_away.closed == [(4401, "logged out")]
    assert other_browser.closed == someone_else.closed == by_token.closed == []
    assert sorted(checked) == [("s-cycled", "7"), ("still-valid", "7")]  # s-1 ended: nothing to ask
    for connection in (logging_out, cycled_away):
        hub.leave(connection)
    checked.clear()
    assert await hub.end_sessions(SessionsEnded(4401, "logged out", ("s-8",), None)) == 1  # a login over it
    assert someone_else.closed == [(4401, "logged out")] and checked == []
    assert await hub.end_sessions(SessionsEnded(4401, "logged out", ("s-1", "s-cycled"), None)) == 0  # they left


async def test_a_session_that_ends_during_a_handshake_closes_that_connection_too(hub):
    """The finding: a tab reconnecting while its user logged out was accepted with the ended session."""
    reconnecting = FakeConnection("7", session_key="s-1", user=User(7))
    ended = []

    async def accept_after_the_logout():
        ended.append(await hub.end_sessions(SessionsEnded(4401, "logged out", ("s-1",), None)))

    await hub.join(reconnecting, accept_after_the_logout)
    assert ended == [1] and reconnecting.closed == [(4401, "logged out")]  # the consumer closes it once accepted
    hub.leave(reconnecting)
    assert await hub.end_sessions(SessionsEnded(4401, "logged out", ("s-1",), None)) == 0  # it left the index


async def test_a_session_that_cannot_be_checked_is_left_open_and_the_others_still_close(hub, monkeypatch, caplog):
    async def session_logs_in(session_key, user):
        raise ConnectionError("the database is away")

    monkeypatch.setattr(sessions_module, "session_logs_in", session_logs_in)
    logging_out = FakeConnection("7", session_key="s-1", user=User(7))
    other = FakeConnection("7", session_key="s-2", user=User(7))
    for connection in (logging_out, other):
        await hub.join(connection, accept)
    assert await hub.end_sessions(SessionsEnded(4401, "logged out", ("s-1",), "7")) == 1
    assert (logging_out.closed, other.closed) == ([(4401, "logged out")], [])
    failed = [r for r in caplog.records if r.getMessage() == "event=session_check_failed connections=1"]
    assert len(failed) == 1 and failed[0].exc_info is not None


async def test_connections_of_counts_an_id_from_the_start_of_its_handshake(hub):
    seen = []

    async def accepting():
        seen.append(hub.connections_of("alice"))

    assert hub.connections_of("alice") == 0
    first = FakeConnection("alice")
    await hub.join(first, accepting)
    await hub.join(FakeConnection("alice"), accepting)
    assert seen == [1, 2] and hub.connections_of("alice") == 2 and hub.connections_of("bob") == 0
    hub.leave(first)
    assert hub.connections_of("alice") == 1
