"""Fixtures for end-to-end tests: real server processes, WebSocket clients, ``relay_send``.

The servers run the deployable site (``relayproject.settings``, not ``tests.settings``)
the way ``make run`` does, on a free port, with their output in a log file per server.
Every test that starts servers runs once under daphne and once under uvicorn (the
``asgi_server`` parameter); ``@pytest.mark.servers("daphne")`` keeps a test to one.
Tests that use Redis share the one at ``REDIS_URL``, so every client id is unique to its
test (``uid``/``numeric_id``): leftovers or a parallel run cannot interfere.
"""

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect as sync_ws_connect

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: pytest runs as .venv/bin/python -m pytest
DAPHNE = BIN / "daphne" if (BIN / "daphne").exists() else REPO / ".venv" / "bin" / "daphne"
UVICORN = DAPHNE.with_name("uvicorn")
#: The servers the relay supports, as the README's "Deploy" runs them.
SERVERS = ("daphne", "uvicorn")
APPLICATION = "relayproject.asgi:application"
TEST_SECRET = "e2e-tests-only-secret-key-long-enough-for-hs256-signing"
SUBPROTOCOL_V1 = "relay.v1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
RECV_TIMEOUT = 5.0
#: The prefix of the relay's Redis keys in the servers, as relayproject.settings reads REDIS_PREFIX.
REDIS_KEY_PREFIX = os.environ.get("REDIS_PREFIX") or "relay"

# Environment that would change what the site does; each server gets exactly what it needs.
_SITE_ENV = ("DJANGO_SETTINGS_MODULE", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "REDIS_URL", "DATABASE_URL")


# --- servers ---------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that starts servers under every server, or those ``@pytest.mark.servers(...)`` names."""
    if "asgi_server" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("servers")
        metafunc.parametrize("asgi_server", marker.args if marker else SERVERS, scope="module")


