"""The hub: this process's connections by client id, and relaying frames to them.

A client frame is delivered straight to the target's connections in this process and
published on the bus for the connections in other processes. Server pushes take the
channel layer instead (``relay.api``), so plain Channels code can push too.
"""

import asyncio
import logging
import os
import socket
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from relay import metrics, protocol
from relay.conf import conf
from relay.redis.bus import RedisBus
from relay.redis.messages import BusMessage, Live
from relay.redis.presence_writer import PresenceWriter
from relay.redis.resp import CommandPipe
from relay.server import shutdown

logger = logging.getLogger(__name__)


class Connection(Protocol):
    """What the hub needs of a connection (the consumer is one)."""

    client_id: str
    subprotocol: str | None

    async def send_text(self, text: str) -> None:
        """Send one text frame to the client."""

    async def send_error(self, code: str, detail: str, ref: Any = None) -> None:
        """Send an error frame to the client."""

    async def close(self, code: int, reason: str = "") -> None:
        """Close the connection from the server side."""


def node_name() -> str:
    """A name for this process in Redis and logs: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Hub:
    """The connections of one process, grouped by client id."""

    def __init__(self, redis_url: str | None, redis_prefix: str) -> None:
        self.node = node_name()
        # Open connections, delivered to; and how many connections (open or still in
        # their handshake) hold each id's bus subscription.
        self._connections: dict[str, set[Connection]] = {}
        self._members: dict[str, int] = {}
        #: Set on shutdown: new handshakes are refused, open connections are being closed.
        self.draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._commands = self._bus = self._presence = None
        if redis_url:
            self._commands = CommandPipe(redis_url, self._relay_failed)
            self._bus = RedisBus(redis_url, redis_prefix, self.node, self._commands, self.receive)
            self._presence = PresenceWriter(self._commands, redis_prefix, self.node, self.local_connections)

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
        self, target: str, sender: str | None, payload_json: str, frames: dict[str | None, str] | None = None
    ) -> None:
        """Send a payload to every local connection of ``target``.

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
                frame = frames[subprotocol] = protocol.encode_delivery(subprotocol, sender, payload_json)
            try:
                await connection.send_text(frame)
            except Exception as exc:  # one receiver's failure must never reach its sender
                logger.warning("event=send_failed client=%s error=%r", connection.client_id, exc)
            else:
                sent += 1
        metrics.DELIVERIES.inc(sent)

    async def receive(self, client_id: str, message: BusMessage) -> None:
        """Act on a bus message from another process for ``client_id``."""
        if isinstance(message, Live):
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

    async def relay(self, sender: Connection, message: protocol.Frame) -> None:
        """Deliver a client frame to its targets here and, over the bus, everywhere else."""
        frames: dict[str | None, str] = {}
        for target in message.targets:
            await self.deliver(target, sender.client_id, message.payload_json, frames)
        if self._bus is not None and not self._bus.publish(
            message.targets, sender.client_id, message.payload_json, (sender, message.ref)
        ):
            await sender.send_error(
                protocol.UNAVAILABLE,
                "The relay cannot reach its other processes now; the message reached this process only.",
                message.ref,
            )

    def _relay_failed(self, context: tuple[Connection, Any]) -> None:
        sender, ref = context
        detail = "The relay lost its connection to its other processes; the message may not have reached them."
        task = asyncio.get_running_loop().create_task(sender.send_error(protocol.UNAVAILABLE, detail, ref))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

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
        hub = _hubs[loop] = Hub(conf.RELAY_REDIS_URL, conf.RELAY_REDIS_PREFIX)
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
