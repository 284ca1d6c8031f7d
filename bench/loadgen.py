"""The load generator: N WebSocket clients in pairs or fan-out, with exact accounting of every message.

Client ``i`` connects to ``ws://HOST:PORT/ws?id=i`` and sends frames
``{"targets": [...], "payload": {"from": i, "seq": k, "ts": T}}``; ``T`` is CLOCK_MONOTONIC
in ns, which every process on the machine shares, so latency is simply receive time minus ``T``.

- **Pairs** (the default): client ``i`` sends to its partner ``i ^ 1``.
- **Fan-out** (``senders=S, fanout=K``): S senders, each message to K distinct targets, a
  contiguous block of client ids at a random offset (mod the ids of the sender's worker);
  a message is complete when all K deliveries have arrived.
- **Closed loop** (``window=W``): every sender keeps W messages in flight; each message
  completely delivered releases the next.
- **Open loop** (``rate=R``): R messages/s in total, round-robin over the senders, and
  ``T`` is the *scheduled* send time, so a stalled server shows up as latency instead of
  as fewer messages sent (no coordinated omission).

Timeline: connect everyone, settle, warm up (sending, not measured), the measured window,
then drain (no new sends; wait until every message sent has arrived, or a timeout), close.
Throughput counts deliveries received in the window; latency covers the deliveries of
messages sent in the window, wherever they arrived. After the drain every delivery
expected is exactly one of delivered or lost, and every frame received is a delivery, a
duplicate, misdelivered (to a client it was not addressed to), an error frame from the
server, or a bad payload.

The clients are spread over a few worker processes (a pair, or a fan-out sender and its
targets, always live in one worker, so accounting needs no cross-process traffic). Each
worker is one asyncio loop driving raw sockets with minimal RFC 6455 framing (masked
client frames, ``WebSocket``), which costs a fraction of a WebSocket library per
message; its CPU is measured and reported, since on a small machine the generator
competes with the server. Clients can connect from several loopback source addresses
(``sources``): one address pair has ~28,000 ephemeral ports.

Library use: ``run(urls, ...)`` returns the merged report; ``WebSocket``, ``open_socket``
and ``spawn`` are the pieces the other generators (``pool.py``, ``churn.py``,
``storm.py``) share. Command line: ``python -m bench.loadgen ws://127.0.0.1:8000/ws -n
1000 -w 4 -d 20`` (or ``--senders 10 -k 100 -w 1`` for fan-out) prints it as JSON.
"""

import argparse
import array
import asyncio
import base64
import hashlib
import json
import multiprocessing
import os
import random
import resource
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
NS = 1_000_000_000
#: Open loop: a message sent more than this long after its scheduled time counts as late.
LATE_NS = 10_000_000
#: Linux's IP_BIND_ADDRESS_NO_PORT (Python names it from 3.12): bind a source address without
#: taking a port, so that the port is chosen at connect() per destination, not per address.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
#: Counters every worker reports; the parent sums them.
COUNTERS = (
    "clients", "connected", "failed_connects", "sent", "sent_in_window", "expected_deliveries", "delivered",
    "delivered_in_window", "lost", "lost_messages", "duplicates", "misdelivered", "error_frames", "bad_payload",
    "protocol_errors", "server_closes", "unexpected_closes",
)  # fmt: skip


def mask_frame(opcode: int, data: bytes) -> bytes:
    """One final client frame: ``data`` masked with a fresh random key (RFC 6455 §5.3)."""
    n = len(data)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    key = random.getrandbits(32).to_bytes(4, "big")
    masked = int.from_bytes(data, "big") ^ int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return header + key + masked.to_bytes(n, "big")


def split_frames(data: bytes) -> tuple[list[tuple[int, int, int, bytes]], bytes]:
    """The complete server frames at the start of ``data`` as (fin, masked, opcode, payload), and the rest."""
    frames = []
    pos, end = 0, len(data)
    while end - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        length, start = b1 & 0x7F, pos + 2
        if length == 126:
            if end - pos < 4:
                break
            length, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
        elif length == 127:
            if end - pos < 10:
                break
            length, start = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
        if start + length > end:
            break
        frames.append((b0 & 0x80, b1 & 0x80, b0 & 0x0F, data[start : start + length]))
        pos = start + length
    return frames, data[pos:]


