"""The RESP client: command encoding, connection setup, CommandPipe and the reconnecting RedisLink."""

import asyncio
import logging
import socket
import tempfile
from collections import deque

import hiredis
import pytest
from redis.connection import parse_url

from relay.redis import resp
from relay.redis.resp import CommandPipe, RedisLink, enable_keepalive, encode_command, setup_commands
from relay.redis.servers import server_of


async def until(predicate, timeout: float = 2.0) -> None:
    """Wait until ``predicate()`` is true; fail the test if it is not within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail("the expected state was not reached in time")
        await asyncio.sleep(0.001)


def messages(caplog, text: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if text in record.getMessage()]


# encode_command


def test_encode_command_writes_an_array_of_bulk_strings():
    assert encode_command(b"SET", b"key", b"value") == b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"


def test_encode_command_counts_bytes_and_keeps_empty_and_binary_arguments():
    assert encode_command(b"GET", b"") == b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n"
    assert encode_command(b"ECHO", "é".encode()) == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"
    raw = b"line\r\nbreak\x00\xff"
    reader = hiredis.Reader()
    reader.feed(encode_command(b"PUBLISH", b"channel", raw))
    assert reader.gets() == [b"PUBLISH", b"channel", raw]  # a CRLF inside an argument is data


# setup_commands


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379", []),
        ("redis://localhost:6379/0", []),  # db 0 is where a connection starts anyway
        ("redis://:secret@localhost", [encode_command(b"AUTH", b"secret")]),
        ("redis://alice:secret@localhost", [encode_command(b"AUTH", b"alice", b"secret")]),
        ("redis://:p%40ss@localhost", [encode_command(b"AUTH", b"p@ss")]),
        ("redis://localhost/2", [encode_command(b"SELECT", b"2")]),
        ("redis://localhost?db=3", [encode_command(b"SELECT", b"3")]),
        ("unix:///run/redis.sock?db=4", [encode_command(b"SELECT", b"4")]),
        (
            "redis://alice:secret@localhost:6380/5",
            [encode_command(b"AUTH", b"alice", b"secret"), encode_command(b"SELECT", b"5")],
        ),
    ],
)
def test_setup_commands_authenticate_and_select_as_the_url_asks(url, expected):
    assert setup_commands(parse_url(url)) == expected


def test_enable_keepalive_turns_tcp_keepalive_on():
    with socket.socket() as sock:
        enable_keepalive(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3


# CommandPipe, over a scripted link


class ScriptedLink:
    """Stands in for RedisLink under CommandPipe: records writes; the test plays Redis's replies."""

    def __init__(self, url, name, on_reply):
        self.name = name
        self.on_reply = on_reply
        self.connected = True
        self.writes: list[bytes] = []
        self.aborts: list[str] = []
        self.closed = False
        self._on_down = []

    def on_down(self, callback):
        self._on_down.append(callback)

    def write(self, data):
        assert self.connected, "written while the link is down"
        self.writes.append(data)

    def go_down(self):
        self.connected = False
        for callback in self._on_down:
            callback()

    def abort(self, reason):
        self.aborts.append(reason)
        self.go_down()

    def close(self):
        self.closed = True


class ManualClock:
    """Stands in for resp's ``asyncio`` and ``time``: ``sleep()`` returns when the test calls
    ``tick()``, which moves ``monotonic()`` on by the delay slept."""

    def __init__(self):
        self.now = 1000.0
        self._sleepers: deque = deque()

    def __getattr__(self, name):  # the rest of asyncio
        return getattr(asyncio, name)

    def monotonic(self):
        return self.now

    async def sleep(self, delay):
        woken = asyncio.get_running_loop().create_future()
        self._sleepers.append((delay, woken))
        await woken

    async def tick(self):
        """Let the sleeping loop wake once, and run until it sleeps again."""
        await until(lambda: self._sleepers)
        delay, woken = self._sleepers.popleft()
        self.now += delay
        woken.set_result(None)
        await until(lambda: self._sleepers)


@pytest.fixture
def clock(monkeypatch) -> ManualClock:
    manual = ManualClock()
    monkeypatch.setattr(resp, "asyncio", manual)
    monkeypatch.setattr(resp, "time", manual)
    return manual


@pytest.fixture
async def pipe(monkeypatch, clock):
    monkeypatch.setattr(resp, "RedisLink", ScriptedLink)
    command_pipe = CommandPipe(server_of("redis://unused"))
    yield command_pipe
    command_pipe.close()


