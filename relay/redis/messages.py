"""What travels on the bus channels, encoded and decoded (pure functions, no I/O).

Each message starts with a one-letter kind and a newline:

- ``d`` a live delivery: ``d\\n<node>\\n<sender>\\n<payload JSON>``; the publishing
  process (``node``) skips its own, which it delivered to its connections already;
- ``x`` close every connection of the channel's id: ``x\\n<code>\\n<reason>``;
- ``s`` close the connections of the channel's id that one session authenticated (its
  user logged out): ``s\\n<code>\\n<session key>\\n<reason>``. A kind of its own, so
  that a process of an older release ignores it rather than closing every connection.

The sender is empty for a server push (``"from": null``).
"""

from dataclasses import dataclass

LIVE = b"d"
STORED = b"h"
DISCONNECT = b"x"
SESSION_DISCONNECT = b"s"


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


BusMessage = Live | Stored | Disconnect


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
    raise ValueError(f"not a relay bus message: kind {kind[:10]!r}")
