"""The servers the benchmarks start, and what they read of them in ``/proc`` and Redis.

``server_command`` holds the command line of each server (daphne, uvicorn), as a user runs
it; ``Server`` starts one on a free port (or on a listening socket the benchmark shares
between two of them), waits until it answers, stops it, and reads its log afterwards.
"""

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.loadgen import raise_nofile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
APPS = {"floor": "bench.floor:application", "relay": "relayproject.asgi:application"}
TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"  # as in the Makefile


#: The servers the benchmarks run (``server_command``).
SERVERS = ["daphne", "uvicorn"]
#: Shared objects a server must have loaded to count as set up as documented (``/proc/PID/maps``).
EXPECTED_MODULES = {"daphne": (), "uvicorn": ("uvloop", "httptools")}


def server_command(kind: str, app: str, port: int | None = None, fd: int | None = None) -> list[str]:
    """The command line of server ``kind`` serving ``app`` on ``port``, or on the listening socket ``fd``.

    daphne as the Makefile runs it (no idle cut-off, frames over 128 KiB refused); uvicorn
    as ``deploy/relay-uvicorn@.service`` runs it: the sans-I/O websockets protocol, the same
    frame limit, no permessage-deflate and no ``--proxy-headers`` (the relay reads
    X-Forwarded-For itself); uvloop and httptools are picked when installed.
    """
    if kind == "daphne":
        bind = ["--fd", str(fd)] if fd is not None else ["-b", "127.0.0.1", "-p", str(port)]
        return [
            _executable("daphne"), *bind, "--websocket_timeout", "-1",
            "--websocket-max-message-size", "131072", "--websocket-max-frame-size", "131072", app,
        ]  # fmt: skip
    if kind == "uvicorn":
        bind = ["--fd", str(fd)] if fd is not None else ["--host", "127.0.0.1", "--port", str(port)]
        return [
            _executable("uvicorn"), *bind, "--ws", "websockets-sansio", "--ws-max-size", "131072",
            "--ws-per-message-deflate", "false", "--lifespan", "off", "--no-access-log", "--no-proxy-headers", app,
        ]  # fmt: skip
    raise ValueError(f"unknown server {kind!r}: one of {SERVERS}")


def _executable(name: str) -> str:
    """The venv's console script ``name``."""
    return str(Path(sys.executable).with_name(name))


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shared_listener() -> socket.socket:
    """A listening TCP socket on a free loopback port, for two servers to accept from (``--fd``)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)  # a reconnect storm arrives at once; the kernel caps it at net.core.somaxconn
    sock.set_inheritable(True)
    return sock


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) that process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def process_rss_kb(pid: int) -> int:
    """Resident set size of process ``pid`` in KB (``VmRSS`` in ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def socket_count(pid: int) -> int:
    """How many sockets process ``pid`` has open (its connections, listeners, Redis)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            pass  # closed meanwhile
    return count


def machine_cpu() -> float:
    """CPU seconds all processes of the machine have used (``/proc/stat``: user, nice, system, irq, softirq).

    Interrupt time counts too: with tick-based accounting (no CONFIG_IRQ_TIME_ACCOUNTING, as
    here), a tick in a softirq (loopback TCP runs there) is charged to the running process's
    stime as well, so leaving it out makes the "other" CPU come out negative.
    """
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / TICKS


def redis_info(url: str, section: str) -> dict:
    """One section of ``INFO`` from the Redis server at ``url``."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return client.info(section)
    finally:
        client.close()


def redis_cpu(url: str) -> float:
    """CPU seconds the Redis server at ``url`` has used (``INFO cpu``)."""
    info = redis_info(url, "cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def cpu_sample(pids: list[int], redis_urls: list[str]) -> dict:
    """CPU seconds used so far by the servers (together), the machine, and each Redis of ``redis_urls``."""
    cpu = {"server": sum(process_cpu(pid) for pid in pids), "machine": machine_cpu()}
    if redis_urls:
        shards = [redis_cpu(url) for url in redis_urls]
        cpu["redis"] = sum(shards)
        if len(shards) > 1:
            cpu.update({f"redis{index}": seconds for index, seconds in enumerate(shards)})
    return cpu


def server_env(redis_url: str, database_url: str | None = None) -> dict:
    """The environment of the servers: DEBUG on (for ``?id=``), the relay's REDIS_URL."""
    env = {**os.environ, "DEBUG": "1", "REDIS_URL": redis_url}
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


class Server:
    """One server process (``kind``: daphne or uvicorn) serving ``app`` as a user runs it; its log goes to a file.

    It listens on a free port, or, with ``fd``, accepts from that listening socket (shared
    with another server: both take connections from one port). ``cwd``: the checkout it
    serves (another one for an A/B against an earlier version).
    """

    def __init__(self, kind: str, app: str, env: dict, log_path: Path, cwd: Path = ROOT, fd: int | None = None) -> None:
        self.kind = kind
        self.port = free_port() if fd is None else _port_of(fd)
        self.log_path = log_path
        self.command = server_command(kind, APPS[app], port=None if fd is not None else self.port, fd=fd)
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            self.command, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            pass_fds=() if fd is None else (fd,), preexec_fn=raise_nofile,
        )  # fmt: skip
        self.pid = self.proc.pid
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.log_bytes_before_stop: int | None = None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the server answers an HTTP request; fail if it exits first.

        An answer, not a TCP connect: a shared listening socket accepts connections for the
        kernel's backlog before any server takes them.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(b"GET /relay/healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    if sock.recv(12).startswith(b"HTTP/"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not answer on {self.port} within {timeout:.0f}s; see {self.log_path}")

    def modules(self) -> dict[str, bool]:
        """Whether each module the server should have picked (uvloop, httptools) is loaded in it."""
        maps = Path(f"/proc/{self.pid}/maps").read_text()
        return {name: f"/{name}/" in maps for name in EXPECTED_MODULES[self.kind]}

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the server, if it still runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the relay drains: 1001 to every client), then SIGKILL if it does not exit in time."""
        self.log.flush()
        if self.log_bytes_before_stop is None:
            self.log_bytes_before_stop = self.log_path.stat().st_size
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def problems(self, whole: bool = False) -> list[str]:
        """Errors, warnings and tracebacks the server logged (before we stopped it, unless ``whole``)."""
        pattern = re.compile(r"Traceback|\b(ERROR|CRITICAL|WARNING)\b|Exception")
        with self.log_path.open("rb") as log:
            raw = log.read() if whole or self.log_bytes_before_stop is None else log.read(self.log_bytes_before_stop)
        return [line for line in raw.decode(errors="replace").splitlines() if pattern.search(line)]


def code_state() -> dict:
    """The commit measured, and a digest of uncommitted changes to the relay (it may be edited between runs)."""

    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=False).stdout

    diff = git("diff", "HEAD", "--", "relay", "relayproject")
    return {"commit": git("rev-parse", "HEAD").decode().strip(), "relay_diff_sha1": hashlib.sha1(diff).hexdigest()}


def summarize(lines: list[str]) -> dict[str, int]:
    """Log lines counted by kind: the timestamp dropped and every number written N."""
    kinds: dict[str, int] = {}
    for line in lines:
        kind = re.sub(r"\d+", "N", re.sub(r"^[\d-]+ [\d:,.]+ ", "", line))
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items(), key=lambda item: -item[1]))


def _port_of(fd: int) -> int:
    """The local port of the listening socket ``fd``."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return sock.getsockname()[1]
    finally:
        sock.close()
