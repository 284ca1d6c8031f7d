"""What a handshake asks of its stream: ``?since=<epoch>:<offset>`` to resume, ``?since=`` to learn the position."""

from dataclasses import dataclass

from asgiref.typing import WebSocketScope

from relay import protocol
from relay.exceptions import Refused
from relay.identity.handshake import query_params
from relay.redis.streams import Position


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """A handshake's ``since``: the position to resume after, or None for a client without one yet."""

    since: Position | None


def requested_resume(scope: WebSocketScope, subprotocol: str | None) -> ResumeRequest | None:
    """What the handshake's ``since`` asks for; None when it has none.

    Raises Refused for a ``since`` the relay cannot read, or in the original framing,
    which carries no offsets to resume from.
    """
    values = query_params(scope).get("since")
    if values is None:
        return None
    if len(values) > 1:
        raise Refused("ambiguous", "more than one ?since=")
    if subprotocol != protocol.SUBPROTOCOL_V1:
        raise Refused("since_needs_v1", "?since= resumes a relay.v1 stream: open the socket with that subprotocol")
    try:
        since = protocol.parse_since(values[0])
    except ValueError as exc:
        raise Refused("invalid_since", str(exc)) from None
    return ResumeRequest(Position(*since) if since is not None else None)
