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
from channels.layers import get_channel_layer

from relay import metrics, protocol
from relay.conf import conf
from relay.connections import Connection as ConnectionInfo
from relay.identity.sessions import user_key
from relay.redis import servers, streams
from relay.redis.groups import LayerGroups
from relay.redis.history import History
from relay.redis.messages import BusMessage, LayerEvent, Live, SessionsEnded, Stored
from relay.redis.servers import RedisServer, group_by_shard, layer_prefix, shard_index
from relay.redis.shards import Shard
from relay.server import shutdown
from relay.server.sessions import SessionIndex
from relay.server.throttling import BucketsById

logger = logging.getLogger(__name__)


#: What a sender hears when its frame could not be passed on (to one target: ``{target}``).
NOT_STORED = (
    "The relay cannot reach the Redis of {target} now; the message was not delivered to it. Send it again later."
)
RELAYED_HERE_ONLY = "The relay cannot reach its other processes now; the message reached this process only."
MAYBE_LOST = "The relay lost its connection to Redis; the message may not have been delivered."
MAYBE_NOT_STORED = (
    "The relay lost its connection to the Redis of {target}; the message may not have been delivered to it."
)


class Connection(Protocol):
    """What the hub needs of a connection (the consumer is one)."""

    client_id: str
    subprotocol: str | None
    #: The Django session that proved the identity (``Identity.session_key``, any backend), else None.
    session_key: str | None
    #: The connection as the site's code sees it: ``info.user`` is the session's user.
    info: ConnectionInfo

    def on_relay_reply(self, reply: Any) -> None:
        """The reply callback of the connection's frames that need no ack: it reports failures only."""

    async def deliver(self, text: str, position: streams.Position | None) -> None:
        """Send one delivery frame to the client; ``position`` is its place in the stream."""

    async def send_text(self, text: str) -> None:
        """Send one frame to the client."""

    def post_text(self, text: str) -> None:
        """Send one frame from sync code (a Redis reply), without waiting."""

    def post_error(self, code: str, detail: str, ref: Any = None, target: str | None = None) -> None:
        """Send an error frame from sync code, without waiting; ``target``: the one target it is about."""

    async def close(self, code: int, reason: str = "") -> None:
        """Close the connection from the server side."""

    async def handle_layer_event(self, event: Any) -> None:
        """Handle an event ``group_send`` sent to the connection's group (anyone's dict)."""


