"""A small asyncio Redis client for the relay's per-message path.

``RedisLink`` is one connection that reconnects by itself; ``CommandPipe`` sends
fire-and-forget commands over a link, all those of one event-loop turn in one write,
and matches the replies in order so a failure reaches whoever issued the command.
Replies are parsed by hiredis; there is no task or future per command. Code off the
hot path (presence reads, health checks, the admin) uses redis-py instead.
"""

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from redis.connection import parse_url

logger = logging.getLogger(__name__)

RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
CONNECT_TIMEOUT = 5.0
#: A Redis that has not answered a command for this long is treated as gone (a frozen
#: process or a cut network keeps the TCP connection up and answers nothing).
REPLY_TIMEOUT = 5.0


def encode_command(*args: bytes) -> bytes:
    """Encode one Redis command in RESP."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def enable_keepalive(sock: socket.socket) -> None:
    """TCP keepalive after 10 s idle, so a dead peer on a cut network is noticed in ~25 s."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):  # Linux; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def setup_commands(params: dict[str, Any]) -> list[bytes]:
    """AUTH and SELECT for a fresh connection, as the URL asks."""
    commands = []
    if params.get("password"):
        credentials = [params["username"], params["password"]] if params.get("username") else [params["password"]]
        commands.append(encode_command(b"AUTH", *(c.encode() for c in credentials)))
    if params.get("db"):
        commands.append(encode_command(b"SELECT", str(params["db"]).encode()))
    return commands


class _RespProtocol(asyncio.Protocol):
    """Feeds received bytes to hiredis and hands each reply on."""

    def __init__(self, on_reply: Callable[[Any], None], on_lost: Callable[[], None]) -> None:
        self._reader = hiredis.Reader()
        self._on_reply = on_reply
        self._on_lost = on_lost
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._on_reply(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._on_lost()


class RedisLink:
    """A Redis connection that reconnects by itself, calling ``on_up``/``on_down`` as it goes."""

    def __init__(self, url: str, name: str, on_reply: Callable[[Any], None]) -> None:
        self.name = name
        if url.startswith("rediss://"):
            raise ValueError("The relay's Redis client does not speak TLS: use redis:// or unix:// (check relay.E011).")
        # redis-py's reading of the URL, as channels-redis and presence use
        self._params: dict[str, Any] = parse_url(url)
        self._on_reply = on_reply
        self._up_callbacks: list[Callable[[], None]] = []
        self._down_callbacks: list[Callable[[], None]] = []
        self._protocol: _RespProtocol | None = None
        self._setup_replies = 0
        self._lost = asyncio.Event()
        #: Set while connected, for callers that wait for the link.
        self.up = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def on_up(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the connection is (re)established."""
        self._up_callbacks.append(callback)

    def on_down(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the connection is lost."""
        self._down_callbacks.append(callback)

    @property
    def connected(self) -> bool:
        """Whether commands can be written now."""
        return self._protocol is not None and self._protocol.transport is not None

    def write(self, data: bytes) -> None:
        """Write encoded commands; the caller checks ``connected`` first."""
        self._protocol.transport.write(data)  # type: ignore[union-attr]

    def abort(self, reason: str) -> None:
        """Drop the connection (it reconnects): for a Redis that stopped answering."""
        if self.connected:
            logger.warning("redis %s: %s; dropping the connection", self.name, reason)
            self._protocol.transport.abort()  # type: ignore[union-attr]

    def _handle_reply(self, reply: Any) -> None:
        # The replies to AUTH and SELECT come first; a refusal there is a setup error.
        if self._setup_replies:
            self._setup_replies -= 1
            if isinstance(reply, hiredis.ReplyError):
                logger.error("redis %s: connection setup refused: %s", self.name, reply)
            return
        self._on_reply(reply)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        params = self._params

        def factory() -> _RespProtocol:
            return _RespProtocol(self._handle_reply, self._lost.set)

        if "path" in params:
            _, protocol = await loop.create_unix_connection(factory, params["path"])
        else:
            _, protocol = await loop.create_connection(
                factory, params.get("host", "localhost"), params.get("port", 6379)
            )
        assert protocol.transport is not None  # connection_made() ran before the connection was returned
        sock = protocol.transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            enable_keepalive(sock)
        setup = setup_commands(params)
        self._setup_replies = len(setup)
        self._protocol = protocol
        if setup:
            protocol.transport.write(b"".join(setup))

    async def _run(self) -> None:
        failures = 0
        while True:
            self._lost.clear()
            try:
                await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT)
            except (TimeoutError, OSError) as exc:
                if failures == 0:
                    logger.warning("redis %s: cannot connect (%s); retrying", self.name, exc)
                await asyncio.sleep(RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)])
                failures += 1
                continue
            if failures:
                logger.warning("redis %s: connected again", self.name)
            failures = 0
            self.up.set()
            for callback in self._up_callbacks:
                callback()
            await self._lost.wait()
            self.up.clear()
            self._protocol = None
            logger.warning("redis %s: connection lost; reconnecting", self.name)
            for callback in self._down_callbacks:
                callback()

    def close(self) -> None:
        """Stop reconnecting and close the connection."""
        self._task.cancel()
        if self.connected:
            self._protocol.transport.close()  # type: ignore[union-attr]