class WebSocket(asyncio.Protocol):
    """One client connection: the upgrade, RFC 6455 framing, pings answered, the closing handshake.

    Subclasses handle text frames (``on_text``) and the end of the connection (``on_lost``).
    ``stats`` is a dict of counters: ``protocol_errors``, ``server_closes`` (the server
    started the closing handshake) and ``unexpected_closes`` (the TCP connection ended
    without one we started) are counted in it.
    """

    def __init__(self, stats: dict, host: str, port: int, path: str, subprotocol: str | None = None) -> None:
        self.stats = stats
        key = base64.b64encode(os.urandom(16))
        self.accept_key = base64.b64encode(hashlib.sha1(key + GUID).digest())
        protocol = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Version: 13\r\n{protocol}Sec-WebSocket-Key: {key.decode()}\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[bool] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.open = False
        self.closing = False  # we sent a close frame
        self.close_code: int | None = None  # the code of the server's close frame, if it sent one
        self.buffer = b""
        self.fragments: list[bytes] | None = None

    # -- what subclasses handle
    def on_text(self, payload: bytes) -> None:
        """A text (or binary) message from the server."""

    def on_lost(self) -> None:
        """The TCP connection is gone (after the handshake); ``close_code`` says whether the server closed it."""

    # -- asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        self.transport = None
        if not self.opened.done():
            self.opened.set_result(False)
        else:
            if not self.closing and self.close_code is None:
                self.stats["unexpected_closes"] += 1
            self.on_lost()
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data, self.buffer = self.buffer + data, b""
        if not self.open:
            data = self.handshake(data)
            if not data:
                return
        frames, self.buffer = split_frames(data)
        for fin, masked, opcode, payload in frames:
            if masked:  # a server never masks its frames
                self.stats["protocol_errors"] += 1
                self.transport.abort()
                return
            self.frame(fin, opcode, payload)
            if self.transport is None:
                return

    # -- protocol
    def handshake(self, data: bytes) -> bytes | None:
        """Check the 101 response; return the bytes after it (frames), or None if incomplete or refused."""
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            self.buffer = data
            return None
        lines = head.split(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if not lines[0].startswith(b"HTTP/1.1 101") or headers.get(b"sec-websocket-accept") != self.accept_key:
            self.transport.abort()
            return None
        self.open = True
        self.opened.set_result(True)
        return rest

    def frame(self, fin: int, opcode: int, payload: bytes) -> None:
        """Handle one server frame: text, continuation, ping or close."""
        if opcode in (1, 2):
            if fin:
                self.on_text(payload)
            else:
                self.fragments = [payload]
        elif opcode == 0 and self.fragments is not None:
            self.fragments.append(payload)
            if fin:
                message, self.fragments = b"".join(self.fragments), None
                self.on_text(message)
        elif opcode == 9:
            self.transport.write(mask_frame(0xA, payload))
        elif opcode == 8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.closing:
                self.stats["server_closes"] += 1
                self.close(self.close_code if self.close_code != 1005 else 1000)

    def send_text(self, text: str) -> bool:
        """Send one text frame, unless either side started closing; whether it was written."""
        if self.transport is None or not self.open or self.closing or self.close_code is not None:
            return False
        self.transport.write(mask_frame(1, text.encode()))
        return True

    def close(self, code: int = 1000) -> None:
        """Start (or answer) the closing handshake with ``code``."""
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.write(mask_frame(8, code.to_bytes(2, "big")))

    async def wait_closed(self, timeout: float) -> None:
        """Wait for the server to close the TCP connection after our close; abort it after ``timeout``."""
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()


def source_address(index: int, sources: int) -> str | None:
    """Client ``index``'s loopback source address among ``sources`` (127.0.0.2, ...); None: the kernel's choice."""
    return f"127.0.0.{2 + index % sources}" if sources else None


async def open_socket(factory: Callable[[], WebSocket], host: str, port: int, source: str | None, timeout: float):
    """Connect ``factory()``'s connection from ``source`` and wait for its handshake; the connection, or None."""
    loop = asyncio.get_running_loop()
    connection = None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
        _, connection = await loop.create_connection(factory, sock=sock)
        if await asyncio.wait_for(asyncio.shield(connection.opened), timeout):
            return connection
    except (TimeoutError, OSError):
        pass
    if connection is not None and connection.transport is not None:
        connection.transport.abort()
    elif connection is None:
        sock.close()
    return None


def raise_nofile() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (a socket each); return the limit.

    The hard limit itself cannot be raised without CAP_SYS_RESOURCE, so it caps how many
    connections one process (a server or a generator worker) can hold.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def spawn(target: Callable, specs: list[dict]) -> tuple[list, list]:
    """Start one worker process per spec running ``target(pipe, spec)``; their processes and pipes."""
    ctx = multiprocessing.get_context("spawn")
    procs, pipes = [], []
    for spec in specs:
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=target, args=(child_end, spec), daemon=True)
        proc.start()
        procs.append(proc)
        pipes.append(parent_end)
    return procs, pipes


