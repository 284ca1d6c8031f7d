"""What travels on the bus channels, encoded and decoded (pure functions, no I/O).

Each message starts with a one-letter kind and a newline:

- ``d`` a live delivery: ``d\\n<node>\\n<sender>\\n<payload JSON>``; the publishing
  process (``node``) skips its own, which it delivered to its connections already;
- ``x`` close every connection of the channel's id: ``x\\n<code>\\n<reason>``;
- ``s`` close the connections of the channel's id that one session authenticated (its
  user logged out): ``s\\n<code>\\n<session key>\\n<reason>``. A kind of its own, so
  that a process of an older release ignores it rather than closing every connection.
- ``e`` on the sessions channel (``relay.redis.keys.sessions_channel``), for every
  process: Django sessions ended (a logout, another user's login, a password change);
  close the connections they authenticated, whatever their client id, and those of the
  user whose session no longer logs them in: ``e\\n<JSON>`` (code, reason, the session
  keys, the user's key), JSON since a user's key may be any text.

The sender is empty for a server push (``"from": null``).
"""

import json
from dataclasses import dataclass
from typing import Any

LIVE = b"d"
STORED = b"h"
DISCONNECT = b"x"
SESSION_DISCONNECT = b"s"
SESSIONS_ENDED = b"e"


@dataclass(frozen=True, slots=True)
class Live:
    """A frame delivered to the connections of every process but the sender's."""

    node: bytes
    sender: str | None
    payload_json: str


@dataclass(frozen=True, slots=True)
class Stored:
    """A delivery at ``offset`` of the id's stream in ``epoch``."""

    epoch: str
    offset: int
    sender: str | None
    payload_json: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close every connection of the id with ``code`` and ``reason``; only those of ``session_key`` if given."""

    code: int
    reason: str
    session_key: str | None = None


@dataclass(frozen=True, slots=True)
class SessionsEnded:
    """Close the connections ``session_keys`` authenticated, and those of ``user`` (the key Django's
    session keeps: ``user._meta.pk.value_to_string(user)``) whose session no longer logs them in."""

    code: int
    reason: str
    session_keys: tuple[str, ...] = ()
    user: str | None = None


@dataclass(frozen=True, slots=True)
class LayerEvent:
    """A channel-layer event ``group_send`` sent to the id's group (``relay.redis.groups``): anyone's dict."""

    event: Any


BusMessage = Live | Stored | Disconnect | SessionsEnded | LayerEvent


def live_prefix(node: bytes) -> bytes:
    """How every live delivery from ``node`` starts."""
    return LIVE + b"\n" + node + b"\n"


def encode_live(node: bytes, sender: str | None, payload_json: str) -> bytes:
    """A live delivery from ``node``."""
    return live_prefix(node) + (sender or "").encode() + b"\n" + payload_json.encode()


def encode_disconnect(code: int, reason: str, session_key: str | None = None) -> bytes:
    """An order to close every connection of the channel's id, or those ``session_key`` authenticated."""
    if session_key is None:
        return b"x\n%d\n" % code + reason.encode()
    if not session_key or "\n" in session_key:
        raise ValueError(f"{session_key!r} is not a session key")
    return b"s\n%d\n" % code + session_key.encode() + b"\n" + reason.encode()


def encode_sessions_ended(ended: SessionsEnded) -> bytes:
    """An order to every process: those sessions ended (see ``SessionsEnded``)."""
    fields = {"code": ended.code, "reason": ended.reason, "sessions": list(ended.session_keys), "user": ended.user}
    return SESSIONS_ENDED + b"\n" + json.dumps(fields).encode()


def decode_sessions_ended(rest: bytes) -> SessionsEnded:
    """The ``SessionsEnded`` of an ``e`` message's JSON; ValueError if it is not one."""
    fields = json.loads(rest)
    try:
        ended = SessionsEnded(fields["code"], fields["reason"], tuple(fields["sessions"]), fields["user"])
    except (KeyError, TypeError):
        raise ValueError("not a sessions-ended order") from None
    texts = [ended.reason, *ended.session_keys, *([] if ended.user is None else [ended.user])]
    if not isinstance(ended.code, int) or not all(isinstance(text, str) for text in texts):
        raise ValueError("not a sessions-ended order")
    return ended


def decode(data: bytes) -> BusMessage:
    """The message ``data`` holds; ValueError (or UnicodeDecodeError) for anything else on the channel."""
    kind, _, rest = data.partition(b"\n")
    if kind == LIVE:
        node, sender, payload_json = rest.split(b"\n", 2)
        return Live(node, sender.decode() or None, payload_json.decode())
    if kind == STORED:
        epoch, offset, sender, payload_json = rest.split(b"\n", 3)
        return Stored(epoch.decode(), int(offset), sender.decode() or None, payload_json.decode())
    if kind == DISCONNECT:
        code, reason = rest.split(b"\n", 1)
        return Disconnect(int(code), reason.decode())
    if kind == SESSION_DISCONNECT:
        code, session_key, reason = rest.split(b"\n", 2)
        return Disconnect(int(code), reason.decode(), session_key.decode())
    if kind == SESSIONS_ENDED:
        return decode_sessions_ended(rest)
    raise ValueError(f"not a relay bus message: kind {kind[:10]!r}")
