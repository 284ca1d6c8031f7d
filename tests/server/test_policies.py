"""RELAY_SEND_POLICY: who may send to whom, as loaded policies and in the consumer."""

import json
import logging

import pytest
from django.contrib.auth import get_user_model

import relay
from relay.server.policies import AllowAll, SameIdOnly, load_policy, send_policy
from tests.conftest import frame, send_text

V1 = ["relay.v1"]


def only_to_staff(sender: str, target: str) -> bool:
    """A function policy: anyone may reach the ``staff-*`` ids, staff may reach anyone."""
    return target.startswith("staff-") or sender.startswith("staff-")


class NoSelfSend:
    """A class policy: never to one's own id."""

    def __call__(self, sender: str, target: str) -> bool:
        return sender != target


class SubclassOfAllowAll(AllowAll):
    pass


def test_allow_all_is_skipped():
    assert load_policy("relay.server.policies.AllowAll") is None


def test_subclass_of_allow_all_is_skipped_too():
    assert load_policy("tests.server.test_policies.SubclassOfAllowAll") is None


def test_class_is_instantiated_once_per_path():
    policy = load_policy("relay.server.policies.SameIdOnly")
    assert isinstance(policy, SameIdOnly)
    assert load_policy("relay.server.policies.SameIdOnly") is policy
    assert load_policy("tests.server.test_policies.NoSelfSend") is load_policy("tests.server.test_policies.NoSelfSend")
    assert isinstance(load_policy("tests.server.test_policies.NoSelfSend"), NoSelfSend)


def test_function_is_the_policy():
    assert load_policy("tests.server.test_policies.only_to_staff") is only_to_staff


@pytest.mark.parametrize(("sender", "target", "allowed"), [("a", "a", True), ("a", "b", False), ("2", "2", True)])
async def test_same_id_only(sender, target, allowed):
    assert await SameIdOnly()(sender, target) is allowed


def test_send_policy_reads_the_setting(settings):
    assert send_policy() is None  # the default
    settings.RELAY_SEND_POLICY = "relay.server.policies.SameIdOnly"
    assert isinstance(send_policy(), SameIdOnly)
    settings.RELAY_SEND_POLICY = "tests.server.test_policies.only_to_staff"
    assert send_policy() is only_to_staff


def test_unknown_path_raises_import_error():
    with pytest.raises(ImportError):
        load_policy("tests.server.test_policies.no_such_policy")


# In the consumer


def forbidden(target: str, ref=None) -> dict:
    error = {"type": "error", "code": "forbidden", "detail": f"You may not send to {target}."}
    return error if ref is None else {**error, "ref": ref}


async def test_same_id_only_in_the_consumer(connect, settings):
    settings.RELAY_SEND_POLICY = "relay.server.policies.SameIdOnly"
    alice = await connect("alice", V1)
    alice_phone = await connect("alice")
    bob = await connect("bob")
    carol = await connect("carol")
    await send_text(alice, frame(["bob", "alice", "carol"], {"n": 1}, id="m1"))
    assert [json.loads(await alice.receive_from()) for _ in range(4)] == [
        forbidden("bob", "m1"),
        forbidden("carol", "m1"),
        {"type": "message", "from": "alice", "payload": {"n": 1}},
        {"type": "ack", "ref": "m1", "offsets": {}},  # for the targets that were allowed
    ]
    assert await alice.receive_nothing(timeout=0.01)
    assert await alice_phone.receive_from() == '{"n":1}'
    assert await alice_phone.receive_nothing(timeout=0.01)
    assert await bob.receive_nothing(timeout=0)
    assert await carol.receive_nothing(timeout=0)


async def test_forbidden_without_ref_or_subprotocol(connect, settings):
    settings.RELAY_SEND_POLICY = "relay.server.policies.SameIdOnly"
    alice_v1 = await connect("alice", V1)
    alice_raw = await connect("alice")
    await send_text(alice_v1, frame(["bob"], 1))
    await send_text(alice_raw, frame(["bob"], 1, id="raw-ref"))
    assert json.loads(await alice_v1.receive_from()) == forbidden("bob")
    assert json.loads(await alice_raw.receive_from()) == {
        "error": {"code": "forbidden", "detail": "You may not send to bob.", "ref": "raw-ref"}
    }
    assert await alice_v1.receive_nothing(timeout=0.01)
    assert await alice_raw.receive_nothing(timeout=0)


