"""The wire protocol: parsing and validating client frames, encoding server frames.

Pure functions, no I/O: the consumer, the HTTP API and the management commands all
validate through here, so they agree on what is valid and on the error codes.
"""

import json
import re
from dataclasses import dataclass
from typing import Any, TypeAlias

# Re-exported: the README documents relay.protocol.ProtocolError.
from relay.exceptions import ProtocolError as ProtocolError

#: A JSON value as ``json.loads`` returns it. ``Any``, not a recursive union: a caller's
#: ``dict[str, int]`` would not be one (dict is invariant), and ``dumps`` checks values anyway.
JSON: TypeAlias = Any

#: The subprotocol that wraps every server frame in an envelope.
SUBPROTOCOL_V1 = "relay.v1"
#: The framing of a connection without a subprotocol: a delivery is the bare payload (RELAY_FRAMINGS).
FRAMING_ORIGINAL = "original"

CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# Error codes (README, "Frames").
INVALID_JSON = "invalid_json"
INVALID_MESSAGE = "invalid_message"
INVALID_TARGET = "invalid_target"
TOO_MANY_TARGETS = "too_many_targets"
MESSAGE_TOO_LARGE = "message_too_large"
BINARY_NOT_SUPPORTED = "binary_not_supported"
RATE_LIMITED = "rate_limited"
HISTORY_LIMITED = "history_limited"
FORBIDDEN = "forbidden"
UNAVAILABLE = "unavailable"
UNKNOWN_CALL = "unknown_call"
INTERNAL_ERROR = "internal_error"

#: What an error code may look like, the relay's own and those of ``relay.Reject``.
ERROR_CODE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: What a call's name may look like: ``chat.history``, ``mark_read``.
CALL_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,99}")

# Close codes the relay sends.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013
#: The user logged out of the site: the sockets their session opened are closed (4000-4999: the
#: site's range; 4000 is relay.disconnect's default, 4001-4013 the unknown-daphne fallbacks).
CLOSE_LOGGED_OUT = 4401


def group_for(client_id: str) -> str:
    """The channel-layer group holding every connection of ``client_id``."""
    return f"relay.{client_id}"


@dataclass(frozen=True, slots=True)
class Frame:
    """A valid client frame to relay: distinct targets, the payload, the correlation id.

    ``payload`` is the decoded value (for message handlers), ``payload_json`` its compact
    JSON text (what is relayed).
    """

    targets: tuple[str, ...]
    payload_json: str
    ref: Any = None
    payload: JSON = None


@dataclass(frozen=True, slots=True)
class PingFrame:
    """``{"type": "ping"}``: a client checking that its connection is alive (browsers cannot see WebSocket pings)."""

    ref: str | int | None = None


@dataclass(frozen=True, slots=True)
class CallFrame:
    """A valid call into Django: ``{"call": name, "payload": ..., "id": ...}``."""

    name: str
    payload: JSON
    ref: str | int


