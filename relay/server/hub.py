"""The hub: this process's connections by client id, and relaying frames to them.

With delivery history (Redis, ``RELAY_HISTORY``), a client frame is stored in each
target's stream by a script that also publishes it on the bus, and every process holding
a target's connections delivers it from there, the sender's own too: so each connection
sees its stream's order. Without history, a frame is delivered straight to the target's
connections in this process and published on the bus for the other processes.
"""

import asyncio
import logging
import os
import socket
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import hiredis

from relay import metrics, protocol
from relay.conf import conf
from relay.redis import streams
from relay.redis.bus import RedisBus
from relay.redis.history import History
from relay.redis.messages import BusMessage, Live, Stored
from relay.redis.presence_writer import PresenceWriter
from relay.redis.resp import CommandPipe
from relay.server import shutdown

logger = logging.getLogger(__name__)


#: What a sender hears when its frame could not be passed on.
NOT_RELAYED = "The relay cannot reach Redis now; the message was not delivered. Send it again later."
RELAYED_HERE_ONLY = "The relay cannot reach its other processes now; the message reached this process only."
MAYBE_LOST = "The relay lost its connection to Redis; the message may not have been delivered."


class Connection(Protocol):
    """What the hub needs of a connection (the consumer is one)."""

    client_id: str
    subprotocol: str | None

    async def deliver(self, text: str, position: streams.Position | None) -> None:
        """Send one delivery frame to the client; ``position`` is its place in the stream."""

    async def send_text(self, text: str) -> None:
        """Send one frame to the client."""

    def post_text(self, text: str) -> None:
        """Send one frame from sync code (a Redis reply), without waiting."""

    def post_error(self, code: str, detail: str, ref: Any = None) -> None:
        """Send an error frame from sync code, without waiting."""

    async def close(self, code: int, reason: str = "") -> None:
        """Close the connection from the server side."""


class FrameOutcome:
    """One client frame on its way through Redis: the ack or ``unavailable`` once every target answered.

    The ack (``relay.v1`` frames with an ``id``) comes when every target's stream holds
    the frame (with history) or every PUBLISH was taken (without); the first failure
    sends ``unavailable`` instead, once.
    """

    __slots__ = ("sender", "ref", "acked", "waiting", "offsets", "failed")

    def __init__(self, sender: Connection, ref: str | int | None, targets: int) -> None:
        self.sender = sender
        self.ref = ref
        self.acked = ref is not None and sender.subprotocol == protocol.SUBPROTOCOL_V1
        self.waiting = targets
        self.offsets: dict[str, int] = {}
        self.failed = False

    def stored(self, target: str) -> Callable[[Any], None]:
        """The reply callback of the append to ``target``'s stream."""

        def on_reply(reply: Any) -> None:
            if isinstance(reply, hiredis.ReplyError):
                self.fail()
                return
            self.offsets[target] = streams.position_of(reply).offset
            self.answered()

        return on_reply

    def published(self, reply: Any) -> None:
        """The reply callback of a PUBLISH (no history)."""
        if isinstance(reply, hiredis.ReplyError):
            self.fail()
        else:
            self.answered()

    def answered(self) -> None:
        """One target more took the frame; the ack once all did."""
        self.waiting -= 1
        if self.waiting == 0 and self.acked and not self.failed:
            assert self.ref is not None  # acked only with a ref
            self.sender.post_text(protocol.encode_ack(self.ref, self.offsets))

    def fail(self) -> None:
        """A target's Redis refused or lost the frame: ``unavailable``, once per frame."""
        if not self.failed:
            self.failed = True
            self.sender.post_error(protocol.UNAVAILABLE, MAYBE_LOST, self.ref)


