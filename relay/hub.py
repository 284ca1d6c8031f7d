"""The hub: this process's connections by client id, and relaying frames to them.

A client frame is delivered straight to the target's connections in this process and
published on the bus for the connections in other processes. Server pushes take the
channel layer instead (``relay.api``), as SPEC §5 promises.
"""

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from . import protocol
from .bus import RedisBus
from .conf import conf

logger = logging.getLogger(__name__)


class Connection(Protocol):
    """What the hub needs of a connection (the consumer is one)."""

    client_id: str
    subprotocol: str | None

    async def send_text(self, text: str) -> None:
        """Send one text frame to the client."""

    async def send_error(self, code: str, detail: str, ref: Any = None) -> None:
        """Send an error frame to the client."""


class Hub:
    """The connections of one process, grouped by client id."""

    def __init__(self, bus_url: str | None, bus_prefix: str) -> None:
        # Open connections, delivered to; and how many connections (open or still in
        # their handshake) hold each id's bus subscription.
        self._connections: dict[str, set[Connection]] = {}
        self._members: dict[str, int] = {}
        self._bus = RedisBus(bus_url, bus_prefix, self.deliver, self._publish_failed) if bus_url else None

    async def join(self, connection: Connection, accept: Callable[[], Awaitable[None]]) -> None:
        """Subscribe to the connection's frames, ``accept()`` it, then start delivering to it.

        In that order, so that a frame sent once the client sees the handshake reaches it,
        and no frame is sent before the handshake. Pair every join with a ``leave``.
        """
        client_id = connection.client_id
        self._members[client_id] = self._members.get(client_id, 0) + 1
        if self._members[client_id] == 1 and self._bus is not None:
            await self._bus.subscribe(client_id)
        await accept()
        self._connections.setdefault(client_id, set()).add(connection)

    def leave(self, connection: Connection) -> None:
        """Stop delivering to a connection; the last one of an id unsubscribes."""
        client_id = connection.client_id
        connections = self._connections.get(client_id)
        if connections is not None:
            connections.discard(connection)
            if not connections:
                del self._connections[client_id]
        members = self._members.get(client_id, 0) - 1
        if members > 0:
            self._members[client_id] = members
            return
        self._members.pop(client_id, None)
        if self._bus is not None:
            self._bus.unsubscribe(client_id)

    def local_count(self, client_id: str) -> int:
        """How many connections ``client_id`` has in this process."""
        return len(self._connections.get(client_id, ()))

    async def deliver(self, target: str, sender: str | None, payload_json: str) -> int:
        """Send a payload to every local connection of ``target``; return how many got it."""
        connections = self._connections.get(target)
        if not connections:
            return 0
        frames: dict[str | None, str] = {}
        for connection in tuple(connections):  # a send may yield; the set may change
            subprotocol = connection.subprotocol
            frame = frames.get(subprotocol)
            if frame is None:
                frame = frames[subprotocol] = protocol.encode_delivery(subprotocol, sender, payload_json)
            await connection.send_text(frame)
        return len(connections)

    async def relay(self, sender: Connection, message: protocol.Message) -> None:
        """Deliver a client frame to its targets here and, over the bus, everywhere else."""
        for target in message.targets:
            await self.deliver(target, sender.client_id, message.payload_json)
        if self._bus is not None and not self._bus.publish(
            message.targets, sender.client_id, message.payload_json, (sender, message.ref)
        ):
            await sender.send_error(
                protocol.UNAVAILABLE,
                "The relay cannot reach its other processes now; the message reached this process only.",
                message.ref,
            )

    def _publish_failed(self, sender: Connection, ref: Any) -> None:
        asyncio.get_running_loop().create_task(
            sender.send_error(
                protocol.UNAVAILABLE,
                "The relay lost its connection to its other processes; the message may not have reached them.",
                ref,
            )
        )

    def close(self) -> None:
        """Close the bus connections."""
        if self._bus is not None:
            self._bus.close()


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (a server has one loop; tests make many)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(conf.RELAY_BUS_URL, conf.RELAY_BUS_PREFIX)
    return hub