def normalize_client_id(value: Any) -> str | None:
    """Return the client id that ``value`` names (``2`` and ``"2"`` are the same), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, str) and CLIENT_ID_PATTERN.fullmatch(value):
        return value
    return None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> JSON:
    """Decode strict JSON: no NaN or Infinity, and deep nesting is an error, not a crash."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def dumps(value: JSON) -> str:
    """Encode a JSON value compactly, as it goes on the wire."""
    # ASCII-only: a lone surrogate ("\ud800" is valid JSON) stays escaped instead of
    # breaking the server's UTF-8 encoding of the frame.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def utf8_length_exceeds(text: str, limit: int) -> bool:
    """Whether ``text`` is more than ``limit`` bytes in UTF-8, encoding it only when it must."""
    # A character is 1 to 4 bytes: most frames are decided by their length alone.
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def describe(value: JSON) -> str:
    """A short, safe rendering of a JSON value for an error message."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    if isinstance(value, float):
        return repr(value)  # also inf, which JSON cannot encode
    return dumps(value)[:80]


def parse_targets(raw_targets: JSON, max_targets: int, ref: Any = None) -> tuple[str, ...]:
    """Validate a ``targets`` value: a non-empty list of client ids, duplicates removed in order."""
    if not isinstance(raw_targets, list):
        raise ProtocolError(INVALID_MESSAGE, '"targets" must be a list of client ids.', ref)
    if not raw_targets:
        raise ProtocolError(INVALID_MESSAGE, '"targets" must not be empty.', ref)
    targets: dict[str, None] = {}
    for raw in raw_targets:
        target = normalize_client_id(raw)
        if target is None:
            raise ProtocolError(
                INVALID_TARGET,
                f"{describe(raw)} is not a client id (1-64 characters of A-Z a-z 0-9 _ . -).",
                ref,
            )
        targets[target] = None
    if len(targets) > max_targets:
        raise ProtocolError(TOO_MANY_TARGETS, f"{len(targets)} targets; at most {max_targets} are allowed.", ref)
    return tuple(targets)


def frame_ref(data: dict[str, JSON]) -> str | int | None:
    """A frame's correlation id: its ``"id"`` when that is a string or an integer."""
    ref = data.get("id")
    return ref if isinstance(ref, (str, int)) and not isinstance(ref, bool) else None


def peek_ref(text: str | None, max_bytes: int) -> str | int | None:
    """The ``"id"`` of a frame that is refused before it is validated (rate limit), if it has one."""
    if text is None or utf8_length_exceeds(text, max_bytes):
        return None
    try:
        data = loads(text)
    except ValueError:
        return None
    return frame_ref(data) if isinstance(data, dict) else None


def parse_call(data: dict[str, JSON], ref: str | int | None) -> CallFrame:
    """Validate a decoded call ``{"call": name, "payload": ..., "id": ...}``."""
    name = data["call"]
    if ref is None:
        raise ProtocolError(INVALID_MESSAGE, 'A call needs an "id" (a string or an integer) to answer to.')
    if not isinstance(name, str) or not CALL_NAME_PATTERN.fullmatch(name):
        raise ProtocolError(INVALID_MESSAGE, '"call" must be a name like "chat.history".', ref)
    payload = data.get("payload")
    try:
        dumps(payload)
    except ValueError:
        raise ProtocolError(INVALID_JSON, "The payload holds a number out of range.", ref) from None
    return CallFrame(name=name, payload=payload, ref=ref)


def parse_message(data: JSON, *, max_targets: int) -> Frame | CallFrame | PingFrame:
    """Validate a decoded frame: ``{"targets": [...], "payload": ..., "id": ...}``, a call, or a ping."""
    if not isinstance(data, dict):
        raise ProtocolError(INVALID_MESSAGE, "A frame must be a JSON object.")
    ref = frame_ref(data)
    if "call" in data:
        return parse_call(data, ref)
    if data.get("type") == "ping" and "targets" not in data:
        return PingFrame(ref)
    if "targets" not in data:
        raise ProtocolError(INVALID_MESSAGE, 'The frame has no "targets".', ref)
    if "payload" not in data:
        raise ProtocolError(INVALID_MESSAGE, 'The frame has no "payload".', ref)
    targets = parse_targets(data["targets"], max_targets, ref)
    try:
        payload_json = dumps(data["payload"])
    except ValueError:  # 1e400 parses as infinity, which JSON cannot carry
        raise ProtocolError(INVALID_JSON, "The payload holds a number out of range.", ref) from None
    return Frame(targets=targets, payload_json=payload_json, ref=ref, payload=data["payload"])


def parse_frame(text: str, *, max_targets: int, max_bytes: int) -> Frame | CallFrame | PingFrame:
    """Parse and validate one client text frame, raising ProtocolError with the code to send."""
    if utf8_length_exceeds(text, max_bytes):
        raise ProtocolError(MESSAGE_TOO_LARGE, f"A frame may be at most {max_bytes} bytes.")
    try:
        data = loads(text)
    except ValueError as exc:
        raise ProtocolError(INVALID_JSON, f"The frame is not valid JSON: {exc}.") from None
    return parse_message(data, max_targets=max_targets)


