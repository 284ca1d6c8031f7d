"""A small asyncio Redis client for the relay's per-message path.

``RedisLink`` is one connection that reconnects by itself; ``CommandPipe`` sends
commands over a link, all those of one event-loop turn in one write, and matches the
replies in order so that each reaches whoever issued the command. Replies are parsed by
hiredis; there is no task or future per command. Code off the hot path (presence reads,
pushes, health checks, the admin) uses redis-py instead.

A link speaks TLS for ``rediss://`` (the system's CAs unless ``ssl_ca_certs`` names
others), authenticates (``AUTH`` with the URL's user and password), selects the database,
and checks with ``INFO replication`` that it talks to a master, whose replication id it
keeps (``replication_id``: a failover changes it, and with it the epoch of every stream
written after, so that no client mistakes the promoted replica's offsets for the old
ones). It asks sentinels where the master is, on every (re)connection, where the server
is Sentinel-managed. A refused ``AUTH`` or
``SELECT``, a Redis still loading, a replica, or ``NOPERM``/``READONLY`` answers to
commands make the link *down with that reason* (``problem``), logged once per reason,
retried with a growing delay until it is fixed.
"""

import asyncio
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis

from relay.redis.servers import RedisServer, ssl_context

logger = logging.getLogger(__name__)

RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
CONNECT_TIMEOUT = 5.0
#: A Redis that has not answered a command for this long is treated as gone (a frozen
#: process or a cut network keeps the TCP connection up and answers nothing).
REPLY_TIMEOUT = 5.0
#: A connection lost sooner than this after it was made counts as a failure to connect:
#: the next attempt waits (a Redis at maxclients accepts and closes at once, a user without
#: a permission is refused its first command), and it is not "connected again" in the log.
STABLE_AFTER = 1.0
#: Errors that say this connection cannot do the relay's work until something changes.
LINK_ERRORS = (b"NOPERM", b"READONLY", b"LOADING", b"MASTERDOWN", b"NOAUTH", b"WRONGPASS")


NOT_CONNECTED_YET = "not connected yet"


class LinkRefused(Exception):
    """The server answered, but this link cannot use it (credentials, permissions, role)."""


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
        commands.append(encode_command(b"AUTH", *(str(c).encode() for c in credentials)))
    if params.get("db"):
        commands.append(encode_command(b"SELECT", str(params["db"]).encode()))
    return commands


def link_error(reply: Any) -> str | None:
    """The reason a reply says the link cannot work (``NOPERM …``, ``READONLY …``), or None."""
    if isinstance(reply, hiredis.ReplyError):
        message = str(reply)
        if message.encode().startswith(LINK_ERRORS):
            return message
    return None


