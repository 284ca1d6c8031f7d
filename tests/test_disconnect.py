"""relay.disconnect / adisconnect without Redis: this process's connections of an id, closed with the code."""

import pytest

import relay
from relay.api import validate_disconnect


async def test_closes_every_connection_of_the_id_and_nothing_else(connect):
    phone, laptop, bob = await connect("alice"), await connect("alice"), await connect("bob")
    assert await relay.adisconnect("alice", code=4003, reason="banned") == 1
    for communicator in (phone, laptop):
        assert await communicator.receive_output() == {"type": "websocket.close", "code": 4003, "reason": "banned"}
    assert await bob.receive_nothing(timeout=0.05)


async def test_the_default_code_is_4000_and_an_id_with_nothing_open_asks_no_one(connect):
    alice = await connect("alice")
    assert await relay.adisconnect("nobody") == 0
    assert await relay.adisconnect("alice") == 1
    assert await alice.receive_output() == {"type": "websocket.close", "code": 4000}


@pytest.mark.parametrize(
    ("client_id", "code", "reason", "problem"),
    [
        ("a b", 4000, "", "is not a client id"),
        ("alice", 1001, "", "is not a close code"),
        ("alice", 2999, "", "is not a close code"),
        ("alice", 5000, "", "is not a close code"),
        ("alice", True, "", "is not a close code"),
        ("alice", "4000", "", "is not a close code"),
        ("alice", 4000, "é" * 62, "at most 123 bytes"),
        ("alice", 4000, None, "at most 123 bytes"),
    ],
)
def test_bad_arguments_are_refused(client_id, code, reason, problem):
    with pytest.raises(ValueError, match=problem):
        validate_disconnect(client_id, code, reason)
    with pytest.raises(ValueError, match=problem):
        relay.disconnect(client_id, code, reason)


def test_accepted_arguments():
    assert validate_disconnect(42, 1000, "x" * 123) == "42"
    assert validate_disconnect("alice", 4999, "") == "alice"