@pytest.fixture
def replies() -> list:
    """(name, reply) for every reply callback called."""
    return []


@pytest.fixture
def on_reply(replies):
    """``on_reply(name)``: a reply callback recording into ``replies``."""

    def make(name):
        return lambda reply: replies.append((name, reply))

    return make


def publish(channel: bytes) -> bytes:
    return encode_command(b"PUBLISH", channel, b"data")


async def test_the_commands_of_one_loop_turn_go_out_in_one_write(pipe):
    pipe.send(publish(b"a"))
    pipe.send(publish(b"b"))
    pipe.send(encode_command(b"HDEL", b"key", b"field"))
    assert pipe.link.writes == []  # nothing is written before the loop turns
    await asyncio.sleep(0)
    assert pipe.link.writes == [publish(b"a") + publish(b"b") + encode_command(b"HDEL", b"key", b"field")]
    pipe.send(publish(b"c"))
    await asyncio.sleep(0)
    assert pipe.link.writes[1:] == [publish(b"c")]  # the next turn: the next write


async def test_replies_reach_the_callbacks_of_their_commands_in_order(pipe, on_reply, replies):
    for name in ("first", "second", "third"):
        pipe.send(publish(name.encode()), on_reply(name))
    await asyncio.sleep(0)
    refused = hiredis.ReplyError("ERR wrong number of arguments for 'publish' command")
    pipe.link.on_reply(1)
    pipe.link.on_reply(refused)
    pipe.link.on_reply(0)
    assert replies == [("first", 1), ("second", refused), ("third", 0)]


async def test_a_refused_command_without_callback_is_logged_and_reported_to_nobody(pipe, on_reply, replies, caplog):
    pipe.send(encode_command(b"HDEL", b"key", b"field"))  # no callback
    pipe.send(publish(b"a"), on_reply("publish"))
    await asyncio.sleep(0)
    pipe.link.on_reply(hiredis.ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert replies == []
    assert len(messages(caplog, "command refused: WRONGTYPE")) == 1
    pipe.link.on_reply(1)  # the second reply is the PUBLISH's
    assert replies == [("publish", 1)]


async def test_a_link_going_down_tells_each_command_in_flight_once(pipe, on_reply, replies):
    for target in (b"a", b"b", b"c"):
        pipe.send(publish(target), on_reply(target.decode()))
    pipe.send(encode_command(b"HDEL", b"key", b"field"))  # no callback
    pipe.send(publish(b"d"), on_reply("d"))
    await asyncio.sleep(0)
    pipe.link.on_reply(1)  # a answered; the rest did not
    pipe.link.go_down()
    assert replies == [("a", 1), ("b", resp.LINK_LOST), ("c", resp.LINK_LOST), ("d", resp.LINK_LOST)]
    assert isinstance(resp.LINK_LOST, hiredis.ReplyError)  # a callback checking for refusals sees it too
    # Back up: the replies match the commands sent from now on; the lost ones hear nothing more.
    pipe.link.connected = True
    pipe.send(publish(b"e"), on_reply("e"))
    await asyncio.sleep(0)
    pipe.link.on_reply(0)
    pipe.link.go_down()
    assert replies[4:] == [("e", 0)]


async def test_a_command_queued_as_the_link_drops_is_failed_not_written(pipe, on_reply, replies):
    pipe.send(publish(b"a"), on_reply("a"))
    pipe.link.connected = False  # the connection is lost; the link has not run its on_down yet
    await asyncio.sleep(0)
    assert pipe.link.writes == []
    assert replies == [("a", resp.LINK_LOST)]


async def test_a_reply_with_no_command_waiting_is_logged_and_ignored(pipe, on_reply, replies, caplog):
    pipe.link.on_reply(hiredis.ReplyError("ERR max number of clients reached"))
    assert len(messages(caplog, "unexpected reply")) == 1
    pipe.send(publish(b"a"), on_reply("a"))
    await asyncio.sleep(0)
    pipe.link.on_reply(1)
    assert replies == [("a", 1)]  # the stray reply did not shift the matching


async def test_close_writes_what_is_queued_then_closes_the_link(pipe):
    pipe.send(publish(b"a"))
    pipe.send(publish(b"b"))
    pipe.close()
    assert pipe.link.writes == [publish(b"a") + publish(b"b")]
    assert pipe.link.closed


async def test_the_watchdog_drops_a_link_that_has_not_answered_within_reply_timeout(
    pipe, clock, on_reply, replies, monkeypatch
):
    monkeypatch.setattr(resp, "REPLY_TIMEOUT", 3.0)
    pipe.send(publish(b"a"), on_reply("a"))
    await asyncio.sleep(0)
    for _ in range(3):  # one watchdog round a second: 3 s without a reply is not over the limit
        await clock.tick()
    assert pipe.link.aborts == []
    await clock.tick()  # 4 s
    assert len(pipe.link.aborts) == 1 and "no reply" in pipe.link.aborts[0]
    assert replies == [("a", resp.LINK_LOST)]


async def test_the_watchdog_counts_from_the_last_reply_while_replies_keep_coming(
    pipe, clock, on_reply, replies, monkeypatch
):
    monkeypatch.setattr(resp, "REPLY_TIMEOUT", 5.0)
    pipe.send(publish(b"a"), on_reply("a"))
    pipe.send(publish(b"b"), on_reply("b"))
    await asyncio.sleep(0)
    for _ in range(4):
        await clock.tick()
    pipe.link.on_reply(1)  # at 4 s the first is answered; the second waits since then
    for _ in range(5):
        await clock.tick()
    assert pipe.link.aborts == []  # 9 s after it was sent, 5 s after the last reply
    await clock.tick()
    assert len(pipe.link.aborts) == 1
    assert replies == [("a", 1), ("b", resp.LINK_LOST)]


async def test_the_watchdog_leaves_a_link_with_nothing_in_flight_alone(pipe, clock, monkeypatch):
    monkeypatch.setattr(resp, "REPLY_TIMEOUT", 3.0)
    pipe.send(publish(b"a"))
    await asyncio.sleep(0)
    pipe.link.on_reply(1)
    for _ in range(10):
        await clock.tick()
    assert pipe.link.aborts == []


# RedisLink, against a fake Redis in this process


def bulk(text: str) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(text), text.encode())