def encode_delivery(subprotocol: str | None, sender: str | None, payload_json: str, position: Any = None) -> str:
    """The server frame delivering a payload, in the connection's framing.

    In ``relay.v1``, a delivery stored in its target's stream carries ``offset`` and
    ``epoch`` (``position``: a ``relay.redis.streams.Position``); the original framing is
    only the payload, always.
    """
    if subprotocol != SUBPROTOCOL_V1:
        return payload_json
    if position is None:
        return f'{{"type":"message","from":{dumps(sender)},"payload":{payload_json}}}'
    return (
        f'{{"type":"message","from":{dumps(sender)},"offset":{position.offset},'
        f'"epoch":{dumps(position.epoch)},"payload":{payload_json}}}'
    )


def encode_pong(subprotocol: str | None, ref: str | int | None) -> str:
    """The answer to a ping, in the connection's framing."""
    pong: dict[str, JSON] = {"type": "pong"} if ref is None else {"type": "pong", "ref": ref}
    return dumps(pong if subprotocol == SUBPROTOCOL_V1 else {"pong": pong.get("ref")})


def encode_ack(ref: str | int, offsets: dict[str, int]) -> str:
    """The ``relay.v1`` frame telling a sender its frame was taken: stored at ``offsets`` per target."""
    return dumps({"type": "ack", "ref": ref, "offsets": offsets})


def encode_recovered(
    recovered: bool, replayed: int, reason: str | None, epoch: str | None = None, offset: int | None = None
) -> str:
    """The ``relay.v1`` frame that ends a resume: how it went, and where the stream is now."""
    frame: dict[str, JSON] = {"type": "recovered", "recovered": recovered, "replayed": replayed}
    if reason is not None:
        frame["reason"] = reason
    if epoch is not None:
        frame["epoch"], frame["offset"] = epoch, offset
    return dumps(frame)


#: ``?since=<epoch>:<offset>``: where a resuming client's stream stopped.
SINCE_PATTERN = re.compile(r"([A-Za-z0-9._-]{1,64}):([0-9]{1,18})")


def parse_since(value: str) -> tuple[str, int] | None:
    """The (epoch, offset) of a ``since`` value; None for ``""`` (a client with no position yet).

    Raises ValueError for anything else.
    """
    if value == "":
        return None
    match = SINCE_PATTERN.fullmatch(value)
    if match is None:
        raise ValueError(f"{value[:80]!r} is not <epoch>:<offset> (the epoch and offset of the last delivery)")
    return match.group(1), int(match.group(2))


def encode_error(subprotocol: str | None, code: str, detail: str, ref: Any = None, target: str | None = None) -> str:
    """The server frame telling a sender what was wrong, in the connection's framing.

    ``ref`` (the bad frame's ``"id"``) is in both framings when the frame had one;
    ``target``, when the error is about one target of the frame only (``unavailable``).
    """
    error: dict[str, JSON] = {"code": code, "detail": detail}
    if ref is not None:
        error["ref"] = ref
    if target is not None:
        error["target"] = target
    if subprotocol == SUBPROTOCOL_V1:
        return dumps({"type": "error", **error})
    return dumps({"error": error})


def encode_reply(subprotocol: str | None, ref: str | int, payload_json: str) -> str:
    """The answer to a call, to the caller only, in the connection's framing."""
    if subprotocol == SUBPROTOCOL_V1:
        return f'{{"type":"reply","ref":{dumps(ref)},"payload":{payload_json}}}'
    return f'{{"reply":{{"ref":{dumps(ref)},"payload":{payload_json}}}}}'


def validate_error_code(code: object) -> str:
    """``code`` if it is a valid error code (``quota_exceeded``); raises ValueError otherwise."""
    if not isinstance(code, str) or not ERROR_CODE_PATTERN.fullmatch(code):
        raise ValueError(f"{code!r} is not an error code: 1-64 characters of a-z 0-9 _, starting with a letter.")
    return code
