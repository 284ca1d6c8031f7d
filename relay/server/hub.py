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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import hiredis

from relay import metrics, protocol
from relay.conf import conf
from relay.redis import servers, streams
from relay.redis.history import History
from relay.redis.messages import BusMessage, Live, Stored
from relay.redis.servers import RedisServer, group_by_shard, layer_prefix, shard_index
from relay.redis.shards import Shard
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

    def on_relay_reply(self, reply: Any) -> None:
        """The reply callback of the connection's frames that need no ack: it reports failures only."""

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

    @classmethod
    def for_frame(cls, sender: Connection, frame: protocol.Frame) -> "FrameOutcome | Callable[[Any], None]":
        """What hears Redis's replies for ``frame``: an outcome where an ack, a ref or one error per
        frame is due (a frame with an ``id``, or with several targets), else the sender's own callback."""
        if frame.ref is None and len(frame.targets) == 1:
            return sender.on_relay_reply  # the per-message path: no object per frame
        return cls(sender, frame.ref, len(frame.targets))

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

    def fail(self, detail: str = MAYBE_LOST) -> None:
        """A target's Redis refused or lost the frame, or cannot be reached: ``unavailable``, once per frame."""
        if not self.failed:
            self.failed = True
            self.sender.post_error(protocol.UNAVAILABLE, detail, self.ref)


