"""Resuming a stream: what a handshake asks (``?since=<epoch>:<offset>``, or ``?since=`` to learn the
position), and the gate that keeps the live deliveries from doubling the replay."""

from collections import deque
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


class ReplayGate:
    """The live deliveries of a resuming connection: held while its replay is read, then those it covered dropped.

    A process receives the deliveries of a stream on its subscriber connection to Redis,
    and reads the replay on its command connection: the reply to the read can come back
    before the process has handled every delivery that Redis published before the read.
    Those arrive after the replay and must not be sent again. So once the replay is sent,
    the gate drops every delivery of the replay's epoch at or below the position it
    covered, until the first one above it (the subscription keeps Redis's order: every
    later one is above too) opens the gate for good.
    """

    __slots__ = ("held", "covered")

    def __init__(self) -> None:
        #: The deliveries that arrived while the replay was read, in order; None once it is sent.
        self.held: deque[tuple[str, Position | None]] | None = deque()
        #: The position the replay brought the client to; None: nothing (more) to drop.
        self.covered: Position | None = None

    @property
    def open(self) -> bool:
        """Whether the gate holds and drops nothing any more: the consumer can forget it."""
        return self.held is None and self.covered is None

    def passes(self, text: str, position: Position | None) -> bool:
        """Whether to send a delivery now; one that arrives while the replay is read is held."""
        if self.held is not None:
            self.held.append((text, position))
            return False
        return self.is_news(position)

    def is_news(self, position: Position | None) -> bool:
        """Whether a delivery at ``position`` is not one the replay covered (None: not stored, always news)."""
        covered = self.covered
        if covered is None or position is None or position.epoch != covered.epoch:
            return True
        if position.offset <= covered.offset:
            return False
        self.covered = None  # past the replay: so is everything after it
        return True

    def replayed(self, covered: Position | None) -> None:
        """The replay is sent, up to ``covered`` (None: nothing was replayed, nothing to drop)."""
        self.covered = covered

    def next_held(self) -> str | None:
        """The next held delivery the replay did not cover; None when none is left, which ends the holding.

        One at a time, so that what arrives while one is being sent is held behind it: the
        order stays the stream's.
        """
        while self.held:
            text, position = self.held.popleft()
            if self.is_news(position):
                return text
        self.held = None
        return None
