"""relay.send / relay.asend: server pushes from Django code, and their validation."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured

import relay
import relay.api
from relay.protocol import INVALID_MESSAGE, INVALID_TARGET, ProtocolError


def test_public_api():
    assert relay.send is relay.api.send
    assert relay.asend is relay.api.asend
    with pytest.raises(AttributeError):
        relay.nothing_here  # noqa: B018


def test_deliver_event():
    assert relay.api.deliver_event('{"a":1}') == {"type": "relay.deliver", "from": None, "payload_json": '{"a":1}'}


async def test_asend_reaches_every_connection_in_both_framings(connect):
    bob_raw = await connect("bob")
    bob_v1 = await connect("bob", ["relay.v1"])
    two = await connect("2")
    carol = await connect("carol")
    await relay.asend(["bob", 2], {"n": [1, None]})
    assert await bob_raw.receive_from() == '{"n":[1,null]}'
    assert json.loads(await bob_v1.receive_from()) == {"type": "message", "from": None, "payload": {"n": [1, None]}}
    assert await two.receive_from() == '{"n":[1,null]}'
    assert await carol.receive_nothing(timeout=0.01)


async def test_send_from_sync_code_reaches_connections(connect):
    bob = await connect("bob")
    carol = await connect("carol")
    await sync_to_async(relay.send)(["bob", "carol"], "from a view")
    assert await bob.receive_from() == '"from a view"'
    assert await carol.receive_from() == '"from a view"'


def test_send_from_sync_code_sends_one_event_per_target(recording_layer):
    relay.send(["bob", 2, "2", "bob", "carol"], {"a": 1})
    event = {"type": "relay.deliver", "from": None, "payload_json": '{"a":1}'}
    assert recording_layer.sent == [("relay.bob", event), ("relay.2", event), ("relay.carol", event)]


@pytest.mark.parametrize(
    ("targets", "groups"),
    [
        ("bob", ["relay.bob"]),
        (7, ["relay.7"]),
        (["bob"], ["relay.bob"]),
        (("bob", 7), ["relay.bob", "relay.7"]),
        (iter(["bob", "carol"]), ["relay.bob", "relay.carol"]),
    ],
)
async def test_asend_accepts_one_id_or_many(recording_layer, targets, groups):
    await relay.asend(targets, None)
    assert [group for group, _ in recording_layer.sent] == groups


async def test_asend_delivers_null_payload(connect):
    bob = await connect("bob")
    await relay.asend("bob", None)
    assert await bob.receive_from() == "null"


@pytest.mark.parametrize(
    ("targets", "code"),
    [
        pytest.param("a b", INVALID_TARGET, id="bad-chars"),
        pytest.param("x" * 65, INVALID_TARGET, id="too-long"),
        pytest.param("", INVALID_TARGET, id="empty-string"),
        pytest.param(["ok", "a/b"], INVALID_TARGET, id="one-bad-in-list"),
        pytest.param(["ok", None], INVALID_TARGET, id="none-in-list"),
        pytest.param(["ok", 1.5], INVALID_TARGET, id="float"),
        pytest.param(["ok", float("nan")], INVALID_TARGET, id="nan"),
        pytest.param(["ok", float("inf")], INVALID_TARGET, id="inf"),
        pytest.param(True, INVALID_TARGET, id="bool"),
        pytest.param(["ok", False], INVALID_TARGET, id="bool-in-list"),
        pytest.param([], INVALID_MESSAGE, id="empty-list"),
        pytest.param(b"ok", None, id="bytes"),
        pytest.param({"ok": 1}, None, id="dict"),
        pytest.param(None, None, id="none"),
    ],
)
async def test_invalid_targets_are_refused_and_nothing_is_sent(recording_layer, targets, code):
    with pytest.raises(ProtocolError) as info:
        await relay.asend(targets, 1)
    assert isinstance(info.value, ValueError)
    if code is not None:
        assert info.value.code == code
    assert recording_layer.sent == []


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param({"deep": [object()]}, id="object"),
        pytest.param(b"bytes", id="bytes"),
    ],
)
def test_non_json_payload_is_refused_and_nothing_is_sent(recording_layer, payload):
    with pytest.raises(ProtocolError) as info:
        relay.send(["ok", "also-ok"], payload)
    assert info.value.code == INVALID_MESSAGE
    assert info.value.detail.startswith("The payload is not a JSON value")
    assert recording_layer.sent == []


async def test_failed_validation_delivers_nothing_to_connections(connect):
    ok = await connect("ok")
    with pytest.raises(ProtocolError):
        await relay.asend(["ok", "not ok"], 1)
    with pytest.raises(ProtocolError):
        await sync_to_async(relay.send)(["ok"], {1})
    await relay.asend("ok", "after")
    assert await ok.receive_from() == '"after"'
    assert await ok.receive_nothing(timeout=0.01)


def test_send_without_a_channel_layer_says_what_to_set(settings):
    settings.CHANNEL_LAYERS = {}
    with pytest.raises(ImproperlyConfigured, match=r'set CHANNEL_LAYERS\["default"\] \(check relay.E019\)'):
        relay.send("bob", {"text": "hi"})