#: What a command's reply callback gets when its reply will never come (the link went down).
LINK_LOST = hiredis.ReplyError("the connection to Redis was lost before the reply")

#: Called with a command's reply: its value, a ``hiredis.ReplyError``, or ``LINK_LOST``.
OnReply = Callable[[Any], None]


class CommandPipe:
    """Commands written once per event-loop turn, replies matched in order.

    Each command may carry a callback, called with its reply (a value, a
    ``hiredis.ReplyError`` Redis answered, or ``LINK_LOST`` when the link went down
    before the reply): there is no task or future per command. Without a callback,
    nobody needs to hear how the command went.
    """

    def __init__(self, url: str) -> None:
        self.link = RedisLink(url, "commands", self._on_reply)
        self.link.on_down(self._fail_in_flight)
        self._outgoing: list[bytes] = []
        self._in_flight: deque[OnReply | None] = deque()
        #: When the oldest command still waiting for its reply was queued (None: none waits).
        self._waiting_since: float | None = None
        self._flush_scheduled = False
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    @property
    def connected(self) -> bool:
        """Whether commands can be sent now."""
        return self.link.connected

    def send(self, command: bytes, on_reply: OnReply | None = None) -> None:
        """Queue an encoded command; the caller checks ``connected`` first."""
        self._outgoing.append(command)
        self._in_flight.append(on_reply)
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self.link.connected:
            self._fail_in_flight()
        elif self._outgoing:
            self.link.write(b"".join(self._outgoing))
            self._outgoing.clear()

    def _on_reply(self, reply: Any) -> None:
        if not self._in_flight:  # e.g. "-ERR max number of clients reached" before any command
            logger.warning("redis %s: unexpected reply: %r", self.link.name, reply)
            return
        on_reply = self._in_flight.popleft()
        # Replies come in order: the next command waits since about now at the latest.
        self._waiting_since = time.monotonic() if self._in_flight else None
        if isinstance(reply, hiredis.ReplyError):
            logger.warning("redis: command refused: %s", reply)
        if on_reply is not None:
            on_reply(reply)

    def _fail_in_flight(self) -> None:
        in_flight = self._in_flight
        self._in_flight = deque()
        self._outgoing.clear()
        self._waiting_since = None
        for on_reply in in_flight:
            if on_reply is not None:
                on_reply(LINK_LOST)

    async def _watch(self) -> None:
        """Drop a link whose Redis stopped answering, so senders hear ``unavailable``."""
        while True:
            await asyncio.sleep(1)
            waiting = self._waiting_since
            if waiting is not None and time.monotonic() - waiting > REPLY_TIMEOUT:
                self.link.abort(f"no reply for {REPLY_TIMEOUT:.0f} s")

    def close(self) -> None:
        """Write what is queued, then close the link."""
        self._watchdog.cancel()
        self._flush()
        self.link.close()