def join(procs: list, timeout: float = 10) -> None:
    """Wait for the workers to exit; kill those that do not."""
    for proc in procs:
        proc.join(timeout=timeout)
        if proc.is_alive():
            proc.kill()


def run_loop(main: Callable[[], Coroutine]) -> Any:
    """Run ``main()`` in a worker process, on uvloop when it is installed (as it is for uvicorn).

    A generator worker's cost per frame is mostly its event loop's: uvloop halves it, so the
    worker answers sooner and needs less of the machine the server shares.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def cpu_seconds() -> float:
    """This process's CPU seconds (user + system)."""
    return sum(os.times()[:2])


class Client(WebSocket):
    """One client of the load: its connection, and the accounting of the messages it sent."""

    def __init__(self, worker: "Worker", cid: int, pos: int, host: str, port: int, path: str) -> None:
        super().__init__(worker.stats, host, port, f"{path}{'&' if '?' in path else '?'}id={cid}")
        self.worker = worker
        self.cid = cid
        self.pos = pos  # index in the worker's ids: fan-out blocks are ranges of positions
        self.partner = cid ^ 1
        self.seq = 0  # messages sent; seq numbers 0..seq-1
        self.got: list[int] = []  # per seq: a bit per target delivered (bit 0 alone for a pair)
        self.offsets = array.array("i")  # fan-out: per seq, the position of the block's first target

    def on_text(self, payload: bytes) -> None:
        self.worker.on_message(self, payload)

    def send_next(self, ts: int) -> None:
        """Send this client's next message to its targets, stamped ``ts``."""
        if self.transport is None:
            return
        seq = self.seq
        self.seq += 1
        self.got.append(0)
        targets = self.worker.targets_of(self)
        text = f'{{"targets":[{targets}],"payload":{{"from":{self.cid},"seq":{seq},"ts":{ts}}}}}'
        self.transport.write(mask_frame(1, text.encode()))
        self.worker.on_sent(ts)


