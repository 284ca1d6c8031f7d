"""The bus: carries client frames between relay processes over Redis pub/sub.

Each process subscribes to one Redis channel per client id it holds connections for
and publishes every client frame to the channel of each target. A process skips the
copies of its own frames: it delivered those to its local connections already.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .metrics import DELIVERY_LATENCY
from .resp import CommandPipe, RedisLink, encode_command

logger = logging.getLogger(__name__)

#: Called with (target, sender, payload_json) for each frame from another process.
Deliver = Callable[[str, str, str], Awaitable[Any]]

#: How long a handshake waits for Redis to confirm its subscription.
SUBSCRIBE_WAIT = 2.0


class RedisBus:
    """Publishes client frames to Redis and delivers the frames of other processes."""

    def __init__(self, url: str, prefix: str, node: str, commands: CommandPipe, deliver: Deliver) -> None:
        self._channel_prefix = f"{prefix}:bus:".encode()
        self._node = node.encode() + b"\n"
        self._commands = commands
        self._deliver = deliver
        self._subscribed: set[str] = set()
        self._confirmations: dict[bytes, asyncio.Future] = {}
        self._inbox: deque[tuple[bytes, bytes, float]] = deque()
        self._inbox_ready = asyncio.Event()
        self._subscriber = RedisLink(url, "subscribe", self._on_message)
        self._subscriber.on_up(self._resubscribe)
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    def _channel(self, client_id: str) -> bytes:
        return self._channel_prefix + client_id.encode()

    async def subscribe(self, client_id: str) -> None:
        """Receive frames for ``client_id``; returns once Redis confirmed (or after a short wait)."""
        self._subscribed.add(client_id)
        if not self._subscriber.connected:
            return  # subscribed again when the link comes back
        channel = self._channel(client_id)
        confirmed = self._confirmations.get(channel)
        if confirmed is None:
            confirmed = self._confirmations[channel] = asyncio.get_running_loop().create_future()
            self._subscriber.write(encode_command(b"SUBSCRIBE", channel))
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_WAIT)
        except TimeoutError:
            logger.warning("bus: Redis did not confirm the subscription for client=%s in time", client_id)

    def unsubscribe(self, client_id: str) -> None:
        """Stop receiving frames for ``client_id``."""
        self._subscribed.discard(client_id)
        if self._subscriber.connected:
            self._subscriber.write(encode_command(b"UNSUBSCRIBE", self._channel(client_id)))

    def _resubscribe(self) -> None:
        if self._subscribed:
            channels = [self._channel(client_id) for client_id in self._subscribed]
            self._subscriber.write(encode_command(b"SUBSCRIBE", *channels))

    def publish(self, targets: Iterable[str], sender: str, payload_json: str, context: Any) -> bool:
        """Publish a frame to every target's channel; False when Redis cannot be reached now.

        ``context`` is handed to the command pipe's failure callback if the frame may not
        have reached Redis after all.
        """
        if not self._commands.connected:
            return False
        data = self._node + sender.encode() + b"\n" + payload_json.encode()
        for target in targets:
            self._commands.send(encode_command(b"PUBLISH", self._channel(target), data), context)
        return True

    def _on_message(self, reply: Any) -> None:
        kind = reply[0] if isinstance(reply, list) else None
        if kind == b"message":
            if not reply[2].startswith(self._node):  # our own frame: delivered locally already
                self._inbox.append((reply[1], reply[2], time.perf_counter()))
                self._inbox_ready.set()
        elif kind == b"subscribe":
            confirmed = self._confirmations.pop(reply[1], None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)

    async def _dispatch(self) -> None:
        """Deliver queued frames from other processes, one task for all of them."""
        prefix_length = len(self._channel_prefix)
        while True:
            await self._inbox_ready.wait()
            self._inbox_ready.clear()
            while self._inbox:
                channel, data, arrived = self._inbox.popleft()
                try:
                    _, sender, payload_json = data.split(b"\n", 2)
                    await self._deliver(channel[prefix_length:].decode(), sender.decode(), payload_json.decode())
                except (ValueError, UnicodeDecodeError):  # not a relay frame: someone else's publish
                    logger.warning("event=bus_frame_ignored channel=%r bytes=%d", channel[:100], len(data))
                except Exception:  # a bug must not stop delivery for every other client
                    logger.exception("bus: delivering a frame from another process failed")
                DELIVERY_LATENCY.observe(time.perf_counter() - arrived)

    def close(self) -> None:
        """Close the subscription and stop the dispatcher."""
        self._dispatcher.cancel()
        self._subscriber.close()