async def test_function_policy_in_the_consumer(connect, settings):
    settings.RELAY_SEND_POLICY = "tests.server.test_policies.only_to_staff"
    alice = await connect("alice", V1)
    bob = await connect("bob")
    staff = await connect("staff-1")
    await send_text(alice, frame(["bob", "staff-1", 2], "help", id=7))
    assert [json.loads(await alice.receive_from()) for _ in range(3)] == [
        forbidden("bob", 7),
        forbidden("2", 7),
        {"type": "ack", "ref": 7, "offsets": {}},
    ]
    assert await staff.receive_from() == '"help"'
    await send_text(staff, frame(["bob", "alice"], "answer"))
    assert await bob.receive_from() == '"answer"'
    assert json.loads(await alice.receive_from()) == {"type": "message", "from": "staff-1", "payload": "answer"}
    for communicator in (alice, bob, staff):
        assert await communicator.receive_nothing(timeout=0.01)


async def test_class_policy_in_the_consumer(connect, settings):
    settings.RELAY_SEND_POLICY = "tests.server.test_policies.NoSelfSend"
    alice = await connect("alice", V1)
    bob = await connect("bob")
    await send_text(alice, frame(["alice", "bob", "alice"], "x", id="r"))  # duplicates are asked once
    assert json.loads(await alice.receive_from()) == forbidden("alice", "r")
    assert json.loads(await alice.receive_from()) == {"type": "ack", "ref": "r", "offsets": {}}
    assert await bob.receive_from() == '"x"'
    assert await alice.receive_nothing(timeout=0.01)
    assert await bob.receive_nothing(timeout=0)


async def test_every_target_forbidden_sends_nothing(connect, settings):
    settings.RELAY_SEND_POLICY = "relay.server.policies.SameIdOnly"
    alice = await connect("alice", V1)
    bob = await connect("bob")
    await send_text(alice, frame(["bob", "carol"], "x"))
    assert [json.loads(await alice.receive_from()) for _ in range(2)] == [forbidden("bob"), forbidden("carol")]
    assert await alice.receive_nothing(timeout=0.01)
    assert await bob.receive_nothing(timeout=0)


async def test_policy_does_not_apply_to_server_pushes(connect, settings):
    settings.RELAY_SEND_POLICY = "relay.server.policies.SameIdOnly"
    bob = await connect("bob")
    await relay.asend(["bob"], "from the server")
    assert await bob.receive_from() == '"from the server"'


async def test_policy_is_read_when_the_connection_opens(connect, settings):
    alice = await connect("alice")
    bob = await connect("bob")
    settings.RELAY_SEND_POLICY = "relay.server.policies.SameIdOnly"
    await send_text(alice, frame(["bob"], 1))
    assert await bob.receive_from() == "1"  # alice connected under AllowAll
    later = await connect("alice")
    await send_text(later, frame(["bob"], 2))
    assert json.loads(await later.receive_from())["error"]["code"] == "forbidden"
    assert await bob.receive_nothing(timeout=0.01)


def only_to_existing_users(sender: str, target: str) -> bool:
    """A sync policy that reads the database (it runs in a worker thread)."""
    return get_user_model().objects.filter(username=target).exists()


async def only_to_even(sender: str, target: str) -> bool:
    """An async policy: awaited, no thread."""
    return target.isdigit() and int(target) % 2 == 0


def broken_policy(sender: str, target: str) -> bool:
    raise LookupError("policy bug")


@pytest.mark.django_db(transaction=True)
async def test_a_sync_policy_may_use_the_orm(connect, settings):
    await get_user_model().objects.acreate(username="bob")
    settings.RELAY_SEND_POLICY = "tests.server.test_policies.only_to_existing_users"
    alice, bob = await connect("alice", V1), await connect("bob")
    await send_text(alice, frame(["bob", "ghost"], "hi", id=1))
    assert json.loads(await alice.receive_from()) == forbidden("ghost", 1)
    assert await bob.receive_from() == '"hi"'


async def test_an_async_policy_is_awaited(connect, settings):
    settings.RELAY_SEND_POLICY = "tests.server.test_policies.only_to_even"
    alice, two = await connect("alice", V1), await connect(2)
    await send_text(alice, frame([2, 3], "x"))
    assert json.loads(await alice.receive_from()) == forbidden("3")
    assert await two.receive_from() == '"x"'


async def test_a_failing_policy_fails_that_frame_only(connect, settings, caplog):
    settings.RELAY_SEND_POLICY = "tests.server.test_policies.broken_policy"
    alice, bob = await connect("alice", V1), await connect("bob")
    caplog.clear()
    await send_text(alice, frame(["bob"], "x", id="p"))
    answer = json.loads(await alice.receive_from())
    assert (answer["code"], answer["ref"]) == ("internal_error", "p")
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "kind=policy where=tests.server.test_policies.broken_policy" in record.getMessage()
    assert "error=LookupError: policy bug" in record.getMessage()
    assert await bob.receive_nothing(timeout=0.05)