class FrameOutcome:
    """One client frame on its way through Redis: its ack, or ``unavailable``, once every target answered.

    With history, each target whose stream did not take the frame gets an ``unavailable``
    of its own, naming it (``missed``): the others have the frame, and a retry to them
    would deliver it twice. The ack (``relay.v1`` frames with an ``id``) follows with the
    offsets of the others, if any took it. Without history, the ack comes when every
    PUBLISH was taken, and the first failure sends one ``unavailable`` for the frame
    instead (``fail``): which of the other processes it reached is not known.
    """

    __slots__ = ("sender", "ref", "acked", "waiting", "offsets", "failed", "failed_targets")

    def __init__(self, sender: Connection, ref: str | int | None, targets: int) -> None:
        self.sender = sender
        self.ref = ref
        self.acked = ref is not None and sender.subprotocol == protocol.SUBPROTOCOL_V1
        self.waiting = targets
        self.offsets: dict[str, int] = {}
        self.failed = False
        self.failed_targets = 0

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
                self.missed(target, MAYBE_NOT_STORED)
                return
            self.offsets[target] = streams.position_of(reply).offset
            self.answered()

        return on_reply

    def missed(self, target: str, detail: str) -> None:
        """``target``'s stream did not take the frame (with history): ``unavailable`` naming it."""
        self.sender.post_error(protocol.UNAVAILABLE, detail.format(target=target), self.ref, target)
        self.failed_targets += 1
        self.answered()

    def published(self, reply: Any) -> None:
        """The reply callback of a PUBLISH (no history)."""
        if isinstance(reply, hiredis.ReplyError):
            self.fail()
        else:
            self.answered()

    def answered(self) -> None:
        """One target more answered; the ack once all did, unless none took the frame."""
        self.waiting -= 1
        if self.waiting == 0 and self.acked and not self.failed and (self.offsets or not self.failed_targets):
            assert self.ref is not None  # acked only with a ref
            self.sender.post_text(protocol.encode_ack(self.ref, self.offsets))

    def fail(self, detail: str = MAYBE_LOST) -> None:
        """Without history: a target's Redis refused, lost or cannot take the frame; ``unavailable``, once per frame."""
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
        groups: LayerGroups | None = None,
    ) -> None:
        self.node = node_name()
        # Open connections, delivered to; and how many connections (open or still in
        # their handshake) hold each id's bus subscription.
        self._connections: dict[str, set[Connection]] = {}
        self._members: dict[str, int] = {}
        #: The open connections a Django session authenticated, by session and by user (logouts).
        self._sessions: SessionIndex[Connection] = SessionIndex()
        self._ending: set[asyncio.Task[int]] = set()  # end_sessions() runs, referenced until done
        #: Set on shutdown: new handshakes are refused, open connections are being closed.
        self.draining = False
        #: The history settings where deliveries are kept in streams; None without history.
        self.history = history if servers else None
        #: What each client id's frames may still store in streams (RELAY_HISTORY_RATE); None: no limit.
        self._budgets = (
            BucketsById(self.history.rate, self.history.burst)
            if self.history is not None and self.history.rate is not None
            else None
        )
        self._layer_prefix = layer_prefix
        #: One per Redis server, each holding the ids that hash to it (none without Redis).
        self._shards = tuple(
            Shard(server, redis_prefix, self.node, self.receive, self._local_counts_on(index), self.history, groups)
            for index, server in enumerate(servers)
        )
        #: Whether the bus carries the connections' layer groups (``relay.redis.groups``): they need not join them.
        self.carries_layer_groups = groups is not None and bool(self._shards)

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
        if connection.session_key is not None:
            # Before the awaits: a logout during the handshake closes this one too, once accepted.
            self._sessions.add(connection, connection.session_key, user_key(connection.info.user))
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
        self._sessions.discard(connection)
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

    async def wait_started(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, until the links to every Redis have connected or failed once.

        Then ``problem()`` is a verdict: a hub just started (by a health check, before any
        WebSocket) is still making its links, which are "not connected yet".
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(shard.starting for shard in self._shards) and loop.time() < deadline:
            await asyncio.sleep(0.01)  # RedisLink has no event for a failed first attempt

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
        elif isinstance(message, LayerEvent):
            for connection in tuple(self._connections.get(client_id, ())):
                try:
                    await connection.handle_layer_event(message.event)
                except Exception:  # a site's handler: the id's other connections still get the event
                    logger.exception("event=layer_event_failed client=%s", client_id)
        elif isinstance(message, SessionsEnded):
            # In a task of its own: it may read the database, and the bus hands on every id's frames.
            ending = asyncio.get_running_loop().create_task(self.end_sessions(message))
            self._ending.add(ending)
            ending.add_done_callback(self._ending.discard)
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

    async def end_sessions(self, ended: SessionsEnded) -> int:
        """Close the local connections of the Django sessions that ended (``SessionsEnded``); how many."""
        closing = await self._sessions.ended(ended)
        if closing:
            logger.info("event=sessions_ended code=%d connections=%d", ended.code, len(closing))
        for connection in closing:
            await connection.close(ended.code, ended.reason)
        return len(closing)

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
        ``unavailable`` naming it; the targets on the other shards still get the frame.
        A frame over the sender's history budget is not delivered at all.
        """
        if self._budgets is not None and not self.within_budget(sender, frame):
            return
        on_reply = FrameOutcome.for_frame(sender, frame)
        for shard, targets in self._targets_by_shard(frame.targets):
            history = shard.history  # None only without history settings, never here: for the type
            if history is None or not shard.commands.connected:  # this shard's targets cannot get it
                for target in targets:
                    if isinstance(on_reply, FrameOutcome):
                        on_reply.missed(target, NOT_STORED)
                    else:
                        sender.post_error(protocol.UNAVAILABLE, NOT_STORED.format(target=target), frame.ref, target)
                continue
            for target in targets:
                stored = on_reply.stored(target) if isinstance(on_reply, FrameOutcome) else on_reply
                history.append(target, sender.client_id, frame.payload_json, stored)

    def within_budget(self, sender: Connection, frame: protocol.Frame) -> bool:
        """Whether the sender's id may store ``frame`` in its targets' streams now; ``history_limited`` if not.

        The budget (RELAY_HISTORY_RATE, RELAY_HISTORY_BURST) is what bounds the Redis
        memory one client id can fill, whatever targets it picks (README, "Delivery history
        and resume"); it is shared by the id's connections in this process.
        """
        assert self._budgets is not None  # called only with a budget
        cost = streams.stored_bytes(sender.client_id, frame.payload_json, len(frame.targets))
        bucket = self._budgets.bucket(sender.client_id)
        if bucket.allow(cost):
            return True
        if cost > bucket.burst:
            detail = (
                f"The message would store {cost} bytes in its targets' streams, more than a client may store "
                f"at once ({bucket.burst}): it was not delivered. Send it to fewer targets, or a smaller payload."
            )
        else:
            detail = (
                f"Over the limit of {bucket.rate:.0f} bytes a second stored in streams: the message was not "
                f"delivered. Retry in {bucket.wait(cost):.2f} s."
            )
        if bucket.refused_in_a_row == 1:  # once per run of refusals, not once per frame
            logger.info("event=frame_refused client=%s code=%s", sender.client_id, protocol.HISTORY_LIMITED)
        sender.post_error(protocol.HISTORY_LIMITED, detail, frame.ref)
        return False

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
        configured = servers.configured()
        hub = _hubs[loop] = Hub(
            configured, conf.RELAY_REDIS_PREFIX, streams.configured(), layer_prefix(), groups_on_bus(configured)
        )
        shutdown.install(hub)
    return hub


def groups_on_bus(configured: Sequence[RedisServer]) -> LayerGroups | None:
    """How the bus carries the layer groups, where it can (``RELAY_GROUPS_ON_BUS``); None: through the layer."""
    if not configured or not conf.RELAY_GROUPS_ON_BUS or not servers.layer_is_on_the_relays_servers():
        return None
    deserialize = getattr(get_channel_layer(), "deserialize", None)  # RedisPubSubChannelLayer's
    return LayerGroups(layer_prefix(), deserialize) if callable(deserialize) else None


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
