"""The bus: carries client frames between relay processes over Redis pub/sub.

Each process subscribes to one Redis channel per client id it holds connections for
and publishes every client frame to the channel of each target. A process skips the
copies of its own frames: it delivered those to its local connections already. The
same channels carry orders to close an id's connections (``relay.disconnect``). Every
process also listens to one channel for all (``sessions_channel``): Django sessions
that ended, whose connections may have any client id. The formats are in
``relay.redis.messages``. With ``groups``, each id's channel-layer group channel is
subscribed along with its bus channel (``relay.redis.groups``).
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from relay.metrics import DELIVERY_LATENCY
from relay.redis import messages
from relay.redis.groups import LayerGroups
from relay.redis.keys import bus_channel, sessions_channel
from relay.redis.resp import REPLY_TIMEOUT, CommandPipe, OnReply, RedisLink, encode_command, link_error
from relay.redis.servers import RedisServer

logger = logging.getLogger(__name__)

#: Called with (client id, message) for each bus message for an id this process holds;
#: the id is empty for the orders of the sessions channel, which concern any id.
Receive = Callable[[str, messages.BusMessage], Awaitable[Any]]

#: How long a handshake waits for Redis to confirm its subscription.
SUBSCRIBE_WAIT = 2.0


class RedisBus:
    """Publishes client frames to Redis and delivers the frames of other processes."""

    def __init__(
        self,
        server: RedisServer,
        prefix: str,
        node: str,
        commands: CommandPipe,
        receive: Receive,
        groups: LayerGroups | None = None,
    ) -> None:
        self._channel_prefix = bus_channel(prefix, "").encode()
        self._groups = groups
        self._sessions_channel = sessions_channel(prefix).encode()
        self._node = node.encode()
        self._own_frames = messages.live_prefix(self._node)
        self._commands = commands
        self._receive = receive
        self._subscribed: set[str] = set()
        # Per channel, one future per SUBSCRIBE written and not yet confirmed, oldest first:
        # Redis confirms in order, and a handshake waits for the newest.
        self._pending: dict[bytes, deque[tuple[asyncio.Future[None], asyncio.TimerHandle]]] = {}
        self._ping_sent: float | None = None
        self._inbox: deque[tuple[bytes, bytes, float]] = deque()
        self._outbox: list[bytes] = []
        self._inbox_ready = asyncio.Event()
        self._subscriber = RedisLink(server, "subscribe", self._on_message)
        self._subscriber.on_up(self._resubscribe)
        self._subscriber.on_down(self._forget_pending)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._dispatch()), loop.create_task(self._keep_alive())]

    def _channel(self, client_id: str) -> bytes:
        return self._channel_prefix + client_id.encode()

    def _channels(self, client_id: str) -> list[bytes]:
        """What to subscribe for ``client_id``: its bus channel, and its group channel (last) with ``groups``."""
        channel = self._channel(client_id)
        return [channel] if self._groups is None else [channel, self._groups.channel(client_id)]

    async def subscribe(self, client_id: str, first: bool) -> None:
        """Make sure frames for ``client_id`` reach this process; wait (briefly) until they do.

        ``first``: this is the id's first connection here, so the channel is subscribed.
        Every connection waits for the newest pending subscription of its id, so none is
        accepted before Redis confirmed it (unless Redis does not answer in time).
        """
        channels = self._channels(client_id)
        channel = channels[-1]  # Redis confirms a SUBSCRIBE's channels in order: wait for the last
        if first:
            self._subscribed.add(client_id)
        if not self._subscriber.connected:
            if not self._subscriber.starting:  # Redis is away: do not hold the handshake up
                return  # subscribed by _resubscribe when the link comes up
            # The first handshakes after a start: wait a little for the link.
            try:
                await asyncio.wait_for(self._subscriber.up.wait(), SUBSCRIBE_WAIT)
            except TimeoutError:
                return  # subscribed by _resubscribe when the link comes up
            first = client_id in self._subscribed
        if first:
            loop = asyncio.get_running_loop()
            confirmed = loop.create_future()
            # One timer per SUBSCRIBE rather than a wait_for per handshake: a tenth of a handshake's CPU.
            late = loop.call_later(SUBSCRIBE_WAIT, self._subscription_late, client_id, confirmed)
            self._pending.setdefault(channel, deque()).append((confirmed, late))
            self._write_soon(encode_command(b"SUBSCRIBE", *channels))
        pending = self._pending.get(channel)
        if pending:
            await asyncio.shield(pending[-1][0])  # shielded: a cancelled handshake leaves the others waiting

    @staticmethod
    def _subscription_late(client_id: str, confirmed: asyncio.Future[None]) -> None:
        """Redis did not confirm a subscription in SUBSCRIBE_WAIT: let its handshakes go on."""
        if not confirmed.done():
            logger.warning("bus: Redis did not confirm the subscription for client=%s in time", client_id)
            confirmed.set_result(None)

    def unsubscribe(self, client_id: str) -> None:
        """Stop receiving frames for ``client_id`` (its last connection here left)."""
        self._subscribed.discard(client_id)
        if self._subscriber.connected:
            self._write_soon(encode_command(b"UNSUBSCRIBE", *self._channels(client_id)))

    def _write_soon(self, command: bytes) -> None:
        """Write ``command`` with the others of this event-loop turn: one syscall for a burst of handshakes."""
        self._outbox.append(command)
        if len(self._outbox) == 1:
            asyncio.get_running_loop().call_soon(self._write_outbox)

    def _write_outbox(self) -> None:
        commands, self._outbox = self._outbox, []
        if self._subscriber.connected:  # else dropped: the link resubscribes every id held when it is back
            self._subscriber.write(b"".join(commands))

    def _resubscribe(self) -> None:
        # The sessions channel whatever ids are held: a logout may concern the next connection.
        channels = [self._sessions_channel]
        for client_id in self._subscribed:
            channels += self._channels(client_id)
        self._subscriber.write(encode_command(b"SUBSCRIBE", *channels))

    def _forget_pending(self) -> None:
        """The link is down: no confirmation will come; let waiting handshakes go on."""
        for pending in self._pending.values():
            for future, late in pending:
                late.cancel()
                if not future.done():
                    future.set_result(None)
        self._pending.clear()
        self._ping_sent = None

    async def _keep_alive(self) -> None:
        """PING the subscriber link; drop it when Redis stops answering (frozen, cut off)."""
        while True:
            await asyncio.sleep(REPLY_TIMEOUT)
            if not self._subscriber.connected:
                continue
            if self._ping_sent is not None:
                self._subscriber.abort(f"no answer to PING for {REPLY_TIMEOUT:.0f} s")
                continue
            self._ping_sent = time.monotonic()
            self._subscriber.write(encode_command(b"PING"))

    def publish(self, targets: Iterable[str], sender: str, payload_json: str, on_reply: OnReply | None) -> bool:
        """Publish a frame to every target's channel; False when Redis cannot be reached now.

        ``on_reply`` gets each PUBLISH's reply (or ``LINK_LOST``), one per target.
        """
        if not self._commands.connected:
            return False
        data = messages.encode_live(self._node, sender, payload_json)
        for target in targets:
            self._commands.send(encode_command(b"PUBLISH", self._channel(target), data), on_reply)
        return True

    def _on_message(self, reply: Any) -> None:
        kind = reply[0] if isinstance(reply, list) else None
        if kind == b"message":
            if not reply[2].startswith(self._own_frames):  # our own frame: delivered locally already
                self._inbox.append((reply[1], reply[2], time.perf_counter()))
                self._inbox_ready.set()
        elif kind == b"subscribe":
            pending = self._pending.get(reply[1])
            if pending:
                confirmed, late = pending.popleft()
                late.cancel()
                if not pending:
                    del self._pending[reply[1]]
                if not confirmed.done():
                    confirmed.set_result(None)
        elif kind == b"pong" or reply == b"PONG":  # the reply with and without subscriptions
            self._ping_sent = None
        elif (reason := link_error(reply)) is not None:  # e.g. SUBSCRIBE refused by the ACL
            self._subscriber.abort(reason)

    def _read(self, channel: bytes, data: bytes) -> tuple[str, messages.BusMessage]:
        """The client id a message on ``channel`` is for, and the message; ValueError if it is none of the relay's."""
        if channel == self._sessions_channel:
            return "", messages.decode(data)
        if channel.startswith(self._channel_prefix):
            return channel[len(self._channel_prefix) :].decode(), messages.decode(data)
        groups = self._groups
        group_of = groups.client_id_of(channel) if groups is not None else None
        if groups is None or group_of is None:
            raise ValueError("not a channel of the relay's")
        try:
            return group_of, messages.LayerEvent(groups.deserialize(data))
        except Exception as exc:  # the layer's own decoding (msgpack, decryption) failed
            raise ValueError(f"not a layer event: {exc!r}") from None

    async def _dispatch(self) -> None:
        """Hand on queued messages from other processes, one task for all of them."""
        while True:
            await self._inbox_ready.wait()
            self._inbox_ready.clear()
            while self._inbox:
                channel, data, arrived = self._inbox.popleft()
                try:
                    target, message = self._read(channel, data)
                except (ValueError, UnicodeDecodeError):  # not a relay message: someone else's publish
                    logger.warning("event=bus_frame_ignored channel=%r bytes=%d", channel[:100], len(data))
                    continue
                try:
                    await self._receive(target, message)
                except Exception:  # a bug must not stop delivery for every other client
                    logger.exception("bus: delivering a frame from another process failed")
                DELIVERY_LATENCY.observe(time.perf_counter() - arrived)

    @property
    def starting(self) -> bool:
        """Whether the subscriber link is still being made for the first time (neither up nor failed yet)."""
        return self._subscriber.starting

    def problem(self) -> str | None:
        """Why frames cannot travel between processes now, or None."""
        if not self._commands.connected:
            return f"commands: {self._commands.link.problem or 'not connected'}"
        if not self._subscriber.connected:
            return f"subscriptions: {self._subscriber.problem or 'not connected'}"
        if any(task.done() for task in self._tasks):
            return "a background task stopped"
        return None

    def close(self) -> None:
        """Close the subscription and stop the dispatcher."""
        for task in self._tasks:
            task.cancel()
        self._subscriber.close()