async def ask_sentinels(server: RedisServer, turn: int = 0) -> tuple[str, int]:
    """Where ``server``'s master is, by the first sentinel that knows; raises OSError when none does.

    ``turn`` rotates the order (sentinel ``turn`` first): after a failed attempt the link
    asks another first, so one sentinel with a stale view cannot keep naming a replica.
    """
    assert server.master_name is not None  # a Sentinel-managed server
    credentials = dict(server.sentinel_options)
    problems = []
    first = turn % len(server.sentinels)
    for host, port in server.sentinels[first:] + server.sentinels[:first]:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT / 2):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    request = setup_commands(credentials)
                    request.append(encode_command(b"SENTINEL", b"get-master-addr-by-name", server.master_name.encode()))
                    writer.write(b"".join(request))
                    parser = hiredis.Reader()
                    replies: list[Any] = []
                    while len(replies) < len(request):
                        data = await reader.read(65536)
                        if not data:
                            raise ConnectionError("the sentinel closed the connection")
                        parser.feed(data)
                        while (reply := parser.gets()) is not False:
                            replies.append(reply)
                finally:
                    writer.close()
            answer = replies[-1]
            if isinstance(answer, list) and len(answer) == 2:
                return answer[0].decode(), int(answer[1])
            problems.append(f"{host}:{port} does not know master {server.master_name!r} ({answer!r})")
        except (OSError, TimeoutError, ValueError) as exc:
            problems.append(f"{host}:{port}: {exc or type(exc).__name__}")
    raise ConnectionError("no sentinel named the master: " + "; ".join(problems))


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

    def __init__(self, server: RedisServer, name: str, on_reply: Callable[[Any], None]) -> None:
        self.name = name
        self.server = server
        self._params = server.params()
        self._ssl = ssl_context(self._params) if server.tls else None
        self._on_reply = on_reply
        self._up_callbacks: list[Callable[[], None]] = []
        self._down_callbacks: list[Callable[[], None]] = []
        self._protocol: _RespProtocol | None = None
        self._setup: tuple[int, list[Any], asyncio.Future[list[Any]]] | None = None
        self._lost = asyncio.Event()
        #: Set while connected, for callers that wait for the link.
        self.up = asyncio.Event()
        #: Why the link is not up (or was dropped last), for health and logs; None while up.
        self.problem: str | None = NOT_CONNECTED_YET
        #: The master's replication id (``INFO replication``), learned on each connection.
        self.replication_id = ""
        self._logged_problem: str | None = None
        self._stable: asyncio.TimerHandle | None = None
        #: Failed attempts in a row: the reconnect delay grows with them (and sentinels rotate).
        self._failures = 0
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
        return self._protocol is not None and self._protocol.transport is not None and self.problem is None

    @property
    def starting(self) -> bool:
        """Whether the first connection is still being made: worth waiting a moment for, unlike a failed one."""
        return self.problem == NOT_CONNECTED_YET

    def write(self, data: bytes) -> None:
        """Write encoded commands; the caller checks ``connected`` first."""
        self._protocol.transport.write(data)  # type: ignore[union-attr]

    def abort(self, reason: str) -> None:
        """Drop the connection (it reconnects): for a Redis that stopped answering or refuses the link."""
        if self._protocol is not None and self._protocol.transport is not None:
            self.problem = reason
            self._log_problem(f"{reason}; dropping the connection")
            self._protocol.transport.abort()

    def _log_problem(self, message: str) -> None:
        if message != self._logged_problem:  # once per reason, not once per retry
            self._logged_problem = message
            logger.warning("redis %s: %s (%s)", self.name, message, self.server.display())

    def _handle_reply(self, reply: Any) -> None:
        setup = self._setup
        if setup is not None:  # the replies to AUTH, SELECT and ROLE come first
            expected, replies, done = setup
            replies.append(reply)
            if len(replies) == expected:
                self._setup = None
                if not done.done():
                    done.set_result(replies)
            return
        self._on_reply(reply)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        params = self._params

        def factory() -> _RespProtocol:
            return _RespProtocol(self._handle_reply, self._lost.set)

        if self.server.uses_sentinel:
            host, port = await ask_sentinels(self.server, self._failures)
        else:
            host, port = params.get("host", "localhost"), params.get("port", 6379)
        if "path" in params:
            _, protocol = await loop.create_unix_connection(factory, params["path"])
        else:
            hostname = host if self._ssl is not None else None
            _, protocol = await loop.create_connection(factory, host, port, ssl=self._ssl, server_hostname=hostname)
        assert protocol.transport is not None  # connection_made() ran before the connection was returned
        sock = protocol.transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            enable_keepalive(sock)
        setup = [*setup_commands(params), encode_command(b"INFO", b"replication")]
        done: asyncio.Future[list[Any]] = loop.create_future()
        self._setup = (len(setup), [], done)
        self._protocol = protocol
        protocol.transport.write(b"".join(setup))
        lost: asyncio.Future[Any] = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait([done, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not done.done():
            raise ConnectionError("the connection closed during its setup")
        self.check_setup(done.result())

    def check_setup(self, replies: list[Any]) -> None:
        """Refuse the link (LinkRefused) where AUTH, SELECT or INFO say it cannot work; note the replication id."""
        *answers, info = replies
        for answer in answers:
            if isinstance(answer, hiredis.ReplyError):
                raise LinkRefused(f"refused: {answer}")
        if isinstance(info, hiredis.ReplyError):
            raise LinkRefused(f"INFO refused: {info} (the relay's user needs +info)")
        fields = dict(line.split(":", 1) for line in info.decode().splitlines() if ":" in line)
        role = fields.get("role", "unknown")
        if role != "master":
            raise LinkRefused(f"the server is a {role}, not a master: the relay writes, so it needs the master")
        self.replication_id = fields.get("master_replid", "")

    def _drop_protocol(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()

    async def _run(self) -> None:
        while True:
            self._lost.clear()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await self._connect()
            except (TimeoutError, OSError, ssl.SSLError, LinkRefused) as exc:
                self._drop_protocol()
                self.problem = f"cannot connect: {describe(exc)}"
                self._log_problem(f"{self.problem}; retrying")
                await asyncio.sleep(RECONNECT_DELAYS[min(self._failures, len(RECONNECT_DELAYS) - 1)])
                self._failures += 1
                continue
            self.problem = None
            connected_at = time.monotonic()
            self._stable = asyncio.get_running_loop().call_later(STABLE_AFTER, self._stayed_up)
            self.up.set()
            self._call(self._up_callbacks)
            await self._lost.wait()
            self._stable.cancel()
            self.up.clear()
            self._protocol = None
            if self.problem is None:
                self.problem = "connection lost"
                self._log_problem("connection lost; reconnecting")
            self._call(self._down_callbacks)
            if time.monotonic() - connected_at < STABLE_AFTER:  # dropped at once: wait before the next try
                await asyncio.sleep(RECONNECT_DELAYS[min(self._failures, len(RECONNECT_DELAYS) - 1)])
                self._failures += 1
            else:
                self._failures = 0

    def _stayed_up(self) -> None:
        """The link lasted: say it is back (once), and let the next problem be logged again."""
        if self._logged_problem is not None:
            logger.warning("redis %s: connected again (%s)", self.name, self.server.display())
            self._logged_problem = None

    def _call(self, callbacks: list[Callable[[], None]]) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a bug in one callback must not stop the link for good
                logger.exception("redis %s: a connection callback failed", self.name)

    def close(self) -> None:
        """Stop reconnecting and close the connection."""
        self._task.cancel()
        if self._stable is not None:
            self._stable.cancel()
        self.up.clear()
        self._drop_protocol()


def describe(exc: BaseException) -> str:
    """An exception as a short reason: its message, or its type when it has none."""
    return str(exc) or type(exc).__name__


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

    def __init__(self, server: RedisServer) -> None:
        self.link = RedisLink(server, "commands", self._on_reply)
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
            reason = link_error(reply)
            if reason is not None:  # no command will work on this link: drop it, say why
                self.link.abort(reason)
            else:
                logger.warning("redis: command refused: %s", reply)
        if on_reply is not None:
            self._answer(on_reply, reply)

    def _answer(self, on_reply: OnReply, reply: Any) -> None:
        try:
            on_reply(reply)
        except Exception:  # one caller's bug must not stop the replies to every other
            logger.exception("redis %s: a reply callback failed", self.link.name)

    def _fail_in_flight(self) -> None:
        in_flight = self._in_flight
        self._in_flight = deque()
        self._outgoing.clear()
        self._waiting_since = None
        for on_reply in in_flight:
            if on_reply is not None:
                self._answer(on_reply, LINK_LOST)

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
