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

CLIENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# Error codes (README, "Frames").
INVALID_JSON = "invalid_json"
INVALID_MESSAGE = "invalid_message"
INVALID_TARGET = "invalid_target"
TOO_MANY_TARGETS = "too_many_targets"
MESSAGE_TOO_LARGE = "message_too_large"
BINARY_NOT_SUPPORTED = "binary_not_supported"
RATE_LIMITED = "rate_limited"
FORBIDDEN = "forbidden"
UNAVAILABLE = "unavailable"

# Close codes the relay sends.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013


def group_for(client_id: str) -> str:
    """The channel-layer group holding every connection of ``client_id``."""
    return f"relay.{client_id}"


@dataclass(frozen=True, slots=True)
class Message:
    """A valid client frame: distinct targets, the payload as JSON text, the correlation id."""

    targets: tuple[str, ...]
    payload_json: str
    ref: Any = None


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


def parse_message(data: JSON, *, max_targets: int) -> Message:
    """Validate a decoded frame ``{"targets": [...], "payload": ..., "id": ...}``."""
    if not isinstance(data, dict):
        raise ProtocolError(INVALID_MESSAGE, "A frame must be a JSON object.")
    ref = data.get("id")
    if not isinstance(ref, (str, int)) or isinstance(ref, bool):
        ref = None
    if "targets" not in data:
        raise ProtocolError(INVALID_MESSAGE, 'The frame has no "targets".', ref)
    if "payload" not in data:
        raise ProtocolError(INVALID_MESSAGE, 'The frame has no "payload".', ref)
    targets = parse_targets(data["targets"], max_targets, ref)
    try:
        payload_json = dumps(data["payload"])
    except ValueError:  # 1e400 parses as infinity, which JSON cannot carry
        raise ProtocolError(INVALID_JSON, "The payload holds a number out of range.", ref) from None
    return Message(targets=targets, payload_json=payload_json, ref=ref)


def parse_frame(text: str, *, max_targets: int, max_bytes: int) -> Message:
    """Parse and validate one client text frame, raising ProtocolError with the code to send."""
    if utf8_length_exceeds(text, max_bytes):
        raise ProtocolError(MESSAGE_TOO_LARGE, f"A frame may be at most {max_bytes} bytes.")
    try:
        data = loads(text)
    except ValueError as exc:
        raise ProtocolError(INVALID_JSON, f"The frame is not valid JSON: {exc}.") from None
    return parse_message(data, max_targets=max_targets)


def encode_delivery(subprotocol: str | None, sender: str | None, payload_json: str) -> str:
    """The server frame delivering a payload, in the connection's framing."""
    if subprotocol == SUBPROTOCOL_V1:
        return f'{{"type":"message","from":{dumps(sender)},"payload":{payload_json}}}'
    return payload_json


def encode_error(subprotocol: str | None, code: str, detail: str, ref: Any = None) -> str:
    """The server frame telling a sender what was wrong, in the connection's framing."""
    if subprotocol == SUBPROTOCOL_V1:
        envelope = {"type": "error", "code": code, "detail": detail}
        if ref is not None:
            envelope["ref"] = ref
        return dumps(envelope)
    return dumps({"error": {"code": code, "detail": detail}})
