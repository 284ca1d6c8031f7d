"""The bus: carries client frames between relay processes over Redis pub/sub.

Each process subscribes to one Redis channel per client id it holds connections for
and publishes every client frame to the channel of each target. A process skips the
copies of its own frames (it delivered those to its local connections already).

This is a small RESP client of its own rather than redis-py, because it sits on the
per-message path: one write per event-loop turn for all frames published in that turn,
replies and messages parsed by hiredis, and no task or future per message. The
README's "Channel layer and bus" section has the measurements behind that choice.
"""

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

logger = logging.getLogger(__name__)

#: Called with (target, sender, payload_json) for each frame from another process.
Deliver = Callable[[str, str, str], Awaitable[None]]
#: Called with the (sender, ref) of each frame that could not be published.
Failed = Callable[[Any, Any], None]

RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
SUBSCRIBE_WAIT = 2.0


def encode_command(*args: bytes) -> bytes:
    """Encode one Redis command in RESP."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def connection_params(url: str) -> dict[str, Any]:
    """Host, port, password and db of a ``redis://`` or ``unix://`` URL."""
    parts = urlsplit(url)
    db = 0
    if parts.scheme == "unix":
        params: dict[str, Any] = {"path": parts.path}
    else:
        params = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 6379}
        db = int(parts.path.strip("/") or 0)
    params["password"] = unquote(parts.password) if parts.password else None
    params["username"] = unquote(parts.username) if parts.username else None
    params["db"] = db
    return params


