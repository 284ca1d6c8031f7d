"""Calls into Django (``@relay.rpc``): replies, errors, unknown names, the ORM, both framings."""

import json
import logging

import pytest
from django.contrib.auth import get_user_model

import relay
from relay import calls
from tests.conftest import send_text

V1 = ["relay.v1"]
INTERNAL = "The server failed to handle this frame; it was not relayed."


@pytest.fixture(autouse=True)
def registered():
    @relay.rpc("math.add")
    async def add(call: relay.Call) -> int:
        return call.payload["a"] + call.payload["b"]

    @relay.rpc("who")
    def who(call: relay.Call) -> dict:  # sync: a worker thread
        return {"sender": call.sender, "user": call.user, "id": call.id, "name": call.name}

    @relay.rpc("users.count")
    def users_count(call: relay.Call) -> int:
        return get_user_model().objects.count()

    @relay.rpc("quota")
    async def quota(call: relay.Call) -> None:
        raise relay.Reject("quota_exceeded", "No more today.")

    @relay.rpc("broken")
    async def broken(call: relay.Call) -> None:
        raise KeyError("missing")

    @relay.rpc("not.json")
    async def not_json(call: relay.Call) -> object:
        return object()

    names = ["math.add", "who", "users.count", "quota", "broken", "not.json"]
    yield names
    for name in names:
        calls.unregister(name)


def call(name, payload=None, **extra) -> str:
    return json.dumps({"call": name, "payload": payload, **extra})


async def test_reply_goes_to_the_caller_only(connect):
    alice, alice_tab, bob = await connect("alice", V1), await connect("alice", V1), await connect("bob")
    await send_text(alice, call("math.add", {"a": 2, "b": 40}, id=1))
    assert json.loads(await alice.receive_from()) == {"type": "reply", "ref": 1, "payload": 42}
    assert await alice_tab.receive_nothing(timeout=0.05)
    assert await bob.receive_nothing(timeout=0)


async def test_reply_in_the_original_framing(connect):
    alice = await connect("alice")
    await send_text(alice, call("math.add", {"a": 1, "b": 1}, id="x"))
    assert json.loads(await alice.receive_from()) == {"reply": {"ref": "x", "payload": 2}}


async def test_a_sync_call_sees_the_caller(connect):
    alice = await connect("alice", V1)
    await send_text(alice, call("who", id="w"))
    assert json.loads(await alice.receive_from())["payload"] == {
        "sender": "alice",
        "user": None,
        "id": "w",
        "name": "who",
    }


@pytest.mark.django_db(transaction=True)
async def test_a_sync_call_may_use_the_orm(connect):
    await get_user_model().objects.acreate(username="one")
    await get_user_model().objects.acreate(username="two")
    alice = await connect("alice", V1)
    await send_text(alice, call("users.count", id=5))
    assert json.loads(await alice.receive_from()) == {"type": "reply", "ref": 5, "payload": 2}


async def test_unknown_call(connect):
    alice = await connect("alice", V1)
    await send_text(alice, call("no.such", id=2))
    assert json.loads(await alice.receive_from()) == {
        "type": "error",
        "code": "unknown_call",
        "detail": "No call named 'no.such'.",
        "ref": 2,
    }


async def test_a_call_needs_an_id(connect):
    alice = await connect("alice", V1)
    await send_text(alice, call("math.add", {"a": 1, "b": 2}))
    answer = json.loads(await alice.receive_from())
    assert (answer["code"], "ref" in answer) == ("invalid_message", False)
    assert 'needs an "id"' in answer["detail"]


async def test_reject_inside_a_call(connect):
    alice = await connect("alice", V1)
    await send_text(alice, call("quota", id=3))
    assert json.loads(await alice.receive_from()) == {
        "type": "error",
        "code": "quota_exceeded",
        "detail": "No more today.",
        "ref": 3,
    }


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("broken", "where=tests.test_calls.registered.<locals>.broken client=alice error=KeyError: 'missing'"),
        ("not.json", "error=returned object, which is not a JSON value"),
    ],
)
async def test_a_failing_call_is_an_internal_error_and_the_connection_stays(connect, caplog, name, problem):
    alice = await connect("alice", V1)
    caplog.clear()
    with caplog.at_level(logging.ERROR, "relay"):
        await send_text(alice, call(name, id=4))
        assert json.loads(await alice.receive_from()) == {
            "type": "error",
            "code": "internal_error",
            "detail": INTERNAL,
            "ref": 4,
        }
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "event=site_code_failed kind=call" in record.getMessage() and problem in record.getMessage()
    assert record.exc_info is not None
    await send_text(alice, call("math.add", {"a": 1, "b": 2}, id=5))
    assert json.loads(await alice.receive_from())["payload"] == 3


async def test_calls_count_against_the_rate_limit(connect, settings):
    settings.RELAY_RATE_LIMIT, settings.RELAY_RATE_BURST = "1/m", 2
    alice = await connect("alice", V1)
    for i in range(3):
        await send_text(alice, call("math.add", {"a": i, "b": 0}, id=i))
    answers = [json.loads(await alice.receive_from()) for _ in range(3)]
    assert [a["type"] for a in answers] == ["reply", "reply", "error"]
    assert answers[2]["code"] == "rate_limited"


async def test_calls_count_against_the_size_limit(connect, settings):
    settings.RELAY_MAX_MESSAGE_BYTES = 100
    alice = await connect("alice", V1)
    await send_text(alice, call("math.add", {"a": "x" * 200, "b": 0}, id=1))
    assert json.loads(await alice.receive_from())["code"] == "message_too_large"


def test_names_are_checked_and_registered_once():
    with pytest.raises(ValueError, match="is not a call name"):
        relay.rpc("has space")
    with pytest.raises(ValueError, match="registered already"):

        @relay.rpc("math.add")
        async def other(call: relay.Call) -> None: ...


def test_apps_calls_modules_are_imported_at_startup():
    assert calls.lookup("testapp.echo") is not None  # tests/calls.py, imported by RelayConfig.ready
