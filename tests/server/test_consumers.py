"""RelayConsumer over WebsocketCommunicator: framings, errors, fan-out, ordering, server pushes."""

import json

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from relay import protocol
from relayproject.asgi import application
from tests.conftest import BAD_FRAMES, frame, send_bytes, send_text

V1 = ["relay.v1"]


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def envelope(sender, payload) -> dict:
    return {"type": "message", "from": sender, "payload": payload}


def push_event(payload, sender=None) -> dict:
    return {"type": "relay.deliver", "from": sender, "payload": payload}


# Framings


@pytest.mark.parametrize(
    "payload",
    [None, 0, -2.5, True, "text", "é😀", [], [1, [2, None]], {}, {"a": {"b": [True, None, "x"]}}],
)
async def test_raw_delivery_is_exactly_the_payload_json(connect, payload):
    alice = await connect("alice")
    bob = await connect("bob")
    await send_text(alice, frame(["bob"], payload))
    assert await bob.receive_from() == compact(payload)
    assert await bob.receive_nothing(timeout=0.01)


@pytest.mark.parametrize(
    ("subprotocols", "chosen"),
    [
        (None, None),
        (["other"], None),
        (["relay.v1"], "relay.v1"),
        (["other", "relay.v1"], "relay.v1"),
        (["relay.v2"], None),
    ],
)
async def test_subprotocol_negotiation(subprotocols, chosen):
    communicator = WebsocketCommunicator(application, "/ws?id=alice", subprotocols=subprotocols)
    assert await communicator.connect() == (True, chosen)
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("framings", "subprotocols", "accepted", "chosen"),
    [
        (["relay.v1"], None, False, None),  # the default with DEBUG off: no original framing
        (["relay.v1"], ["other"], False, None),
        (["relay.v1"], ["relay.v1"], True, "relay.v1"),
        (["original"], ["relay.v1"], True, None),
        (["original"], None, True, None),
    ],
)
async def test_a_framing_that_is_off_is_refused_before_accept(
    settings, caplog, framings, subprotocols, accepted, chosen
):
    """Issue 12: in the original framing a client's message is the very bytes of a server push."""
    settings.RELAY_FRAMINGS = framings
    communicator = WebsocketCommunicator(application, "/ws?id=alice", subprotocols=subprotocols)
    connected, subprotocol = await communicator.connect()
    assert connected is accepted
    if accepted:
        assert subprotocol == chosen
        await communicator.disconnect()
    else:
        (line,) = [r.getMessage() for r in caplog.records if "event=refused" in r.getMessage()]
        assert "reason=framing" in line and "RELAY_FRAMINGS" in line and "relay.v1 subprotocol" in line


def test_the_original_framing_is_off_by_default_with_debug_off(settings):
    from relay.conf import conf

    del settings.RELAY_FRAMINGS
    settings.DEBUG = False
    assert conf.RELAY_FRAMINGS == ["relay.v1"]
    settings.DEBUG = True
    assert conf.RELAY_FRAMINGS == ["relay.v1", "original"]


async def test_connections_past_the_per_id_limit_are_refused(settings, caplog, connect):
    """Issue 12: 1,000 sockets on one token were all accepted."""
    settings.RELAY_MAX_CONNECTIONS_PER_ID = 3
    opened = [await connect("alice") for _ in range(3)]
    fourth = WebsocketCommunicator(application, "/ws?id=alice")
    assert await fourth.connect() == (False, 1000)
    (line,) = [r.getMessage() for r in caplog.records if "event=refused" in r.getMessage()]
    assert "reason=too_many_connections" in line and "RELAY_MAX_CONNECTIONS_PER_ID" in line
    other = await connect("bob")  # another id has its own count
    await opened[0].disconnect()
    again = await connect("alice")  # one closed: there is room again
    await send_text(other, frame(["alice"], "still here"))
    for communicator in (*opened[1:], again):
        assert await communicator.receive_from() == '"still here"'