class Worker:
    """One process's clients: connects them, drives the load, counts everything."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.stats = dict.fromkeys(COUNTERS, 0)
        self.clients: dict[int, Client] = {}
        self.ids: list[int] = spec["ids"]
        self.id_text = [str(cid) for cid in self.ids]
        self.k = spec["fanout"]
        self.full = (1 << self.k) - 1  # every target's bit: the message is complete
        self.latencies = array.array("q")  # ns; compact for long runs (a soak keeps ~10^6)
        self.outstanding = 0  # deliveries expected, not yet made
        self.errors: list[str] = []
        self.max_lag = 0
        self.late = 0  # open loop: messages sent more than LATE_NS after their scheduled time
        self.window = (0, 0)  # measured window, monotonic ns
        self.send_until = 0
        # The last frame parsed: a fan-out message reaches its targets as the same bytes, one
        # after the other, and parsing it once keeps the generator from being the bottleneck.
        self.last_frame: tuple[bytes, dict | None] = (b"", None)

    async def connect_all(self) -> None:
        """Open every client's connection, a bounded number of handshakes at a time."""
        limit = asyncio.Semaphore(self.spec["max_pending"])

        async def connect(pos: int, cid: int) -> None:
            url = urlsplit(self.spec["urls"][cid % len(self.spec["urls"])])
            path = url.path + (f"?{url.query}" if url.query else "")
            source = source_address(cid, self.spec["sources"])
            async with limit:
                client = await open_socket(
                    lambda: Client(self, cid, pos, url.hostname, url.port, path),
                    url.hostname, url.port, source, self.spec["connect_timeout"],
                )  # fmt: skip
            if client is None:
                self.stats["failed_connects"] += 1
            else:
                self.clients[cid] = client

        await asyncio.gather(*(connect(pos, cid) for pos, cid in enumerate(self.ids)))
        self.stats["clients"] = len(self.ids)
        self.stats["connected"] = len(self.clients)

    def senders(self) -> list[Client]:
        """The clients that send: fan-out's senders, or every client whose partner is connected."""
        if self.spec["senders"] is not None:
            return [self.clients[cid] for cid in self.spec["senders"] if cid in self.clients]
        return [c for c in self.clients.values() if c.partner in self.clients]

    def targets_of(self, sender: Client) -> str:
        """The targets of ``sender``'s next message, as JSON list items; fan-out remembers the block."""
        if self.spec["senders"] is None:
            return str(sender.partner)
        n = len(self.ids)
        offset = random.randrange(n)
        sender.offsets.append(offset)
        return ",".join(self.id_text[(offset + j) % n] for j in range(self.k))

    def target_index(self, sender: Client, seq: int, receiver: Client) -> int | None:
        """Which of the targets of ``sender``'s message ``seq`` ``receiver`` is; None if it is not one."""
        if self.spec["senders"] is None:
            return 0 if receiver.cid == sender.partner else None
        index = (receiver.pos - sender.offsets[seq]) % len(self.ids)
        return index if index < self.k else None

    def on_sent(self, ts: int) -> None:
        self.outstanding += self.k
        self.stats["sent"] += 1
        self.stats["expected_deliveries"] += self.k
        if self.window[0] <= ts < self.window[1]:
            self.stats["sent_in_window"] += 1

    def on_message(self, client: Client, payload: bytes) -> None:
        """Account for one frame received by ``client``; in closed loop, a complete message sends the next."""
        now = time.monotonic_ns()
        stats = self.stats
        message = None
        try:
            if payload == self.last_frame[0]:
                message = self.last_frame[1]
            else:
                message = json.loads(payload)
                self.last_frame = (payload, message)
            source, seq, ts = message["from"], message["seq"], message["ts"]
            sender = self.clients.get(source)
        except (ValueError, KeyError, TypeError):
            if isinstance(message, dict) and "error" in message:
                # The server refused one of this client's frames: it will never be
                # delivered (it counts as lost), so in closed loop it frees its slot.
                stats["error_frames"] += 1
                if len(self.errors) < 5:
                    self.errors.append(payload.decode(errors="replace"))
                if self.spec["window"] and now < self.send_until:
                    client.send_next(now)
            else:
                stats["bad_payload"] += 1
            return
        index = None
        if sender is not None and isinstance(seq, int) and 0 <= seq < len(sender.got):
            index = self.target_index(sender, seq, client)
        if index is None:
            stats["misdelivered"] += 1
            return
        got, bit = sender.got[seq], 1 << index
        if got & bit:
            stats["duplicates"] += 1
            return
        sender.got[seq] = got = got | bit
        self.outstanding -= 1
        stats["delivered"] += 1
        start, end = self.window
        if start <= now < end:
            stats["delivered_in_window"] += 1
        if start <= ts < end:
            self.latencies.append(now - ts)
        if got == self.full and self.spec["window"] and now < self.send_until:
            sender.send_next(now)

    async def open_loop(self, start: int, rate: float) -> None:
        """Send ``rate`` msg/s round-robin over the senders from ``start`` to ``send_until``."""
        senders = self.senders()
        if not senders or rate <= 0:
            return
        interval = NS / rate
        scheduled, i = float(start), 0
        while scheduled < self.send_until:
            now = time.monotonic_ns()
            if scheduled <= now:
                self.max_lag = max(self.max_lag, now - int(scheduled))
            while scheduled <= now and scheduled < self.send_until:
                senders[i % len(senders)].send_next(int(scheduled))
                if now - scheduled > LATE_NS:
                    self.late += 1
                scheduled += interval
                i += 1
            await asyncio.sleep(max(0.0, (scheduled - time.monotonic_ns()) / NS))

    async def run(self, timeline: dict) -> dict:
        """Drive the load along ``timeline`` (monotonic ns) and return this worker's report."""
        loop = asyncio.get_running_loop()
        self.window = (timeline["window_start"], timeline["window_end"])
        self.send_until = timeline["window_end"]
        cpu = {}  # this process's CPU seconds at the window's edges (asyncio's clock is time.monotonic)
        for name in ("window_start", "window_end"):
            loop.call_at(timeline[name] / NS, lambda name=name: cpu.__setitem__(name, cpu_seconds()))

        await asyncio.sleep(max(0.0, (timeline["start"] - time.monotonic_ns()) / NS))
        if self.spec["window"]:
            for client in self.senders():
                for _ in range(self.spec["window"]):
                    client.send_next(time.monotonic_ns())
        else:
            share = self.spec["rate"] * len(self.senders()) / self.spec["total_senders"]
            phase = int(self.spec["index"] * NS / max(self.spec["rate"], 1))  # interleave the workers
            await self.open_loop(timeline["start"] + phase, share)
        await asyncio.sleep(max(0.0, (self.send_until - time.monotonic_ns()) / NS))

        drain_started = time.monotonic_ns()
        # Each error frame stands for a message whose deliveries will never arrive.
        while (
            self.outstanding > self.stats["error_frames"] * self.k and time.monotonic_ns() < timeline["drain_deadline"]
        ):
            await asyncio.sleep(0.01)
        drained = (time.monotonic_ns() - drain_started) / NS

        for client in self.clients.values():
            client.close()
        pending = [c.closed for c in self.clients.values() if not c.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.spec["close_wait"])
        for client in self.clients.values():
            if client.transport is not None:
                client.transport.abort()

        sent = [got for c in self.clients.values() for got in c.got]
        self.stats["lost"] = sum(self.k - got.bit_count() for got in sent)
        self.stats["lost_messages"] = sum(got != self.full for got in sent)
        return {
            **self.stats,
            "latencies_ns": self.latencies,
            "open_loop_max_lag_ns": self.max_lag,
            "open_loop_late": self.late,
            "drain_s": drained,
            "client_cpu_window_s": cpu.get("window_end", 0.0) - cpu.get("window_start", 0.0),
            "client_cpu_total_s": cpu_seconds(),
            "error_samples": self.errors,
        }