INFO_MASTER = bulk("# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_replid:" + "a" * 40 + "\r\n")


def default_answer(command: list[bytes]) -> bytes | None:
    if command[0].upper() == b"INFO":
        return INFO_MASTER
    if command[0].upper() == b"PING":
        return b"+PONG\r\n"
    if command[0].upper() == b"PUBLISH":
        return b":1\r\n"
    return b"+OK\r\n"


class FakeRedis:
    """A RESP server on 127.0.0.1 (or a unix socket): records each command and answers what
    ``answer(command)`` returns (None: no answer at all)."""

    def __init__(self):
        self.answer = default_answer
        #: Written to each new connection, which is then closed at once (Redis at maxclients).
        self.refuse_with: bytes | None = None
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None

    async def start(self, sock: socket.socket | None = None) -> "FakeRedis":
        if sock is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        else:
            self._server = await asyncio.start_server(self._serve, sock=sock)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        return self

    async def start_unix(self, path: str) -> "FakeRedis":
        self._server = await asyncio.start_unix_server(self._serve, path)
        self.url = f"unix://{path}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._handlers.add(asyncio.current_task())
        self.connections += 1
        if self.refuse_with is not None:
            writer.write(self.refuse_with)
            writer.close()
            return
        self._writers.append(writer)
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    self.commands.append(command)
                    reply = self.answer(command)
                    if reply is not None:
                        writer.write(reply)
        except ConnectionError:
            pass
        finally:
            writer.close()

    def drop_connections(self) -> None:
        """Cut every open connection, as a restarting Redis does."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


@pytest.fixture
async def fake_redis():
    servers: list[FakeRedis] = []

    async def start(sock: socket.socket | None = None, path: str | None = None) -> FakeRedis:
        server = FakeRedis()
        servers.append(server)
        return await (server.start_unix(path) if path else server.start(sock))

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def redis_server(fake_redis) -> FakeRedis:
    return await fake_redis()


@pytest.fixture
async def open_link(redis_server):
    """``open_link(url, on_reply)``: a RedisLink, closed (before the fake Redis stops) at the end."""
    links: list[RedisLink] = []

    def open_(url: str, on_reply=None) -> RedisLink:
        link = RedisLink(server_of(url), "test", on_reply or (lambda reply: None))
        links.append(link)
        return link

    yield open_
    for link in links:
        link.close()
    # A close() that lands as a connection completes can be lost (see the xfail test below):
    # close again until every link has stopped and let go of its connection.
    for _ in range(200):
        await asyncio.sleep(0.005)
        if all(link._task.done() and not link.connected for link in links):
            break
        for link in links:
            link.close()


async def test_a_link_runs_the_setup_then_hands_on_the_replies_of_its_commands(redis_server, open_link):
    replies = []
    link = open_link(f"redis://:pw@127.0.0.1:{redis_server.port}/2", replies.append)
    ups = []
    link.on_up(lambda: ups.append(link.connected))
    await asyncio.wait_for(link.up.wait(), 2)
    assert ups == [True]
    link.write(encode_command(b"PING"))
    await until(lambda: replies)
    assert replies == [b"PONG"]  # the answers to AUTH, SELECT and INFO are not handed on
    assert link.replication_id == "a" * 40  # kept for the streams' epochs
    assert redis_server.commands == [[b"AUTH", b"pw"], [b"SELECT", b"2"], [b"INFO", b"replication"], [b"PING"]]


async def test_an_auth_refusal_makes_the_link_down_with_the_reason_logged_once(
    redis_server, open_link, caplog, monkeypatch
):
    monkeypatch.setattr(resp, "RECONNECT_DELAYS", (0.01,))
    password = {"value": "wrong"}

    def answer(command):
        if command[0] == b"AUTH" and command[-1] != password["value"].encode():
            return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        return default_answer(command)

    redis_server.answer = answer
    link = open_link(f"redis://alice:right@127.0.0.1:{redis_server.port}")
    await until(lambda: redis_server.connections >= 3)  # it keeps trying, with a delay
    assert not link.connected and not link.up.is_set()
    assert link.problem == "cannot connect: refused: WRONGPASS invalid username-password pair or user is disabled."
    refused = messages(caplog, "WRONGPASS")
    assert len(refused) == 1 and refused[0].levelno == logging.WARNING  # once, not once per attempt
    assert redis_server.commands[0] == [b"AUTH", b"alice", b"right"]
    password["value"] = "right"  # the ACL is fixed: the link comes up by itself
    await asyncio.wait_for(link.up.wait(), 2)
    assert link.problem is None
    await until(lambda: messages(caplog, "connected again"))  # once it has stayed up a moment
    assert len(messages(caplog, "connected again")) == 1


@pytest.mark.parametrize(
    ("role", "problem"),
    [
        (bulk("# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n"), "is a slave, not a master"),
        (b"-LOADING Redis is loading the dataset in memory\r\n", "INFO refused: LOADING"),
        (b"-NOPERM this user has no permissions to run the 'info' command\r\n", "needs +info"),
    ],
)
async def test_a_replica_or_a_loading_redis_is_not_used(redis_server, open_link, monkeypatch, role, problem):
    monkeypatch.setattr(resp, "RECONNECT_DELAYS", (0.01,))
    redis_server.answer = lambda command: role if command[0] == b"INFO" else default_answer(command)
    link = open_link(redis_server.url)
    await until(lambda: link.problem and problem in link.problem)
    assert not link.connected


async def test_a_command_answered_readonly_or_noperm_drops_the_link_with_the_reason(redis_server, caplog):
    redis_server.answer = lambda c: (
        b"-READONLY You can't write against a read only replica.\r\n" if c[0] == b"HSET" else default_answer(c)
    )
    command_pipe = CommandPipe(server_of(redis_server.url))
    try:
        await asyncio.wait_for(command_pipe.link.up.wait(), 2)
        replies = []
        command_pipe.send(encode_command(b"HSET", b"k", b"f", b"v"), replies.append)
        await until(lambda: replies)
        assert str(replies[0]).startswith("READONLY")
        await until(lambda: redis_server.connections == 2)  # dropped, and made again (sentinels are asked again)
        assert (
            len(messages(caplog, "READONLY You can't write against a read only replica.; dropping the connection")) == 1
        )
    finally:
        command_pipe.close()


async def test_a_permission_refused_after_each_connect_is_logged_once_not_once_per_cycle(
    redis_server, caplog, monkeypatch
):
    """A user without +@scripting: every connection is set up, then its first script refused, again and again."""
    monkeypatch.setattr(resp, "RECONNECT_DELAYS", (0.01,))
    monkeypatch.setattr(resp, "STABLE_AFTER", 0.3)
    redis_server.answer = lambda c: (
        b"-NOPERM User noscript has no permissions to run the 'script|load' command\r\n"
        if c[0] == b"SCRIPT"
        else default_answer(c)
    )
    command_pipe = CommandPipe(server_of(redis_server.url))
    command_pipe.link.on_up(lambda: command_pipe.send(encode_command(b"SCRIPT", b"LOAD", b"return 1"), lambda r: None))
    try:
        await until(lambda: redis_server.connections >= 4, timeout=5)
        assert len(messages(caplog, "NOPERM")) == 1
        assert messages(caplog, "connected again") == []
        await until(lambda: "NOPERM" in (command_pipe.link.problem or ""))
    finally:
        command_pipe.close()


async def test_a_lost_connection_is_made_again_and_the_callbacks_run(redis_server, open_link, caplog):
    replies = []
    link = open_link(f"redis://:pw@127.0.0.1:{redis_server.port}", replies.append)
    events = []
    link.on_up(lambda: events.append(("up", link.connected, link.up.is_set())))
    link.on_down(lambda: events.append(("down", link.connected, link.up.is_set())))
    await asyncio.wait_for(link.up.wait(), 2)
    redis_server.drop_connections()
    await until(lambda: len(events) == 3)
    assert events == [("up", True, True), ("down", False, False), ("up", True, True)]
    assert redis_server.connections == 2
    assert redis_server.commands == [
        [b"AUTH", b"pw"],
        [b"INFO", b"replication"],
        [b"AUTH", b"pw"],
        [b"INFO", b"replication"],
    ]  # on each connection
    assert len(messages(caplog, "connection lost; reconnecting")) == 1
    link.write(encode_command(b"PING"))
    await until(lambda: replies)
    assert replies == [b"PONG"]


async def test_a_link_keeps_trying_until_redis_listens(fake_redis, open_link, monkeypatch, caplog):
    monkeypatch.setattr(resp, "RECONNECT_DELAYS", (0.005,))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused and the port stays ours
    link = open_link(f"redis://127.0.0.1:{sock.getsockname()[1]}")
    ups = []
    link.on_up(lambda: ups.append(True))
    await asyncio.sleep(0.05)  # several attempts fail meanwhile
    assert not link.connected and ups == []
    assert len(messages(caplog, "cannot connect")) == 1  # logged once, not once per attempt
    server = await fake_redis(sock)  # Redis starts listening on that port
    await asyncio.wait_for(link.up.wait(), 2)
    assert ups == [True] and server.connections == 1
    await until(lambda: messages(caplog, "connected again"))
    assert len(messages(caplog, "connected again")) == 1


async def test_abort_drops_the_connection_and_the_link_reconnects(redis_server, open_link, caplog):
    link = open_link(redis_server.url)
    downs = []
    link.on_down(lambda: downs.append(True))
    await asyncio.wait_for(link.up.wait(), 2)
    link.abort("no reply for a while")
    await until(lambda: downs and link.connected)
    assert redis_server.connections == 2
    assert len(messages(caplog, "no reply for a while; dropping the connection")) == 1


async def test_close_stops_the_link_for_good(redis_server, open_link):
    link = open_link(redis_server.url)
    await asyncio.wait_for(link.up.wait(), 2)
    link.close()
    await asyncio.sleep(0.05)
    assert not link.connected
    assert redis_server.connections == 1  # not reconnected


@pytest.fixture
def socket_dir():
    with tempfile.TemporaryDirectory() as directory:  # short: a unix socket path has ~100 bytes
        yield directory


async def test_a_link_over_a_unix_socket(fake_redis, open_link, socket_dir):
    server = await fake_redis(path=f"{socket_dir}/r.sock")
    replies = []
    link = open_link(f"{server.url}?db=4", replies.append)
    await asyncio.wait_for(link.up.wait(), 2)
    link.write(encode_command(b"PING"))
    await until(lambda: replies)
    assert replies == [b"PONG"]
    assert server.commands == [[b"SELECT", b"4"], [b"INFO", b"replication"], [b"PING"]]


async def test_a_tls_link_to_a_plain_server_fails_with_the_reason(redis_server, open_link, monkeypatch):
    monkeypatch.setattr(resp, "RECONNECT_DELAYS", (0.01,))
    link = open_link(f"rediss://127.0.0.1:{redis_server.port}?ssl_cert_reqs=none")
    await until(lambda: link.problem and link.problem.startswith("cannot connect: "))
    assert not link.connected and redis_server.commands == []  # nothing was sent in the clear


async def test_a_command_pipe_over_a_link_hands_on_replies_and_a_lost_connection(redis_server):
    def answer(command):
        if command[0] == b"PUBLISH" and command[1] == b"denied":
            return b"-NOPERM this user has no permissions to access the 'denied' channel\r\n"
        if command[0] == b"PUBLISH" and command[1] == b"frozen":
            return None  # Redis stops answering
        return default_answer(command)

    redis_server.answer = answer
    replies = []
    command_pipe = CommandPipe(server_of(redis_server.url))
    try:
        await asyncio.wait_for(command_pipe.link.up.wait(), 2)
        for name in (b"ok", b"denied", b"ok"):
            command_pipe.send(publish(name), lambda reply, name=name: replies.append((name, reply)))
        await until(lambda: len(replies) == 3)
        assert [(name, str(reply) if isinstance(reply, hiredis.ReplyError) else reply) for name, reply in replies] == [
            (b"ok", 1),
            (b"denied", "NOPERM this user has no permissions to access the 'denied' channel"),
            (b"ok", 1),
        ]
        for _ in range(2):
            command_pipe.send(publish(b"frozen"), lambda reply: replies.append((b"frozen", reply)))
        await until(lambda: len(redis_server.commands) == 5)
        redis_server.drop_connections()
        await until(lambda: len(replies) == 5)
        assert replies[3:] == [(b"frozen", resp.LINK_LOST)] * 2
    finally:
        command_pipe.close()
        await asyncio.sleep(0.01)


async def test_a_redis_that_drops_every_connection_at_once_is_not_reconnected_to_in_a_tight_loop(
    redis_server, open_link
):
    redis_server.refuse_with = b"-ERR max number of clients reached\r\n"
    link = open_link(redis_server.url)
    ups = []
    link.on_up(lambda: ups.append(True))
    await asyncio.sleep(0.3)
    # Paced by RECONNECT_DELAYS (0.05, 0.1, 0.25, ...): a handful of connections, not hundreds.
    assert redis_server.connections <= 10 and len(ups) <= 10, f"{redis_server.connections} connections in 0.3 s"


async def test_a_link_closed_as_its_connection_completes_does_not_reconnect(redis_server, open_link, monkeypatch):
    link = open_link(redis_server.url)
    loop = asyncio.get_running_loop()
    closes = []

    def keepalive_then_close(sock):
        enable_keepalive(sock)
        if not closes:  # the first connection only
            closes.append(loop.call_soon(link.close))  # runs once _connect() has returned

    monkeypatch.setattr(resp, "enable_keepalive", keepalive_then_close)
    await until(lambda: closes)
    await asyncio.sleep(0.05)
    assert redis_server.connections == 1 and not link.connected


async def test_up_is_cleared_when_the_link_is_closed(redis_server, open_link):
    link = open_link(redis_server.url)
    await asyncio.wait_for(link.up.wait(), 2)
    link.close()
    await asyncio.sleep(0.02)
    assert not link.connected
    assert not link.up.is_set()


async def test_a_reply_callback_that_raises_does_not_stop_the_pipe(redis_server):
    # The setup is answered, the commands are not: they stay in flight.
    redis_server.answer = lambda command: INFO_MASTER if command[0] == b"INFO" else None
    replies = []

    def broken(reply):
        raise RuntimeError("a bug in a callback")

    command_pipe = CommandPipe(server_of(redis_server.url))
    try:
        await asyncio.wait_for(command_pipe.link.up.wait(), 2)
        command_pipe.send(publish(b"a"), broken)
        command_pipe.send(publish(b"b"), replies.append)
        await until(lambda: len(redis_server.commands) == 3)
        redis_server.drop_connections()
        await asyncio.sleep(0.1)
        assert replies == [resp.LINK_LOST]  # the other command still hears
        assert command_pipe.connected  # and the link is back
    finally:
        command_pipe.close()
        await asyncio.sleep(0.01)


async def test_after_a_failed_attempt_another_sentinel_is_asked_first(fake_redis):
    """One sentinel with a stale view (it names a replica) must not be the only one ever asked."""
    stale, right = await fake_redis(), await fake_redis()

    def names(port: int):
        def answer(command):
            if command[:2] == [b"SENTINEL", b"get-master-addr-by-name"]:
                return b"*2\r\n$9\r\n127.0.0.1\r\n" + bulk(str(port))
            return default_answer(command)

        return answer

    stale.answer, right.answer = names(1111), names(2222)
    server = server_of(f"redis+sentinel://127.0.0.1:{stale.port},127.0.0.1:{right.port}/mymaster")
    assert await resp.ask_sentinels(server) == ("127.0.0.1", 1111)
    assert await resp.ask_sentinels(server, turn=1) == ("127.0.0.1", 2222)
    assert await resp.ask_sentinels(server, turn=2) == ("127.0.0.1", 1111)