def server_command(kind: str, port: int, max_frame_bytes: int | None, proxy_headers: bool) -> list[str]:
    """The command line of a ``kind`` server on ``port``, as the README's "Deploy" runs it.

    ``max_frame_bytes``: the server's frame size limit (None: the server's default);
    ``proxy_headers``: the server believes X-Forwarded-For (daphne: from anyone; uvicorn:
    ``--forwarded-allow-ips '*'``), which the relay must see through.
    """
    if kind == "daphne":
        command = [str(DAPHNE), "-b", "127.0.0.1", "-p", str(port), "--websocket_timeout", "-1"]
        if max_frame_bytes is not None:
            limit = str(max_frame_bytes)
            command += ["--websocket-max-message-size", limit, "--websocket-max-frame-size", limit]
        if proxy_headers:
            command.append("--proxy-headers")
    else:
        command = [str(UVICORN), "--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS]
        if max_frame_bytes is not None:
            command += ["--ws-max-size", str(max_frame_bytes)]
        command += ["--proxy-headers", "--forwarded-allow-ips", "*"] if proxy_headers else ["--no-proxy-headers"]
    return [*command, APPLICATION]


#: The flags of the uvicorn unit (deploy/relay-uvicorn@.service), but the socket, frame size and proxy headers.
UVICORN_FLAGS = (
    "--ws", "websockets-sansio", "--ws-per-message-deflate", "false", "--lifespan", "off", "--no-access-log",
)  # fmt: skip


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One daphne or uvicorn process serving ``relayproject.asgi:application``."""

    def __init__(
        self,
        name: str,
        port: int,
        env: dict[str, str],
        log_path: Path,
        kind: str = "daphne",
        max_frame_bytes: int | None = None,
        proxy_headers: bool = False,
    ) -> None:
        self.name = name
        self.port = port
        self.env = env
        self.log_path = log_path
        self.kind = kind
        self._log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            server_command(kind, port, max_frame_bytes, proxy_headers),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def __repr__(self) -> str:
        return f"<Server {self.kind} {self.name} :{self.port} redis={'REDIS_URL' in self.env}>"

    def url(self, query: str = "", path: str = "/ws") -> str:
        """The WebSocket URL of ``path`` with a raw query string (``id=1``)."""
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    @property
    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_lines(self, needle: str) -> list[str]:
        """The log lines that contain ``needle``."""
        return [line for line in self.log.splitlines() if needle in line]

    def events(self, event: str, **fields: str) -> list[dict[str, str]]:
        """The relay's ``event=<event> key=value ...`` log lines whose fields match, parsed.

        ``server.events("disconnect", client="alice")``; the relay logs one such line per
        connect, disconnect, refused handshake (``refused``) and refused frame (``frame_refused``).
        """
        found = []
        for line in self.log.splitlines():
            if not RELAY_LOG_LINE.match(line):
                continue  # not the relay's: daphne's access log, say, which writes what it was told
            parsed = parse_log_fields(line)
            if parsed.get("event") == event and all(parsed.get(key) == str(value) for key, value in fields.items()):
                found.append(parsed)
        return found

    async def wait_for_events(self, event: str, count: int = 1, timeout: float = 5.0, **fields: str) -> list[dict]:
        """Wait (without blocking the test's event loop) until ``count`` such events are logged.

        Returns them; the caller asserts on them.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(event, **fields)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.05)

    def wait_ready(self) -> None:
        """Wait until the port accepts and a WebSocket handshake succeeds."""
        deadline = time.monotonic() + START_TIMEOUT
        probe = self.url(f"id=e2e-probe-{uuid.uuid4().hex[:12]}")
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self} exited with {self.process.returncode}:\n{self.log}")
            try:
                with sync_ws_connect(probe, open_timeout=2, proxy=None, compression=None):
                    return
            except InvalidStatus as exc:  # the server is up, and refused or failed the handshake
                raise RuntimeError(f"{self} answered the probe handshake with {exc}:\n{self.log}") from None
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                last_error = exc
                time.sleep(0.1)
        raise RuntimeError(f"{self} did not accept a WebSocket in {START_TIMEOUT}s ({last_error!r}):\n{self.log}")

    def wait_listening(self) -> None:
        """Wait until the port accepts TCP connections, and no more: no request, no WebSocket, so the
        process has served nothing yet (``start_server(probe=False)``)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self} exited with {self.process.returncode}:\n{self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self} did not listen in {START_TIMEOUT}s:\n{self.log}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds; close the log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


#: One ``key=value`` field of a relay log line: a bare value, or a double-quoted JSON string
#: (``relay.logs.field`` quotes whatever a client could have written).
LOG_FIELD = re.compile(r'(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)')


#: The start of a line of the relay's loggers, in relayproject's LOGGING format.
RELAY_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ relay[.\w]* ")


def parse_log_fields(line: str) -> dict[str, str]:
    """The fields of one log line; a field a client forged inside a quoted value is not one."""
    fields = {}
    for key, value in LOG_FIELD.findall(line):
        fields.setdefault(key, json.loads(value) if value.startswith('"') else value)
    return fields


#: Servers started and not yet stopped, for the per-test traceback check.
LIVE_SERVERS: list[Server] = []


def traceback_report(server: Server, text: str) -> str:
    return f"{server} logged a traceback ({server.log_path}):\n{text[-6000:]}"


def site_env(**settings: str) -> dict[str, str]:
    """This process's environment minus anything that configures the site, plus ``settings``.

    The site always runs as ``make run`` runs it: ``relayproject.settings`` with DEBUG on.
    """
    env = {key: value for key, value in os.environ.items() if key not in _SITE_ENV and not key.startswith("RELAY_")}
    env.update(DJANGO_SETTINGS_MODULE="relayproject.settings", DEBUG="1", SECRET_KEY=TEST_SECRET, PYTHONUNBUFFERED="1")
    env.update(RELAY_LOG_LEVEL="DEBUG")  # the tests watch every connect and disconnect line
    env.update(settings)
    return env


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    """A migrated SQLite database for the servers and commands (``make run`` migrates too).

    With the example chat's table, for the servers that run it (``RELAY_EXAMPLES=1``).
    """
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'relay.sqlite3'}"
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        check=False,
        cwd=REPO,
        env=site_env(DATABASE_URL=url, RELAY_EXAMPLES="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"manage.py migrate failed:\n{result.stdout}\n{result.stderr}"
    return url


@pytest.fixture(scope="module")
def start_server(request, tmp_path_factory, database_url, asgi_server) -> Iterator[Callable[..., Server]]:
    """Factory: ``start_server(redis=True, name="a", env={...})`` starts a ready server process.

    The server is ``asgi_server`` (daphne or uvicorn: the test's parameter). ``redis=False``
    leaves REDIS_URL unset (the in-memory layer, as ``make run``); ``env`` adds or overrides
    environment variables (``RELAY_*`` from the outer environment are dropped, so every
    server starts from the site's defaults); ``max_frame_bytes`` and ``proxy_headers`` set
    the server's options of those names (``server_command``); ``port`` reuses a port (a
    server restarted in place); ``probe=False`` waits only until the port listens, where
    readiness is otherwise a WebSocket handshake (for a process that has served nothing
    yet). All servers started in a module stop when it ends, and their logs must hold no
    traceback.
    """
    servers: list[Server] = []
    log_dir = tmp_path_factory.mktemp(asgi_server)

    def start(
        *,
        redis: bool = True,
        name: str = "server",
        env: dict[str, str] | None = None,
        max_frame_bytes: int | None = None,
        proxy_headers: bool = False,
        port: int | None = None,
        probe: bool = True,
    ) -> Server:
        settings = {"DATABASE_URL": database_url}
        if redis:
            settings["REDIS_URL"] = request.getfixturevalue("redis_url")
        server_env = site_env(**{**settings, **(env or {})})
        log_path = log_dir / f"{name}-{len(servers)}.log"
        server = Server(name, port or free_port(), server_env, log_path, asgi_server, max_frame_bytes, proxy_headers)
        servers.append(server)
        LIVE_SERVERS.append(server)
        if probe:
            server.wait_ready()
        else:
            server.wait_listening()
        return server

    yield start

    for server in servers:
        server.stop()
        LIVE_SERVERS.remove(server)
    problems = [traceback_report(s, s.log) for s in servers if "Traceback" in s.log]
    assert not problems, "\n\n".join(problems)


@pytest.fixture(autouse=True)
def no_new_tracebacks() -> Iterator[None]:
    """Fail the test during which a running server logged a traceback."""
    before = {id(server): len(server.log) for server in LIVE_SERVERS}
    yield
    problems = []
    for server in LIVE_SERVERS:
        new = server.log[before.get(id(server), 0) :]
        if "Traceback" in new:
            problems.append(traceback_report(server, new))
    assert not problems, "\n\n".join(problems)


@pytest.fixture(scope="module")
def server(start_server) -> Server:
    """A server process on the shared Redis."""
    return start_server(name="a")


#: For tests that send far more than the default per-connection rate limit (50/s, burst 100),
#: and than a client id may store in streams (RELAY_HISTORY_RATE).
NO_RATE_LIMIT = {"RELAY_RATE_LIMIT": "off", "RELAY_HISTORY_RATE": "off"}


@pytest.fixture(scope="module")
def memory_server(start_server) -> Server:
    """A server process with REDIS_URL unset: the in-memory layer, one process only."""
    return start_server(redis=False, name="memory")


# --- client ids ------------------------------------------------------------------------


@pytest.fixture
def uid() -> Callable[[str], str]:
    """``uid("alice")``: a client id unique to this test run (``e2e-<hex>-alice``)."""
    prefix = f"e2e-{uuid.uuid4().hex[:12]}"
    return lambda name="": f"{prefix}-{name}" if name else prefix


def numeric_id() -> int:
    """A random all-digit client id, for the ``2`` / ``"2"`` cases."""
    return uuid.uuid4().int % 10**15 + 10**14


# --- WebSocket clients -----------------------------------------------------------------


class Client:
    """A WebSocket client of the relay: send JSON, receive with a timeout.

    ``recv_json`` and ``recv_many`` take the stream position (``offset``, ``epoch``) off
    each ``relay.v1`` delivery and keep it in ``positions``, checking on the way that a
    connection's deliveries follow each other in its stream without a gap. Tests that
    assert on positions read ``positions`` (or ``recv_text``, which leaves frames as
    they came); a test where gaps are expected (Redis taken away) sets ``gapless = False``.
    """

    def __init__(self, ws: ClientConnection, client_id: str) -> None:
        self.ws = ws
        self.client_id = client_id
        self.positions: list[tuple[str, int]] = []
        self.gapless = True

    def take_position(self, frame: Any) -> Any:
        """``frame`` without its stream position, which goes to ``positions`` (checked for gaps)."""
        if not (isinstance(frame, dict) and frame.get("type") == "message" and "offset" in frame):
            return frame
        frame = dict(frame)
        position = (frame.pop("epoch"), frame.pop("offset"))
        if self.gapless and self.positions and self.positions[-1][0] == position[0]:
            assert position[1] == self.positions[-1][1] + 1, f"{self}: offset {position} after {self.positions[-1]}"
        self.positions.append(position)
        return frame

    def __repr__(self) -> str:
        return f"<Client {self.client_id} subprotocol={self.subprotocol}>"

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol

    async def send_json(self, data: Any) -> None:
        await self.ws.send(json.dumps(data))

    async def send_text(self, text: str) -> None:
        await self.ws.send(text, text=True)

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send(data, text=False)

    async def recv_text(self, timeout: float = RECV_TIMEOUT) -> str:
        """The next frame, which must be a text frame, within ``timeout`` seconds."""
        try:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self} received nothing within {timeout}s") from None
        assert isinstance(frame, str), f"{self} received a binary frame: {frame[:200]!r}"
        return frame

    async def recv_json(self, timeout: float = RECV_TIMEOUT) -> Any:
        """The next frame as JSON, a delivery's stream position taken off."""
        return self.take_position(json.loads(await self.recv_text(timeout)))

    async def recv_many(self, count: int, timeout: float = RECV_TIMEOUT) -> list[Any]:
        """The next ``count`` frames as JSON, all within ``timeout`` seconds."""

        async def collect() -> list[Any]:
            return [self.take_position(json.loads(await self.ws.recv())) for _ in range(count)]

        try:
            return await asyncio.wait_for(collect(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self} did not receive {count} frames within {timeout}s") from None

    async def assert_silent(self, seconds: float = 0.3) -> None:
        """Assert that nothing arrives within ``seconds`` (cancelling recv() loses nothing)."""
        try:
            frame = await asyncio.wait_for(self.ws.recv(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"{self} received an unexpected frame: {frame[:500]!r}")

    async def close(self) -> None:
        await self.ws.close()


async def assert_all_silent(clients: list[Client], seconds: float = 0.3) -> None:
    """Assert that none of ``clients`` receives anything within ``seconds``."""
    await asyncio.gather(*(client.assert_silent(seconds) for client in clients))


def open_ws(
    server: Server,
    query: str = "",
    *,
    path: str = "/ws",
    subprotocols: list[str] | None = None,
    headers=None,
    origin: str | None = None,
):
    """The ``websockets`` connect call for a server (an awaitable and async context manager)."""
    return ws_connect(
        server.url(query, path),
        subprotocols=subprotocols,
        additional_headers=headers,
        origin=origin,
        proxy=None,
        compression=None,
        open_timeout=5,
        close_timeout=2,
    )


@pytest.fixture
async def connect():
    """Factory: ``await connect(server, client_id, subprotocol="relay.v1", path="/ws", query="since=...")``.

    ``query`` adds query parameters after ``id=``. Every client it opens is closed after the test.
    """
    clients: list[Client] = []

    async def _connect(
        server: Server, client_id: str | int, *, subprotocol: str | None = None, path: str = "/ws", query: str = ""
    ) -> Client:
        full_query = f"id={client_id}" + (f"&{query}" if query else "")
        ws = await open_ws(server, full_query, path=path, subprotocols=[subprotocol] if subprotocol else None)
        client = Client(ws, str(client_id))
        clients.append(client)
        return client

    yield _connect
    for client in clients:
        try:
            await client.close()
        except ConnectionClosed:
            pass


# --- manage.py relay_send --------------------------------------------------------------


def run_relay_send_sync(server: Server, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python manage.py relay_send ARGS`` with the server's environment."""
    return subprocess.run(
        [sys.executable, "manage.py", "relay_send", *args],
        check=False,
        cwd=REPO,
        env=server.env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
    )


async def run_relay_send(server: Server, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``run_relay_send_sync`` in a thread, so the test's clients keep being served."""
    return await asyncio.to_thread(run_relay_send_sync, server, *args, stdin=stdin)


# --- A private Redis and plain HTTP, for the fault and operations tests -----------------
#
# The shared Redis at REDIS_URL is never stopped: a test that takes Redis away starts its
# own redis-server on a free port (``private_redis()``) and points servers at it with
# ``env={"REDIS_URL": redis.url}``.

import hashlib  # noqa: E402 - this section is appended to the file
import http.client  # noqa: E402
from base64 import b64encode  # noqa: E402

REDIS_SERVER = "redis-server"


class PrivateRedis:
    """A redis-server of one test's own, on its own port; stop() and start() it at will.

    ``args`` are more redis-server arguments (TLS, ACL users, ``--replicaof``, or a
    config file and ``--sentinel``); ``client`` the redis-py options that reach it
    (``ssl=True, ssl_ca_certs=...`` for a TLS-only one), for the readiness check.
    """

    def __init__(self, port: int, log_path: Path, args: tuple[str, ...] = (), client: dict | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.args = args
        self.client = client or {}
        self.process: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"<PrivateRedis :{self.port} pid={self.process.pid if self.process else None}>"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start redis-server (no persistence) on this port and wait until it answers PING."""
        assert not self.running, f"{self} is running already"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [REDIS_SERVER, *self.args[:1], *self.startup_args(), *self.args[1:]]
                if self.args[:1] and self.args[0].endswith(".conf")
                else [REDIS_SERVER, *self.startup_args(), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(
                    port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5, **self.client
                ) as client:
                    client.ping()
                return
            except (redis.RedisError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self} did not start:\n{self.log_path.read_text()}") from None
                time.sleep(0.05)

    def startup_args(self) -> list[str]:
        """Port, loopback, no persistence; a TLS-only server (``--tls-port``) listens on no plain port."""
        port = ["--port", "0"] if "--tls-port" in self.args else ["--port", str(self.port)]
        if "--sentinel" in self.args:  # a sentinel keeps its state in its config file
            return [*port, "--bind", "127.0.0.1"]
        # --dir: a replica writes the master's snapshot to disk, and nothing goes in the checkout.
        directory = ["--dir", str(self.log_path.parent), "--dbfilename", f"{self.log_path.stem}.rdb"]
        return [*port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *directory]

    def stop(self) -> None:
        """SIGTERM redis-server (it saves nothing) and wait until it is gone."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def private_redis(tmp_path_factory) -> Iterator[Callable[[], PrivateRedis]]:
    """Factory: ``private_redis()`` starts a redis-server on a free port, stopped after the test.

    At teardown the servers that use it are stopped first, so that none outlives its Redis.
    """
    started: list[PrivateRedis] = []
    log_dir = tmp_path_factory.mktemp("redis")

    def start(args: tuple[str, ...] = (), client: dict | None = None, port: int | None = None) -> PrivateRedis:
        port = port or free_port()
        args = tuple(arg.replace("{port}", str(port)) for arg in args)
        instance = PrivateRedis(port, log_dir / f"redis-{len(started)}.log", args, client)
        started.append(instance)
        instance.start()
        return instance

    yield start

    for instance in started:
        for server in list(LIVE_SERVERS):
            if f"127.0.0.1:{instance.port}" in server.env.get("REDIS_URL", ""):
                server.stop()
        instance.stop()


class HttpResponse:
    """Status, headers and body of one HTTP answer."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} {self.body[:300]!r}>"

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


def http_get_sync(server: Server, path: str, headers: dict[str, str] | None = None) -> HttpResponse:
    """GET ``path`` from a server; any status is an answer, not an exception."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return HttpResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


async def http_get(server: Server, path: str, headers: dict[str, str] | None = None) -> HttpResponse:
    """``http_get_sync`` in a thread, so the test's WebSocket clients keep being served."""
    return await asyncio.to_thread(http_get_sync, server, path, headers)


def run_manage_sync(server: Server, *args: str) -> subprocess.CompletedProcess:
    """Run ``python manage.py ARGS`` with a server's environment (settings, database, Redis)."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        check=False,
        cwd=REPO,
        env=server.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def create_api_key(server: Server) -> str:
    """A fresh key for the HTTP API that may send and read presence, in the server's database.

    ``manage.py relay_apikey create --scope send --scope presence``.
    """
    name = f"e2e-{uuid.uuid4().hex[:12]}"
    result = await asyncio.to_thread(
        run_manage_sync, server, "relay_apikey", "create", name, "--scope", "send", "--scope", "presence"
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def presence_of(server: Server, api_key: str, ids: list[str]) -> dict[str, int]:
    """Open connections per online id of ``ids``, from ``GET /relay/api/presence``."""
    response = await http_get(
        server, "/relay/api/presence?ids=" + ",".join(ids), {"Authorization": f"Bearer {api_key}"}
    )
    assert response.status == 200, response
    return response.json()["connections"]


async def read_metrics(server: Server, headers: dict[str, str] | None = None) -> dict[str, float]:
    """``GET /relay/metrics`` (which must answer 200) as ``{'name{labels}': value}``."""
    response = await http_get(server, "/relay/metrics", headers)
    assert response.status == 200, response
    assert response.headers["content-type"].startswith("text/plain; version="), response.headers
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            sample, _, value = line.rpartition(" ")
            samples[sample] = float(value)
    return samples


WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def raw_websocket(port: int, query: str, receive_buffer: int | None = None) -> tuple[socket.socket, bytes]:
    """A WebSocket handshake by hand on a plain socket; returns the socket and the HTTP answer.

    With ``receive_buffer`` the socket's SO_RCVBUF is set before connecting (no autotuning),
    so a client that never reads stops the server's writes after a few kilobytes.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws{'?' + query if query else ''} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    answer = b""
    while not answer.endswith(b"\r\n\r\n"):  # byte by byte: read nothing past the headers
        byte = sock.recv(1)
        if not byte:
            break
        answer += byte
    accept = b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
    if answer.startswith(b"HTTP/1.1 101 "):
        assert f"\r\nSec-WebSocket-Accept: {accept}\r\n".encode() in answer, answer
    return sock, answer


# --- A browser, for the tests of relay.js and the demo (tests/e2e/browser.py) -------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Any]:
    """A headless chromium (a Playwright ``BrowserContext`` with a fresh profile) for a module's tests."""
    from .browser import chromium

    with chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context