def node_name() -> str:
    """A name for this process in Redis and logs: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Hub:
    """The connections of one process, grouped by client id."""

    def __init__(
        self,
        servers: Sequence[RedisServer],
        redis_prefix: str,
        history: streams.Settings | None = None,
        layer_prefix: str = "asgi",
    ) -> None:
        self.node = node_name()
        # Open connections, delivered to; and how many connections (open or still in
        # their handshake) hold each id's bus subscription.
        self._connections: dict[str, set[Connection]] = {}
        self._members: dict[str, int] = {}
        #: Set on shutdown: new handshakes are refused, open connections are being closed.
        self.draining = False
        #: The history settings where deliveries are kept in streams; None without history.
        self.history = history if servers else None
        self._layer_prefix = layer_prefix
        #: One per Redis server, each holding the ids that hash to it (none without Redis).
        self._shards = tuple(
            Shard(server, redis_prefix, self.node, self.receive, self._local_counts_on(index), self.history)
            for index, server in enumerate(servers)
        )

    def shard_of(self, client_id: str) -> Shard | None:
        """The Redis that holds ``client_id``'s bus channel, presence and stream; None without Redis."""
        if not self._shards:
            return None
        return self._shards[shard_index(client_id, len(self._shards), self._layer_prefix)]

    def _local_counts_on(self, index: int) -> Callable[[], dict[str, int]]:
        """The open connections per id of this process, for the ids on shard ``index``."""

        def counts() -> dict[str, int]:
            shards, prefix = len(self._shards), self._layer_prefix
            return {i: n for i, n in self.local_connections().items() if shard_index(i, shards, prefix) == index}

        return counts

    async def join(self, connection: Connection, accept: Callable[[], Awaitable[None]]) -> None:
        """Subscribe to the connection's frames, ``accept()`` it, then start delivering to it.

        In that order, so that a frame sent once the client sees the handshake reaches it,
        and no frame is sent before the handshake. Pair every join with a ``leave``.
        """
        client_id = connection.client_id
        members = self._members[client_id] = self._members.get(client_id, 0) + 1
        shard = self.shard_of(client_id)
        if shard is not None:
            await shard.bus.subscribe(client_id, first=members == 1)
        await accept()
        connections = self._connections.setdefault(client_id, set())
        connections.add(connection)
        if shard is not None:
            shard.presence.set(client_id, len(connections))

    def leave(self, connection: Connection) -> None:
        """Stop delivering to a connection; the last one of an id unsubscribes."""
        client_id = connection.client_id
        shard = self.shard_of(client_id)
        connections = self._connections.get(client_id)
        if connections is not None and connection in connections:
            connections.discard(connection)
            if not connections:
                del self._connections[client_id]
            if shard is not None:
                shard.presence.set(client_id, len(connections))
        members = self._members.get(client_id, 0) - 1
        if members > 0:
            self._members[client_id] = members
            return
        self._members.pop(client_id, None)
        if shard is not None:
            shard.bus.unsubscribe(client_id)

    def redis_up(self, client_id: str) -> asyncio.Event | None:
        """Set while the connection to the Redis holding ``client_id`` is up; None without Redis."""
        shard = self.shard_of(client_id)
        return shard.commands.link.up if shard is not None else None

    def redis_starting(self, client_id: str) -> bool:
        """Whether the Redis holding ``client_id`` is still being connected to for the first time."""
        shard = self.shard_of(client_id)
        return shard is not None and shard.commands.link.starting

    def problems(self) -> dict[str, str | None]:
        """Per Redis server (shown without credentials), why it cannot carry frames now, or None."""
        return {shard.server.display(): shard.problem() for shard in self._shards}

    def problem(self) -> str | None:
        """Why this process cannot relay between processes now (on some shard), or None."""
        failing = [f"{name}: {problem}" for name, problem in self.problems().items() if problem]
        return "; ".join(failing) or None

    def stream_history(self, client_id: str) -> History | None:
        """Where ``client_id``'s stream is read and appended; None without history."""
        shard = self.shard_of(client_id)
        return shard.history if shard is not None else None

    def connection_count(self) -> int:
        """Connections of this process, open or in their handshake."""
        return sum(self._members.values())

    def connections_of(self, client_id: str) -> int:
        """Connections of ``client_id`` in this process, open or in their handshake (past ``join``'s start)."""
        return self._members.get(client_id, 0)

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
            await self.disconnect(client_id, message.code, message.reason, message.session_key)

    async def disconnect(self, client_id: str, code: int, reason: str, session_key: str | None = None) -> int:
        """Close every local connection of ``client_id`` with ``code``; how many there were.

        With ``session_key``, only the connections that session authenticated (its user
        logged out): the same user's other browsers and token connections stay open.
        """
        connections = tuple(
            connection
            for connection in self._connections.get(client_id, ())
            if session_key is None or getattr(connection, "session_key", None) == session_key
        )
        if connections:
            logger.info(
                "event=disconnect_ordered client=%s code=%d connections=%d session=%s",
                client_id,
                code,
                len(connections),
                "yes" if session_key is not None else "no",
            )
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
        if not self._shards:  # one process: delivered already
            if frame.ref is not None and sender.subprotocol == protocol.SUBPROTOCOL_V1:
                await sender.send_text(protocol.encode_ack(frame.ref, {}))
            return
        on_reply = FrameOutcome.for_frame(sender, frame)
        published = on_reply.published if isinstance(on_reply, FrameOutcome) else on_reply
        for shard, targets in self._targets_by_shard(frame.targets):
            if shard.bus.publish(targets, sender.client_id, frame.payload_json, published):
                continue
            if isinstance(on_reply, FrameOutcome):
                on_reply.fail(RELAYED_HERE_ONLY)
            else:
                sender.post_error(protocol.UNAVAILABLE, RELAYED_HERE_ONLY, frame.ref)

    def store(self, sender: Connection, frame: protocol.Frame) -> None:
        """With history: append the frame to each target's stream; Redis publishes it to every process.

        A target whose Redis cannot be reached is not delivered: the sender hears
        ``unavailable``; the targets on the other shards still get the frame.
        """
        on_reply = FrameOutcome.for_frame(sender, frame)
        for shard, targets in self._targets_by_shard(frame.targets):
            for target in targets:
                stored = on_reply.stored(target) if isinstance(on_reply, FrameOutcome) else on_reply
                if shard.history is None or not shard.commands.connected:
                    if isinstance(on_reply, FrameOutcome):
                        on_reply.fail(NOT_RELAYED)
                    else:
                        sender.post_error(protocol.UNAVAILABLE, NOT_RELAYED, frame.ref)
                    continue
                shard.history.append(target, sender.client_id, frame.payload_json, stored)

    def _targets_by_shard(self, targets: Sequence[str]) -> list[tuple[Shard, list[str]]]:
        """``targets`` grouped by the shard holding each (one group without sharding)."""
        if len(self._shards) == 1:
            return [(self._shards[0], list(targets))]
        groups = group_by_shard(targets, [shard.server for shard in self._shards], self._layer_prefix)
        return [(self._shards[index], ids) for index, ids in groups.items()]

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
        for shard in self._shards:
            shard.close()


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (a server has one loop; tests make many)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(servers.configured(), conf.RELAY_REDIS_PREFIX, streams.configured(), layer_prefix())
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
