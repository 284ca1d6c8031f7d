"""relay.testing: capturing pushes in a site's tests, and connections as a client id."""

import io
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.management import call_command

import relay
from relay.testing import Push, capture_pushes, connect_as

# relay_pushes: the root conftest.py has pytest_plugins = ["relay.testing"], as a site's would.


def test_pushes_are_captured_in_order_and_not_delivered(recording_layer):
    with capture_pushes() as pushes:
        sent = relay.send(["alice", 2, "2"], {"type": "invoice.paid", "id": 1234})
        relay.send("bob", [1, None])
    assert pushes == [
        Push(("alice", "2"), {"type": "invoice.paid", "id": 1234}),
        Push(("bob",), [1, None]),
    ]
    assert pushes.to("alice") == [{"type": "invoice.paid", "id": 1234}]
    assert pushes.to(2) == pushes.to("2") == [{"type": "invoice.paid", "id": 1234}]
    assert pushes.to("carol") == []
    assert (sent.targets, sent.online, sent.offsets) == (("alice", "2"), frozenset(), {})
    assert recording_layer.sent == [], "nothing reached the channel layer"


def test_nothing_is_captured_after_the_block(recording_layer):
    with capture_pushes() as pushes:
        pass
    relay.send("alice", "after")
    assert pushes == []
    assert [group for group, _ in recording_layer.sent] == ["relay.alice"]


def test_an_invalid_push_still_raises_and_is_not_captured():
    with capture_pushes() as pushes, pytest.raises(relay.protocol.ProtocolError):
        relay.send("not an id", 1)
    assert pushes == []


async def test_asend_and_plain_channels_pushes_are_captured():
    with capture_pushes() as pushes:
        await relay.asend("alice", "async")
        await get_channel_layer().group_send("relay.bob", {"type": "relay.deliver", "payload": {"n": 1}, "from": None})
        await get_channel_layer().group_send("relay.bob", {"type": "relay.deliver", "payload_json": "[2]"})
        await get_channel_layer().group_send("chat.lobby", {"type": "relay.deliver", "payload": "not a client"})
    assert pushes == [
        Push(("alice",), "async"),
        Push(("bob",), {"n": 1}, "channel_layer"),
        Push(("bob",), [2], "channel_layer"),
    ]


@pytest.mark.django_db
def test_the_relay_send_command_is_captured(recording_layer):
    stdout = io.StringIO()
    with capture_pushes() as pushes:
        call_command("relay_send", "alice", "2", payload='{"from": "the command"}', stdout=stdout)
    assert pushes == [Push(("alice", "2"), {"from": "the command"})]
    assert stdout.getvalue() == "Sent to alice (not online), 2 (not online).\n"
    assert recording_layer.sent == []


def test_the_fixture_captures_for_one_test(relay_pushes):
    relay.send("alice", "from the fixture")
    assert relay_pushes.to("alice") == ["from the fixture"]


async def test_connect_as_opens_a_connection_as_the_client_id_with_a_token():
    async with connect_as("alice") as alice, connect_as(42, subprotocol=None) as forty_two:
        await relay.asend(["alice", "42"], {"text": "hi"})
        assert await alice.receive_json_from() == {"type": "message", "from": None, "payload": {"text": "hi"}}
        assert await forty_two.receive_json_from() == {"text": "hi"}
        await alice.send_json_to({"targets": [42], "payload": "from alice", "id": 1})
        assert await alice.receive_json_from() == {"type": "ack", "ref": 1, "offsets": {}}
        assert await forty_two.receive_json_from() == "from alice"


async def test_captured_pushes_are_delivered_with_deliver_true_and_captured_once():
    async with connect_as("alice") as alice:
        with capture_pushes(deliver=True) as pushes:
            sent = await relay.asend("alice", "both")
        assert await alice.receive_json_from() == {"type": "message", "from": None, "payload": "both"}
        assert pushes == [Push(("alice",), "both")]
        assert sent.online == {"alice"}
        with capture_pushes() as pushes:
            await relay.asend("alice", "captured only")
        assert await alice.receive_nothing(timeout=0.05)


async def test_connect_as_resumes_and_refuses_loudly(settings):
    async with connect_as("alice", since="") as alice:
        assert await alice.receive_json_from() == {"type": "recovered", "recovered": False, "replayed": 0,
                                                   "reason": "history_off"}  # fmt: skip
    settings.RELAY_IDENTITY_BACKENDS = ["relay.identity.backends.QueryIdBackend"]
    with pytest.raises(AssertionError, match="refused the handshake of 'alice'"):
        async with connect_as("alice"):
            pass


async def test_a_consumer_level_test_of_a_view_that_pushes(client):
    async with connect_as("alice") as alice:
        with capture_pushes(deliver=True) as pushes:
            await sync_to_async(relay.send)("alice", {"type": "invoice.paid"})
        assert json.loads(await alice.receive_from())["payload"] == {"type": "invoice.paid"}
    assert pushes.to("alice") == [{"type": "invoice.paid"}]
