"""RELAY_MESSAGE_HANDLERS: every outcome of a handler, sync and async, through a real consumer."""

import json
import logging

import pytest
from django.contrib.auth import get_user_model

import relay
from relay import metrics
from relay.handlers import HandlerError, Message, load_handlers, run_handlers
from tests.conftest import frame, send_text

V1 = ["relay.v1"]
HERE = "tests.test_handlers"


def error(code: str, detail: str, ref=None) -> dict:
    envelope = {"type": "error", "code": code, "detail": detail}
    return envelope | ({"ref": ref} if ref is not None else {})


INTERNAL = "The server failed to handle this frame; it was not relayed."

seen: list[Message] = []


async def unchanged(message: Message) -> Message:
    seen.append(message)
    return message


async def shout(message: Message) -> Message:
    return message.replace(payload=str(message.payload).upper())


def only_first_target(message: Message) -> Message:  # sync: runs in a thread
    return message.replace(targets=message.targets[:1])


async def consume(message: Message) -> None:
    return None


async def reject_long(message: Message) -> Message:
    if len(str(message.payload)) > 5:
        raise relay.Reject("too_long", "Keep it under 6 characters.")
    return message


async def crash(message: Message) -> Message:
    raise RuntimeError("the handler broke")


async def returns_a_dict(message: Message) -> dict:
    return {"targets": ["bob"]}


async def returns_bad_targets(message: Message) -> Message:
    return message.replace(targets=("not valid!",))


async def returns_unencodable_payload(message: Message) -> Message:
    return message.replace(payload={1, 2})


async def targets_as_a_string(message: Message) -> Message:
    return message.replace(targets="bob")


def count_users(message: Message) -> Message:  # the ORM, from a sync handler
    return message.replace(payload={"text": message.payload, "users": get_user_model().objects.count()})


class Prefix:
    """A class: instantiated once per path."""

    instances = 0

    def __init__(self) -> None:
        Prefix.instances += 1

    async def __call__(self, message: Message) -> Message:
        return message.replace(payload=f"{message.sender}: {message.payload}")


@pytest.fixture
def handlers(settings):
    def use(*names: str) -> None:
        settings.RELAY_MESSAGE_HANDLERS = [f"{HERE}.{name}" for name in names]

    seen.clear()
    return use


async def test_no_handlers_is_the_fast_path(connect):
    assert load_handlers(()) == ()
    alice, bob = await connect("alice"), await connect("bob")
    await send_text(alice, frame(["bob"], "hi"))
    assert await bob.receive_from() == '"hi"'


async def test_unchanged_message_is_relayed_and_the_handler_sees_everything(connect, handlers):
    handlers("unchanged")
    alice, bob = await connect("alice", V1), await connect("bob")
    await send_text(alice, frame(["bob", 2, "bob"], {"a": [1]}, id="m1"))
    assert await bob.receive_from() == '{"a":[1]}'
    (message,) = seen
    assert (message.sender, message.targets, message.payload, message.id) == ("alice", ("bob", "2"), {"a": [1]}, "m1")
    assert message.connection.client_id == "alice" and message.user is None
    assert message.connection.scope["path"] == "/ws" and len(message.connection.connection_id) == 32


async def test_changed_payload_and_targets(connect, handlers):
    handlers("shout", "only_first_target")
    alice, bob, carol = await connect("alice", V1), await connect("bob"), await connect("carol")
    await send_text(alice, frame(["bob", "carol"], "hello"))
    assert await bob.receive_from() == '"HELLO"'
    assert await carol.receive_nothing(timeout=0.05)


async def test_handlers_run_in_order(connect, handlers):
    handlers("Prefix", "shout")
    alice, bob = await connect("alice"), await connect("bob")
    await send_text(alice, frame(["bob"], "hi"))
    assert await bob.receive_from() == '"ALICE: HI"'


async def test_a_class_is_instantiated_once(handlers, connect):
    handlers("Prefix")
    before = Prefix.instances
    load_handlers((f"{HERE}.Prefix",))
    load_handlers((f"{HERE}.Prefix",))
    assert Prefix.instances - before <= 1


async def test_consumed_message_is_not_relayed(connect, handlers):
    handlers("consume", "unchanged")
    alice, bob = await connect("alice", V1), await connect("bob")
    await send_text(alice, frame(["bob"], "secret"))
    assert await bob.receive_nothing(timeout=0.05)
    assert await alice.receive_nothing(timeout=0)
    assert seen == []  # later handlers do not run