def _worker_main(pipe, spec: dict) -> None:
    """A worker process: connect, report, wait for the timeline, run, report."""

    async def main() -> None:
        raise_nofile()
        worker = Worker(spec)
        await worker.connect_all()
        pipe.send(worker.stats)
        timeline = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        pipe.send(await worker.run(timeline))

    run_loop(main)


def percentile(sorted_values: list[int], q: float) -> int | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, int(q * len(sorted_values) + 0.5) - 1))]


def latency_summary(latencies_ns: list[int]) -> dict:
    """p50, p90, p99, p99.9 and max of latencies in ns, in µs; ``n`` of them."""
    values = sorted(latencies_ns)
    summary: dict = {"n": len(values)}
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)):
        summary[name] = _us(percentile(values, q))
    summary["max"] = _us(values[-1] if values else None)
    return summary


def worker_ids(clients: int, workers: int, senders: int | None, id_base: int) -> list[tuple[list[int], list | None]]:
    """Each worker's client ids (and fan-out senders): whole pairs, or a contiguous block and its share of senders."""
    if senders is None:
        pairs = range(id_base // 2, id_base // 2 + clients // 2)
        return [([cid for pair in pairs[i::workers] for cid in (2 * pair, 2 * pair + 1)], None) for i in range(workers)]
    bounds = [id_base + clients * i // workers for i in range(workers + 1)]
    blocks = [list(range(bounds[i], bounds[i + 1])) for i in range(workers)]
    return [(ids, ids[: senders // workers + (i < senders % workers)]) for i, ids in enumerate(blocks)]


def run(
    urls: list[str],
    clients: int = 1000,
    window: int = 4,
    rate: float | None = None,
    warmup: float = 2.0,
    duration: float = 20.0,
    settle: float = 1.0,
    drain: float = 30.0,
    workers: int = 2,
    max_pending: int = 64,
    connect_timeout: float = 20.0,
    close_wait: float = 5.0,
    sample=None,
    sample_every: float | None = None,
    senders: int | None = None,
    fanout: int = 1,
    id_base: int = 0,
    sources: int = 0,
) -> dict:
    """Run one load and return the merged report.

    ``urls``: client ``i`` connects to ``urls[i % len(urls)]`` (two servers put every pair
    across them). ``rate`` set means open loop at that many msg/s, else closed loop with
    ``window`` in flight per sender. ``senders`` set means fan-out: that many senders, each
    message to ``fanout`` targets. Client ids start at ``id_base`` (even); ``sources``:
    loopback source addresses to spread the clients over (0: the kernel's choice).
    ``sample()``, if given, is called at the start and the end of the measured window, and
    every ``sample_every`` seconds in between if set; its results, in order, are returned
    as ``samples`` (first and last: the window's edges).
    """
    if senders is None and (clients < 2 or clients % 2 or id_base % 2):
        raise ValueError("clients must be an even number >= 2 and id_base even (they send in pairs)")
    if senders is not None:
        workers = max(1, min(workers, senders, clients // max(fanout, 1)))
        fanout = min(fanout, clients // workers)
    else:
        workers, fanout = max(1, min(workers, clients // 2)), 1
    specs = [
        {
            "urls": urls,
            "ids": ids,
            "senders": sender_ids,
            "fanout": fanout,
            "index": index,
            "total_senders": senders or clients,
            "window": 0 if rate else window,
            "rate": rate or 0,
            "max_pending": max_pending,
            "connect_timeout": connect_timeout,
            "close_wait": close_wait,
            "sources": sources,
        }  # fmt: skip
        for index, (ids, sender_ids) in enumerate(worker_ids(clients, workers, senders, id_base))
    ]
    procs, pipes = spawn(_worker_main, specs)
    try:
        connect_started = time.monotonic()
        connected = [pipe.recv() for pipe in pipes]
        connect_s = time.monotonic() - connect_started
        if not any(c["connected"] for c in connected):
            settle = warmup = duration = drain = 0.0  # nobody to load: close at once and report
        start = time.monotonic_ns() + int(settle * NS)
        timeline = {"start": start, "window_start": start + int(warmup * NS)}
        timeline["window_end"] = timeline["window_start"] + int(duration * NS)
        timeline["drain_deadline"] = timeline["window_end"] + int(drain * NS)
        for pipe in pipes:
            pipe.send(timeline)
        at = [timeline["window_start"]]
        if sample_every:
            step = int(sample_every * NS)
            at += range(timeline["window_start"] + step, timeline["window_end"], step)
        at.append(timeline["window_end"])
        samples = []
        for when in at:
            time.sleep(max(0.0, (when - time.monotonic_ns()) / NS))
            samples.append(sample() if sample else None)
        reports = [pipe.recv() for pipe in pipes]
    finally:
        join(procs)
    merged = {name: sum(r[name] for r in reports) for name in COUNTERS}
    delivered = merged["delivered_in_window"]
    client_cpu = sum(r["client_cpu_window_s"] for r in reports)
    loop = f"open {rate:g}/s" if rate else f"closed w={window}"
    merged.update(
        load=f"fan-out {senders}×{fanout}, {loop}" if senders else loop,
        workers=workers,
        connect_s=round(connect_s, 3),
        connected_before_timeline=sum(c["connected"] for c in connected),
        window_s=duration,
        deliveries_per_s=delivered / duration if duration else 0.0,
        latency_us=latency_summary([ns for r in reports for ns in r["latencies_ns"]]),
        open_loop_max_lag_ms=max(r["open_loop_max_lag_ns"] for r in reports) / 1e6,
        open_loop_late=sum(r["open_loop_late"] for r in reports),
        drain_s=max(r["drain_s"] for r in reports),
        client_cpu_window_s=client_cpu,
        client_cores=client_cpu / duration if duration else None,
        client_cpu_us_per_delivery=client_cpu * 1e6 / delivered if delivered else None,
        client_cpu_total_s=sum(r["client_cpu_total_s"] for r in reports),
        error_samples=[e for r in reports for e in r["error_samples"]][:5],
        samples=samples,
    )
    return merged


def _us(ns: int | None) -> float | None:
    return None if ns is None else round(ns / 1000, 1)


def main() -> None:
    """Command line: one load against running servers, the report as JSON on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("urls", nargs="+", help="ws://HOST:PORT/ws (client i uses urls[i %% len(urls)])")
    parser.add_argument("-n", "--clients", type=int, default=1000)
    parser.add_argument("-w", "--window", type=int, default=4, help="closed loop: messages in flight per sender")
    parser.add_argument("-r", "--rate", type=float, help="open loop: total msg/s (overrides --window)")
    parser.add_argument("--senders", type=int, help="fan-out: this many senders (default: pairs)")
    parser.add_argument("-k", "--fanout", type=int, default=100, help="fan-out: targets per message")
    parser.add_argument("-d", "--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--drain", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    parser.add_argument("--sources", type=int, default=0, help="loopback source addresses (0: the kernel's)")
    args = parser.parse_args()
    report = run(
        args.urls, clients=args.clients, window=args.window, rate=args.rate, warmup=args.warmup,
        duration=args.duration, drain=args.drain, workers=args.workers, senders=args.senders,
        fanout=args.fanout, sources=args.sources,
    )  # fmt: skip
    report.pop("samples")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