async def test_a_handshake_while_draining_is_accepted_and_closed_with_1001(connect):
    """Not refused (403): a refusal tells relay.js and relay.client to stop; 1001 to reconnect elsewhere."""
    from relay.server.hub import get_hub

    await connect("alice")  # the hub runs
    hub = get_hub()
    hub.draining = True
    try:
        late = WebsocketCommunicator(application, "/ws?id=bob", subprotocols=V1)
        connected, subprotocol = await late.connect()
        assert (connected, subprotocol) == (True, "relay.v1")
        assert await late.receive_output() == {"type": "websocket.close", "code": 1001}
    finally:
        hub.draining = False
    assert hub.connections_of("bob") == 0


async def test_v1_delivery_is_an_envelope_with_the_sender(connect):
    alice = await connect("alice")
    bob = await connect("bob", V1)
    await send_text(alice, frame(["bob"], {"a": [1, None]}))
    assert json.loads(await bob.receive_from()) == envelope("alice", {"a": [1, None]})


async def test_each_connection_gets_its_own_framing(connect):
    alice = await connect("alice", V1)
    bob_raw = await connect("bob")
    bob_v1 = await connect("bob", V1)
    await send_text(alice, frame(["bob"], {"n": 1}))
    assert await bob_raw.receive_from() == '{"n":1}'
    assert json.loads(await bob_v1.receive_from()) == envelope("alice", {"n": 1})


# Bad frames: exactly one error for the sender, nothing for anyone else, connection stays open


def error_of(text: str, subprotocol: str | None) -> tuple[str, str]:
    """The (code, detail) of an error frame in the given framing."""
    data = json.loads(text)
    if subprotocol is None:
        assert list(data) == ["error"]
        data = data["error"]
        assert sorted(data) == ["code", "detail"]
    else:
        assert sorted(data) == ["code", "detail", "type"]
        assert data["type"] == "error"
    return data["code"], data["detail"]


@pytest.mark.parametrize("subprotocols", [None, V1], ids=["raw", "v1"])
@pytest.mark.parametrize(("text", "code"), BAD_FRAMES)
async def test_bad_frame_gets_one_error_and_nothing_else(connect, subprotocols, text, code):
    sender = await connect("a", subprotocols)
    twin = await connect("a")  # another connection of the sender's id
    bystander = await connect("c")
    if text is None:
        await send_bytes(sender, b'{"targets": ["c"], "payload": 1}')
    else:
        await send_text(sender, text)
    error_code, detail = error_of(await sender.receive_from(), subprotocols and subprotocols[0])
    assert error_code == code
    assert detail

    # The connection still relays; the error was the only frame the bad one caused.
    await send_text(sender, frame(["a", "c"], "after"))
    after = await sender.receive_from()
    if subprotocols:
        assert json.loads(after) == envelope("a", "after")
    else:
        assert after == '"after"'
    assert await twin.receive_from() == '"after"'
    assert await bystander.receive_from() == '"after"'
    for communicator in (sender, twin, bystander):
        assert await communicator.receive_nothing(timeout=0.01)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"targets": [], "payload": 1, "id": "r1"}', {"code": "invalid_message", "ref": "r1"}),
        ('{"targets": ["a b"], "payload": 1, "id": 42}', {"code": "invalid_target", "ref": 42}),
        ('{"targets": ["c"], "id": "r2"}', {"code": "invalid_message", "ref": "r2"}),
        ('{"targets": ["c"], "payload": 1e400, "id": "r3"}', {"code": "invalid_json", "ref": "r3"}),
        ('{"targets": [], "payload": 1}', {"code": "invalid_message"}),
        ('{"targets": [], "payload": 1, "id": {"x": 1}}', {"code": "invalid_message"}),
        ('{"targets": [], "payload": 1, "id": true}', {"code": "invalid_message"}),
        ('{"targets": [], "id": "r4"', {"code": "invalid_json"}),
    ],
)
async def test_v1_error_echoes_the_correlation_id_as_ref(connect, text, expected):
    sender = await connect("a", V1)
    await send_text(sender, text)
    error = json.loads(await sender.receive_from())
    assert isinstance(error.pop("detail"), str)
    assert error == {"type": "error", **expected}


