"""relay.redis.messages: the bus's messages, encoded and decoded (the session disconnect of issue 12)."""

import pytest

from relay.redis import messages
from relay.redis.messages import Disconnect, SessionsEnded


@pytest.mark.parametrize(
    "message",
    [
        Disconnect(4000, "banned"),
        Disconnect(4000, ""),
        Disconnect(4401, "logged out", "abcdefghijklmnopqrstuvwxyz012345"),
        Disconnect(4401, "a reason\nwith a newline", "k"),
    ],
)
def test_disconnects_round_trip(message):
    assert messages.decode(messages.encode_disconnect(message.code, message.reason, message.session_key)) == message


def test_a_session_disconnect_is_a_kind_of_its_own():
    """An older process that does not know it ignores it (not a relay message), rather than closing everything."""
    encoded = messages.encode_disconnect(4401, "logged out", "key")
    assert encoded == b"s\n4401\nkey\nlogged out"
    assert messages.encode_disconnect(4000, "banned") == b"x\n4000\nbanned"


@pytest.mark.parametrize("session_key", ["", "a\nb"])
def test_a_session_key_the_format_cannot_carry_is_refused(session_key):
    with pytest.raises(ValueError, match="not a session key"):
        messages.encode_disconnect(4401, "", session_key)


@pytest.mark.parametrize(
    "message",
    [
        SessionsEnded(4401, "logged out", ("abcdefghijklmnopqrstuvwxyz012345",), "42"),
        SessionsEnded(4401, "logged out", ("old", "new"), None),
        SessionsEnded(4401, "", (), "a user's key\nmay be any text"),
    ],
)
def test_sessions_ended_round_trip(message):
    """The end of Django sessions, for every process: whatever the session keys and the user's key hold."""
    assert messages.decode(messages.encode_sessions_ended(message)) == message


@pytest.mark.parametrize(
    "data", [b"e\n[]", b"e\n{}", b'e\n{"code": "4401", "reason": "", "sessions": [], "user": null}']
)
def test_a_sessions_ended_order_that_is_not_one_is_a_value_error(data):
    with pytest.raises(ValueError):
        messages.decode(data)