class _RespProtocol(asyncio.Protocol):
    """One Redis connection: writes commands, hands each reply to ``on_reply``."""

    def __init__(self, on_reply: Callable[[Any], None], on_lost: Callable[[], None]) -> None:
        self._reader = hiredis.Reader()
        self._on_reply = on_reply
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._on_reply(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._on_lost()


class _Link:
    """A Redis connection that reconnects by itself and reports when it is up."""

    def __init__(self, url: str, name: str, on_reply: Callable[[Any], None], on_up, on_down) -> None:
        self._params = connection_params(url)
        self._name = name
        self._on_reply = on_reply
        self._on_up = on_up
        self._on_down = on_down
        self._protocol: _RespProtocol | None = None
        self._setup_replies = 0
        self._lost = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.transport is not None

    def write(self, data: bytes) -> None:
        """Write raw RESP; the caller checks ``connected`` first."""
        self._protocol.transport.write(data)  # type: ignore[union-attr]

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        factory = lambda: _RespProtocol(self._handle_reply, self._lost.set)  # noqa: E731
        params = self._params
        if "path" in params:
            _, protocol = await loop.create_unix_connection(factory, params["path"])
        else:
            _, protocol = await loop.create_connection(factory, params["host"], params["port"])
        setup = []
        if params["password"]:
            auth = [params["username"], params["password"]] if params["username"] else [params["password"]]
            setup.append(encode_command(b"AUTH", *(a.encode() for a in auth)))
        if params["db"]:
            setup.append(encode_command(b"SELECT", str(params["db"]).encode()))
        self._protocol = protocol
        self._setup_replies = len(setup)
        if setup:
            protocol.transport.write(b"".join(setup))

    def _handle_reply(self, reply: Any) -> None:
        # The replies to AUTH and SELECT come first; a refusal there is a setup error.
        if self._setup_replies:
            self._setup_replies -= 1
            if isinstance(reply, hiredis.ReplyError):
                logger.error("bus %s: Redis refused the connection setup: %s", self._name, reply)
            return
        self._on_reply(reply)

    async def _run(self) -> None:
        attempt = 0
        while True:
            self._lost.clear()
            try:
                await asyncio.wait_for(self._connect(), timeout=5)
            except (OSError, asyncio.TimeoutError) as exc:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                if attempt == 0:
                    logger.warning("bus %s: cannot reach Redis (%s); retrying", self._name, exc)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if attempt:
                logger.info("bus %s: Redis is back", self._name)
            attempt = 0
            self._on_up()
            await self._lost.wait()
            self._protocol = None
            logger.warning("bus %s: lost the Redis connection; reconnecting", self._name)
            self._on_down()

    def close(self) -> None:
        """Stop reconnecting and close the connection."""
        self._task.cancel()
        if self.connected:
            self._protocol.transport.close()  # type: ignore[union-attr]


class RedisBus:
    """Publishes client frames to Redis and delivers the frames of other processes."""

    def __init__(self, url: str, prefix: str, deliver: Deliver, failed: Failed) -> None:
        self._channel_prefix = f"{prefix}:".encode()
        self._node = uuid.uuid4().hex.encode() + b"\n"
        self._deliver = deliver
        self._failed = failed
        self._subscribed: set[str] = set()
        self._confirmations: dict[bytes, asyncio.Future] = {}
        self._outgoing: list[bytes] = []
        self._in_flight: deque[tuple[Any, Any]] = deque()
        self._flush_scheduled = False
        self._inbox: deque[list] = deque()
        self._inbox_ready = asyncio.Event()
        self._pub = _Link(url, "publish", self._on_publish_reply, lambda: None, self._fail_in_flight)
        self._sub = _Link(url, "subscribe", self._on_message, self._resubscribe, lambda: None)
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    def _channel(self, client_id: str) -> bytes:
        return self._channel_prefix + client_id.encode()

    # Subscriptions: one channel per client id with connections in this process.

    async def subscribe(self, client_id: str) -> None:
        """Receive frames for ``client_id``; returns once Redis confirmed (or after a short wait)."""
        self._subscribed.add(client_id)
        if not self._sub.connected:
            return  # resubscribed when the link comes back
        channel = self._channel(client_id)
        confirmed = self._confirmations.setdefault(channel, asyncio.get_running_loop().create_future())
        self._sub.write(encode_command(b"SUBSCRIBE", channel))
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_WAIT)
        except asyncio.TimeoutError:
            logger.warning("bus: Redis did not confirm the subscription to %s in time", client_id)

    def unsubscribe(self, client_id: str) -> None:
        """Stop receiving frames for ``client_id``."""
        self._subscribed.discard(client_id)
        if self._sub.connected:
            self._sub.write(encode_command(b"UNSUBSCRIBE", self._channel(client_id)))

    def _resubscribe(self) -> None:
        if self._subscribed:
            channels = [self._channel(client_id) for client_id in self._subscribed]
            self._sub.write(encode_command(b"SUBSCRIBE", *channels))

    # Publishing: one write per event-loop turn, replies matched in order.

    def publish(self, targets: Iterable[str], sender: str, payload_json: str, sender_ref: tuple[Any, Any]) -> bool:
        """Queue a frame for every target; False when Redis cannot be reached now."""
        if not self._pub.connected:
            return False
        data = self._node + sender.encode() + b"\n" + payload_json.encode()
        for target in targets:
            self._outgoing.append(encode_command(b"PUBLISH", self._channel(target), data))
            self._in_flight.append(sender_ref)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return True

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pub.connected:
            self._fail_in_flight()
        elif self._outgoing:
            self._pub.write(b"".join(self._outgoing))
            self._outgoing.clear()

    def _on_publish_reply(self, reply: Any) -> None:
        sender_ref = self._in_flight.popleft()
        if isinstance(reply, hiredis.ReplyError):
            logger.warning("bus: Redis refused a publish: %s", reply)
            self._failed(*sender_ref)

    def _fail_in_flight(self) -> None:
        """Tell each sender once that frames Redis may not have received were not relayed."""
        # One frame to many targets queues the same sender_ref object once per target.
        previous = None
        while self._in_flight:
            sender_ref = self._in_flight.popleft()
            if sender_ref is not previous:
                self._failed(*sender_ref)
            previous = sender_ref
        self._outgoing.clear()

    # Receiving: messages are queued by the protocol and delivered by one task.

    def _on_message(self, reply: Any) -> None:
        kind = reply[0] if isinstance(reply, list) else None
        if kind == b"message":
            if not reply[2].startswith(self._node):  # our own frame: delivered locally already
                self._inbox.append(reply)
                self._inbox_ready.set()
        elif kind == b"subscribe":
            confirmed = self._confirmations.pop(reply[1], None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)

    async def _dispatch(self) -> None:
        prefix_length = len(self._channel_prefix)
        while True:
            await self._inbox_ready.wait()
            self._inbox_ready.clear()
            while self._inbox:
                _, channel, data = self._inbox.popleft()
                _, sender, payload_json = data.split(b"\n", 2)
                try:
                    await self._deliver(channel[prefix_length:].decode(), sender.decode(), payload_json.decode())
                except Exception:
                    logger.exception("bus: delivering a frame from another process failed")

    def close(self) -> None:
        """Close both connections and stop the dispatcher."""
        self._dispatcher.cancel()
        self._pub.close()
        self._sub.close()