async def test_v1_binary_frame_error_has_no_ref(connect):
    sender = await connect("a", V1)
    await send_bytes(sender, b"\x00\x01")
    error = json.loads(await sender.receive_from())
    assert error == {"type": "error", "code": "binary_not_supported", "detail": error["detail"]}


async def test_limits_are_read_from_settings_when_the_connection_opens(connect, settings):
    settings.RELAY_MAX_TARGETS = 2
    settings.RELAY_MAX_MESSAGE_BYTES = 100
    sender = await connect("a")
    settings.RELAY_MAX_TARGETS = 100  # later changes apply to later connections
    await send_text(sender, frame(["a", "b", "c"], 1))
    assert error_of(await sender.receive_from(), None)[0] == protocol.TOO_MANY_TARGETS
    await send_text(sender, frame(["a"], "é" * 40))  # under 100 characters, over 100 bytes
    assert error_of(await sender.receive_from(), None)[0] == protocol.MESSAGE_TOO_LARGE
    await send_text(sender, frame(["a", "b"], "é" * 20))
    assert await sender.receive_from() == compact("é" * 20)


# Fan-out


async def test_every_connection_of_a_target_receives(connect):
    alice = await connect("alice")
    bobs = [await connect("bob") for _ in range(3)]
    other = await connect("carol")
    await send_text(alice, frame(["bob"], {"n": 1}))
    for bob in bobs:
        assert await bob.receive_from() == '{"n":1}'
        assert await bob.receive_nothing(timeout=0.01)
    assert await other.receive_nothing(timeout=0.01)
    assert await alice.receive_nothing(timeout=0)


async def test_every_target_receives(connect):
    alice = await connect("alice")
    bob = await connect("bob")
    carol = await connect("carol")
    await send_text(alice, frame(["bob", "carol"], "hi"))
    assert await bob.receive_from() == '"hi"'
    assert await carol.receive_from() == '"hi"'


async def test_sender_receives_its_own_message_on_every_connection(connect):
    alice = await connect("alice", V1)
    alice_tab = await connect("alice")
    await send_text(alice, frame(["alice"], "me"))
    assert json.loads(await alice.receive_from()) == envelope("alice", "me")
    assert await alice_tab.receive_from() == '"me"'


async def test_integer_target_reaches_its_decimal_id_once(connect):
    alice = await connect("alice")
    two = await connect("2")
    await send_text(alice, frame([2, "2", 2], "once"))
    await send_text(alice, frame(["2"], "next"))
    assert await two.receive_from() == '"once"'
    assert await two.receive_from() == '"next"'


async def test_target_without_connections_is_not_an_error(connect):
    alice = await connect("alice")
    await send_text(alice, frame(["nobody", "nobody-else"], "lost"))
    await send_text(alice, frame(["alice"], "ping"))
    assert await alice.receive_from() == '"ping"'
    assert await alice.receive_nothing(timeout=0.01)


async def test_one_sender_to_one_target_keeps_order(connect):
    alice = await connect("alice")
    bob = await connect("bob")
    for n in range(1000):
        await send_text(alice, frame(["bob"], n))
    assert [await bob.receive_from() for _ in range(1000)] == [str(n) for n in range(1000)]
    assert await bob.receive_nothing(timeout=0.01)


# Server pushes over the channel layer