async def test_reject_answers_the_sender_only_and_keeps_the_connection(connect, handlers, caplog):
    handlers("reject_long")
    alice, bob = await connect("alice", V1), await connect("bob")
    caplog.clear()
    with caplog.at_level(logging.INFO, "relay"):
        await send_text(alice, frame(["bob"], "far too long", id=9))
        assert json.loads(await alice.receive_from()) == error("too_long", "Keep it under 6 characters.", 9)
    assert await bob.receive_nothing(timeout=0.05)
    assert [r.getMessage() for r in caplog.records] == ["event=frame_refused client=alice code=too_long"]
    assert not any(r.exc_info for r in caplog.records)
    await send_text(alice, frame(["bob"], "ok"))
    assert await bob.receive_from() == '"ok"'


@pytest.mark.parametrize(
    ("handler", "problem"),
    [
        ("crash", "where=tests.test_handlers.crash client=alice error=RuntimeError: the handler broke"),
        ("returns_a_dict", "error=returned dict, not a Message or None"),
        ("returns_bad_targets", "cannot be relayed"),
        ("returns_unencodable_payload", "cannot be relayed"),
        ("targets_as_a_string", "cannot be relayed"),
    ],
)
async def test_a_broken_handler_fails_that_frame_only(connect, handlers, caplog, handler, problem):
    handlers(handler)
    alice, bob = await connect("alice", V1), await connect("bob")
    errors_before = metrics.SITE_CODE_ERRORS.labels("handler")._value.get()
    caplog.clear()
    with caplog.at_level(logging.ERROR, "relay"):
        await send_text(alice, frame(["bob"], "x", id="r"))
        assert json.loads(await alice.receive_from()) == error("internal_error", INTERNAL, "r")
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR and problem in record.getMessage()
    assert record.exc_info is not None  # the traceback, for the site's developers
    assert metrics.SITE_CODE_ERRORS.labels("handler")._value.get() == errors_before + 1
    assert await bob.receive_nothing(timeout=0.05)
    await relay.asend("bob", "pushes still arrive")
    assert await bob.receive_from() == '"pushes still arrive"'


async def test_raw_framing_gets_the_error_too(connect, handlers):
    handlers("crash")
    alice = await connect("alice")
    await send_text(alice, frame(["bob"], "x", id=3))
    assert json.loads(await alice.receive_from()) == {"error": {"code": "internal_error", "detail": INTERNAL, "ref": 3}}


@pytest.mark.django_db(transaction=True)
async def test_a_sync_handler_may_use_the_orm(connect, handlers):
    await get_user_model().objects.acreate(username="u1")
    handlers("count_users")
    alice, bob = await connect("alice"), await connect("bob")
    await send_text(alice, frame(["bob"], "hi"))
    assert json.loads(await bob.receive_from()) == {"text": "hi", "users": 1}


async def test_frames_are_handled_and_relayed_in_order(connect, handlers):
    handlers("only_first_target", "shout")  # a thread hop per frame
    alice, bob = await connect("alice"), await connect("bob")
    for i in range(200):
        await send_text(alice, frame(["bob"], f"m{i}"))
    assert [await bob.receive_from() for _ in range(200)] == [f'"M{i}"' for i in range(200)]


async def test_server_pushes_skip_handlers(connect, handlers):
    handlers("crash")
    bob = await connect("bob")
    await relay.asend("bob", "pushed")
    assert await bob.receive_from() == '"pushed"'


async def test_run_handlers_passes_reject_and_wraps_the_rest():
    message = Message(relay.Connection("a", "c1"), ("b",), 1)
    with pytest.raises(relay.Reject):
        await run_handlers([("x", reject_long)], message.replace(payload="123456"))
    with pytest.raises(HandlerError, match="message handler x: RuntimeError"):
        await run_handlers([("x", crash)], message)
    assert await run_handlers([], message) is message


def test_reject_validates_its_code():
    assert relay.Reject("quota_exceeded", "Full.").code == "quota_exceeded"
    assert relay.Reject().code == "rejected"
    with pytest.raises(ValueError, match="is not an error code"):
        relay.Reject("Not A Code")