def node_name() -> str:
    """A name for this process in Redis and logs: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Hub:
    """The connections of one process, grouped by client id."""

    def __init__(self, redis_url: str | None, redis_prefix: str, history: streams.Settings | None = None) -> None:
        self.node = node_name()
        # Open connections, delivered to; and how many connections (open or still in
        # their handshake) hold each id's bus subscription.
        self._connections: dict[str, set[Connection]] = {}
        self._members: dict[str, int] = {}
        #: Set on shutdown: new handshakes are refused, open connections are being closed.
        self.draining = False
        self._commands = self._bus = self._presence = None
        #: The clients' streams; None without delivery history.
        self.history: History | None = None
        if redis_url:
            self._commands = CommandPipe(redis_url)
            self._bus = RedisBus(redis_url, redis_prefix, self.node, self._commands, self.receive)
            self._presence = PresenceWriter(self._commands, redis_prefix, self.node, self.local_connections)
            if history is not None:
                self.history = History(self._commands, redis_prefix, history)

    async def join(self, connection: Connection, accept: Callable[[], Awaitable[None]]) -> None:
        """Subscribe to the connection's frames, ``accept()`` it, then start delivering to it.

        In that order, so that a frame sent once the client sees the handshake reaches it,
        and no frame is sent before the handshake. Pair every join with a ``leave``.
        """
        client_id = connection.client_id
        members = self._members[client_id] = self._members.get(client_id, 0) + 1
        if self._bus is not None:
            await self._bus.subscribe(client_id, first=members == 1)
        await accept()
        connections = self._connections.setdefault(client_id, set())
        connections.add(connection)
        if self._presence is not None:
            self._presence.set(client_id, len(connections))

    def leave(self, connection: Connection) -> None:
        """Stop delivering to a connection; the last one of an id unsubscribes."""
        client_id = connection.client_id
        connections = self._connections.get(client_id)
        if connections is not None and connection in connections:
            connections.discard(connection)
            if not connections:
                del self._connections[client_id]
            if self._presence is not None:
                self._presence.set(client_id, len(connections))
        members = self._members.get(client_id, 0) - 1
        if members > 0:
            self._members[client_id] = members
            return
        self._members.pop(client_id, None)
        if self._bus is not None:
            self._bus.unsubscribe(client_id)

    @property
    def redis_up(self) -> asyncio.Event | None:
        """Set while the relay's Redis connection is up; None without Redis."""
        return self._commands.link.up if self._commands is not None else None

    def problem(self) -> str | None:
        """Why this process cannot relay between processes now, or None."""
        return self._bus.problem() if self._bus is not None else None

    def connection_count(self) -> int:
        """Connections of this process, open or in their handshake."""
        return sum(self._members.values())

    def local_connections(self) -> dict[str, int]:
        """Open connections per client id in this process."""
        return {client_id: len(connections) for client_id, connections in self._connections.copy().items()}

    async def deliver(
        self,
        target: str,
        sender: str | None,
        payload_json: str,
        position: streams.Position | None = None,
        frames: dict[str | None, str] | None = None,
    ) -> None:
        """Send a payload to every local connection of ``target``, at ``position`` of its stream if stored.

        ``frames`` caches the encoded frame per framing; pass one dict for all the
        targets of a frame, so each framing is encoded once.
        """
        connections = self._connections.get(target)
        if not connections:
            return
        if frames is None:
            frames = {}
        sent = 0
        for connection in tuple(connections):  # a send may yield; the set may change
            subprotocol = connection.subprotocol
            frame = frames.get(subprotocol)
            if frame is None:
                frame = frames[subprotocol] = protocol.encode_delivery(subprotocol, sender, payload_json, position)
            try:
                await connection.deliver(frame, position)
            except Exception as exc:  # one receiver's failure must never reach its sender
                logger.warning("event=send_failed client=%s error=%r", connection.client_id, exc)
            else:
                sent += 1
        metrics.DELIVERIES.inc(sent)

    async def receive(self, client_id: str, message: BusMessage) -> None:
        """Act on a bus message for ``client_id``."""
        if isinstance(message, Stored):
            position = streams.Position(message.epoch, message.offset)
            await self.deliver(client_id, message.sender, message.payload_json, position)
        elif isinstance(message, Live):
            await self.deliver(client_id, message.sender, message.payload_json)
        else:
            await self.disconnect(client_id, message.code, message.reason)

    async def disconnect(self, client_id: str, code: int, reason: str) -> int:
        """Close every local connection of ``client_id`` with ``code``; how many there were."""
        connections = tuple(self._connections.get(client_id, ()))
        if connections:
            logger.info("event=disconnect_ordered client=%s code=%d connections=%d", client_id, code, len(connections))
        for connection in connections:
            await connection.close(code, reason)
        return len(connections)

    async def relay(self, sender: Connection, frame: protocol.Frame) -> None:
        """Pass a client frame on to its targets, here and in every other process; ack or ``unavailable``."""
        if self.history is not None:
            self.store(sender, frame)
            return
        frames: dict[str | None, str] = {}
        for target in frame.targets:
            await self.deliver(target, sender.client_id, frame.payload_json, None, frames)
        if self._bus is None:  # one process: delivered already
            if frame.ref is not None and sender.subprotocol == protocol.SUBPROTOCOL_V1:
                await sender.send_text(protocol.encode_ack(frame.ref, {}))
            return
        outcome = FrameOutcome(sender, frame.ref, len(frame.targets))
        if not self._bus.publish(frame.targets, sender.client_id, frame.payload_json, outcome.published):
            sender.post_error(protocol.UNAVAILABLE, RELAYED_HERE_ONLY, frame.ref)

    def store(self, sender: Connection, frame: protocol.Frame) -> None:
        """With history: append the frame to each target's stream; Redis publishes it to every process."""
        assert self.history is not None and self._commands is not None  # called only with history
        if not self._commands.connected:
            sender.post_error(protocol.UNAVAILABLE, NOT_RELAYED, frame.ref)
            return
        outcome = FrameOutcome(sender, frame.ref, len(frame.targets))
        for target in frame.targets:
            self.history.append(target, sender.client_id, frame.payload_json, outcome.stored(target))

    async def drain(self, code: int, timeout: float) -> None:
        """Refuse new handshakes, close every connection with ``code``, wait for them to go."""
        self.draining = True
        for connections in list(self._connections.values()):
            for connection in tuple(connections):
                await connection.close(code)
        deadline = asyncio.get_running_loop().time() + timeout
        while self._members and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    def close(self) -> None:
        """Leave Redis cleanly: presence removed at once, then the Redis connections closed."""
        for part in (self._presence, self._bus, self._commands):
            if part is not None:
                part.close()


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (a server has one loop; tests make many)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(conf.RELAY_REDIS_URL, conf.RELAY_REDIS_PREFIX, streams.configured())
        shutdown.install(hub)
    return hub


def running_hub() -> Hub | None:
    """The hub of the running event loop if one was started, without starting one."""
    return _hubs.get(asyncio.get_running_loop())


def local_hubs() -> list[Hub]:
    """The hubs of this process (one per event loop that served a connection)."""
    return list(_hubs.values())


def local_connections() -> dict[str, int]:
    """Open connections per client id in this process, over every hub."""
    counts: dict[str, int] = {}
    for hub in list(_hubs.values()):
        for client_id, n in hub.local_connections().items():
            counts[client_id] = counts.get(client_id, 0) + n
    return counts