async def test_group_send_reaches_every_connection_in_both_framings(connect):
    raw = await connect("bob")
    v1 = await connect("bob", V1)
    other = await connect("carol")
    await get_channel_layer().group_send("relay.bob", push_event({"k": [1, None]}))
    assert await raw.receive_from() == '{"k":[1,null]}'
    assert json.loads(await v1.receive_from()) == envelope(None, {"k": [1, None]})
    assert await other.receive_nothing(timeout=0.01)


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({"type": "relay.bogus", "payload": 1}, id="unknown-type"),
        pytest.param({"type": "chat.message", "text": "hi"}, id="other-app-type"),
        pytest.param({"type": "relay.deliver"}, id="no-payload"),
        pytest.param({"type": "relay.deliver", "payload": {1, 2}}, id="payload-set"),
        pytest.param({"type": "relay.deliver", "payload": float("nan")}, id="payload-nan"),
        pytest.param({"payload": 1}, id="no-type"),
    ],
)
async def test_bad_channel_layer_event_is_ignored(connect, event):
    bob = await connect("bob")
    alice = await connect("alice")
    layer = get_channel_layer()
    await layer.group_send("relay.bob", event)
    await layer.group_send("relay.bob", push_event("after"))
    assert await bob.receive_from() == '"after"'
    assert await bob.receive_nothing(timeout=0.01)
    await send_text(alice, frame(["bob"], "still relaying"))
    assert await bob.receive_from() == '"still relaying"'


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({"type": "refuse", "code": "x"}, id="refuse"),
        pytest.param({"type": "send.text", "text": "spoofed"}, id="send-text"),
        pytest.param({"type": "receive.frame", "text": frame(["victim"], "spoofed")}, id="receive-frame"),
        pytest.param({"type": "accept"}, id="accept"),
    ],
)
async def test_event_named_after_a_consumer_method_is_ignored(connect, event):
    """Only relay events are handled: an event type is not a way to call any method of the consumer."""
    bob = await connect("bob")
    victim = await connect("victim")
    layer = get_channel_layer()
    await layer.group_send("relay.bob", event)
    await layer.group_send("relay.bob", push_event("after"))
    assert await bob.receive_from() == '"after"'
    await layer.group_send("relay.victim", push_event("sentinel"))
    assert await victim.receive_from() == '"sentinel"'


# Disconnecting


async def test_disconnect_removes_the_connection(connect):
    alice = await connect("alice")
    gone = await connect("bob")
    stays = await connect("bob")
    layer = get_channel_layer()
    assert len(layer.groups["relay.bob"]) == 2

    await gone.disconnect()
    assert len(layer.groups["relay.bob"]) == 1

    await send_text(alice, frame(["bob"], "relayed"))
    await layer.group_send("relay.bob", push_event("pushed"))
    assert await stays.receive_from() == '"relayed"'
    assert await stays.receive_from() == '"pushed"'
    assert await gone.receive_nothing(timeout=0.01)  # nothing was even handed to the closed connection

    await stays.disconnect()
    assert "relay.bob" not in layer.groups
    await send_text(alice, frame(["bob", "alice"], "nobody home"))
    assert await alice.receive_from() == '"nobody home"'
    assert await stays.receive_nothing(timeout=0.01)


async def test_a_ping_is_answered_to_the_sender_only(connect):
    alice, bob = await connect("alice", V1), await connect("bob")
    await send_text(alice, '{"type": "ping", "id": "p1"}')
    assert json.loads(await alice.receive_from()) == {"type": "pong", "ref": "p1"}
    await send_text(alice, '{"type": "ping"}')
    assert json.loads(await alice.receive_from()) == {"type": "pong"}
    raw = await connect("carol")
    await send_text(raw, '{"type": "ping", "id": 2}')
    assert json.loads(await raw.receive_from()) == {"pong": 2}
    assert await bob.receive_nothing(timeout=0.02)


async def test_a_close_asked_for_during_the_handshake_waits_for_the_accept():
    """A logout order can find a connection between its hub join and its accept: nothing may be
    sent before the handshake, so the close is kept and done once it is accepted."""
    from relay.server.consumers import RelayConsumer

    sent = []

    async def send(event):
        sent.append(event)

    consumer = RelayConsumer()
    consumer.base_send, consumer.connection, consumer.subprotocol = send, None, None
    consumer.close_code, consumer.accepted, consumer.close_once_accepted = None, False, None
    await consumer.close(4401, "logged out")
    assert sent == [] and consumer.close_once_accepted == (4401, "logged out") and consumer.close_code is None
    await consumer.accept()
    await consumer.close(*consumer.close_once_accepted)
    assert [event["type"] for event in sent] == ["websocket.accept", "websocket.close"]
    assert sent[1]["code"] == 4401
