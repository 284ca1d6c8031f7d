"""The load generator: N WebSocket clients in pairs, with exact accounting of every message.

Client ``i`` connects to ``ws://HOST:PORT/ws?id=i`` and sends to its partner ``i ^ 1``
frames ``{"targets": [i ^ 1], "payload": {"from": i, "seq": k, "ts": T}}``; ``T`` is
CLOCK_MONOTONIC in ns, which every process on the machine shares, so latency is simply
receive time minus ``T``.

- **Closed loop** (``window=W``): every client keeps W messages in flight; each delivery
  of one of its messages releases the next.
- **Open loop** (``rate=R``): R messages/s in total, round-robin over the clients, and
  ``T`` is the *scheduled* send time, so a stalled server shows up as latency instead of
  as fewer messages sent (no coordinated omission).

Timeline: connect everyone, settle, warm up (sending, not measured), the measured window,
then drain (no new sends; wait until every message sent has arrived, or a timeout), close.
Throughput counts deliveries received in the window; latency covers the messages sent in
the window, wherever they arrived. After the drain every message sent is exactly one of
delivered or lost, and every frame received is a delivery, a duplicate, misdelivered (to
a client it was not addressed to), an error frame from the server, or a bad payload.

The clients are spread over a few worker processes (a pair always lives in one worker, so
accounting needs no cross-process traffic). Each worker is one asyncio loop driving raw
sockets with minimal RFC 6455 framing (masked client frames), which costs a fraction of a
WebSocket library per message; its CPU is measured and reported, since on a small machine
the generator competes with the server.

Library use: ``run(urls, ...)`` returns the merged report. Command line:
``python -m bench.loadgen ws://127.0.0.1:8000/ws -n 1000 -w 4 -d 20`` prints it as JSON.
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
import struct
import time
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
NS = 1_000_000_000
#: Open loop: a message sent more than this long after its scheduled time counts as late.
LATE_NS = 10_000_000
#: Counters every worker reports; the parent sums them.
COUNTERS = (
    "clients", "connected", "failed_connects", "sent", "sent_in_window", "delivered",
    "delivered_in_window", "lost", "duplicates", "misdelivered", "error_frames", "bad_payload",
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


class Client(asyncio.Protocol):
    """One WebSocket connection: handshake, frame parsing, and its own send counters."""

    def __init__(self, worker: "Worker", cid: int, host: str, port: int, path: str) -> None:
        self.worker = worker
        self.cid = cid
        self.partner = cid ^ 1
        key = base64.b64encode(os.urandom(16))
        self.accept_key = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.request = (
            f"GET {path}{'&' if '?' in path else '?'}id={cid} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self.open = False
        self.closing = False  # we sent a close frame
        self.buffer = b""
        self.fragments: list[bytes] | None = None
        self.seq = 0  # messages sent; seq numbers 0..seq-1
        self.received = bytearray()  # per seq of *this* client's messages: delivered yet?

    # -- asyncio callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:
        self.transport = None
        if not self.opened.done():
            self.opened.set_result(False)
        elif not self.closing:
            self.worker.stats["unexpected_closes"] += 1
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
                self.worker.stats["protocol_errors"] += 1
                self.transport.abort()
                return
            self.frame(fin, opcode, payload)

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
                self.worker.on_message(self, payload)
            else:
                self.fragments = [payload]
        elif opcode == 0 and self.fragments is not None:
            self.fragments.append(payload)
            if fin:
                message, self.fragments = b"".join(self.fragments), None
                self.worker.on_message(self, message)
        elif opcode == 9:
            self.transport.write(mask_frame(0xA, payload))
        elif opcode == 8:
            if not self.closing:
                self.worker.stats["server_closes"] += 1
                self.close()

    def send_next(self, ts: int) -> None:
        """Send this client's next message to its partner, stamped ``ts``."""
        if self.transport is None:
            return
        seq = self.seq
        self.seq += 1
        self.received.append(0)
        text = f'{{"targets":[{self.partner}],"payload":{{"from":{self.cid},"seq":{seq},"ts":{ts}}}}}'
        self.transport.write(mask_frame(1, text.encode()))
        self.worker.on_sent(ts)

    def close(self) -> None:
        """Start the closing handshake with 1000 (normal closure)."""
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.write(mask_frame(8, (1000).to_bytes(2, "big")))


class Worker:
    """One process's clients: connects them, drives the load, counts everything."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.stats = dict.fromkeys(COUNTERS, 0)
        self.clients: dict[int, Client] = {}
        self.latencies = array.array("q")  # ns; compact for long runs (a soak keeps ~10^6)
        self.outstanding = 0  # sent, not yet delivered
        self.errors: list[str] = []
        self.max_lag = 0
        self.late = 0  # open loop: messages sent more than LATE_NS after their scheduled time
        self.window = (0, 0)  # measured window, monotonic ns
        self.send_until = 0

    async def connect_all(self) -> None:
        """Open every client's connection, a bounded number of handshakes at a time."""
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(self.spec["max_pending"])

        async def connect(cid: int) -> None:
            url = urlsplit(self.spec["urls"][cid % len(self.spec["urls"])])
            path = url.path + (f"?{url.query}" if url.query else "")
            async with limit:
                client = Client(self, cid, url.hostname, url.port, path)
                try:
                    await asyncio.wait_for(
                        loop.create_connection(lambda: client, url.hostname, url.port), self.spec["connect_timeout"]
                    )
                    ok = await asyncio.wait_for(client.opened, self.spec["connect_timeout"])
                except (TimeoutError, OSError):
                    ok = False
                if ok:
                    self.clients[cid] = client
                else:
                    if client.transport is not None:
                        client.transport.abort()
                    self.stats["failed_connects"] += 1

        await asyncio.gather(*(connect(cid) for cid in self.spec["ids"]))
        self.stats["clients"] = len(self.spec["ids"])
        self.stats["connected"] = len(self.clients)

    def on_sent(self, ts: int) -> None:
        self.outstanding += 1
        self.stats["sent"] += 1
        if self.window[0] <= ts < self.window[1]:
            self.stats["sent_in_window"] += 1

    def on_message(self, client: Client, payload: bytes) -> None:
        """Account for one frame received by ``client``; in closed loop, send the next."""
        now = time.monotonic_ns()
        stats = self.stats
        message = None
        try:
            message = json.loads(payload)
            source, seq, ts = message["from"], message["seq"], message["ts"]
            sender = self.clients[source] if source == client.partner else None
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
        if sender is None or not 0 <= seq < len(sender.received):
            stats["misdelivered"] += 1
            return
        if sender.received[seq]:
            stats["duplicates"] += 1
            return
        sender.received[seq] = 1
        self.outstanding -= 1
        stats["delivered"] += 1
        start, end = self.window
        if start <= now < end:
            stats["delivered_in_window"] += 1
        if start <= ts < end:
            self.latencies.append(now - ts)
        if self.spec["window"] and now < self.send_until:
            sender.send_next(now)

    async def open_loop(self, start: int, rate: float) -> None:
        """Send ``rate`` msg/s round-robin over the clients from ``start`` to ``send_until``."""
        senders = [c for c in self.clients.values() if c.partner in self.clients]
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
            loop.call_at(timeline[name] / NS, lambda name=name: cpu.__setitem__(name, sum(os.times()[:2])))

        await asyncio.sleep(max(0.0, (timeline["start"] - time.monotonic_ns()) / NS))
        if self.spec["window"]:
            for client in self.clients.values():
                if client.partner in self.clients:
                    for _ in range(self.spec["window"]):
                        client.send_next(time.monotonic_ns())
        else:
            share = self.spec["rate"] * len(self.spec["ids"]) / self.spec["total_clients"]
            phase = int(self.spec["index"] * NS / max(self.spec["rate"], 1))  # interleave the workers
            await self.open_loop(timeline["start"] + phase, share)
        await asyncio.sleep(max(0.0, (self.send_until - time.monotonic_ns()) / NS))

        drain_started = time.monotonic_ns()
        # Each error frame stands for a message that will never arrive.
        while self.outstanding > self.stats["error_frames"] and time.monotonic_ns() < timeline["drain_deadline"]:
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

        self.stats["lost"] = sum(len(c.received) - sum(c.received) for c in self.clients.values())
        return {
            **self.stats,
            "latencies_ns": self.latencies,
            "open_loop_max_lag_ns": self.max_lag,
            "open_loop_late": self.late,
            "drain_s": drained,
            "client_cpu_window_s": cpu.get("window_end", 0.0) - cpu.get("window_start", 0.0),
            "client_cpu_total_s": sum(os.times()[:2]),
            "error_samples": self.errors,
        }


def _worker_main(pipe, spec: dict) -> None:
    """A worker process: connect, report, wait for the timeline, run, report."""

    async def main() -> None:
        worker = Worker(spec)
        await worker.connect_all()
        pipe.send(worker.stats)
        timeline = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        pipe.send(await worker.run(timeline))

    asyncio.run(main())


def percentile(sorted_values: list[int], q: float) -> int | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, int(q * len(sorted_values) + 0.5) - 1))]


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
) -> dict:
    """Run one load and return the merged report.

    ``urls``: client ``i`` connects to ``urls[i % len(urls)]`` (two servers put every pair
    across them). ``rate`` set means open loop at that many msg/s, else closed loop with
    ``window`` in flight per client. ``sample()``, if given, is called at the start and
    the end of the measured window, and every ``sample_every`` seconds in between if set;
    its results, in order, are returned as ``samples`` (first and last: the window's edges).
    """
    if clients < 2 or clients % 2:
        raise ValueError("clients must be an even number >= 2 (they send in pairs)")
    workers = max(1, min(workers, clients // 2))
    ctx = multiprocessing.get_context("spawn")
    pairs = range(clients // 2)
    procs, pipes = [], []
    for index in range(workers):
        ids = [cid for pair in pairs[index::workers] for cid in (2 * pair, 2 * pair + 1)]
        spec = {
            "urls": urls, "ids": ids, "index": index, "total_clients": clients,
            "window": 0 if rate else window, "rate": rate or 0, "max_pending": max_pending,
            "connect_timeout": connect_timeout, "close_wait": close_wait,
        }  # fmt: skip
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child_end, spec), daemon=True)
        proc.start()
        procs.append(proc)
        pipes.append(parent_end)
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
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    merged = {name: sum(r[name] for r in reports) for name in COUNTERS}
    latencies = sorted(ns for r in reports for ns in r["latencies_ns"])
    delivered = merged["delivered_in_window"]
    client_cpu = sum(r["client_cpu_window_s"] for r in reports)
    merged.update(
        load=f"open {rate:g}/s" if rate else f"closed w={window}",
        workers=workers,
        connect_s=round(connect_s, 3),
        connected_before_timeline=sum(c["connected"] for c in connected),
        window_s=duration,
        deliveries_per_s=delivered / duration if duration else 0.0,
        latency_us={
            "n": len(latencies),
            "p50": _us(percentile(latencies, 0.50)),
            "p90": _us(percentile(latencies, 0.90)),
            "p99": _us(percentile(latencies, 0.99)),
            "p999": _us(percentile(latencies, 0.999)),
            "max": _us(latencies[-1] if latencies else None),
        },
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
    parser.add_argument("-w", "--window", type=int, default=4, help="closed loop: messages in flight per client")
    parser.add_argument("-r", "--rate", type=float, help="open loop: total msg/s (overrides --window)")
    parser.add_argument("-d", "--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--drain", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    args = parser.parse_args()
    report = run(
        args.urls, clients=args.clients, window=args.window, rate=args.rate,
        warmup=args.warmup, duration=args.duration, drain=args.drain, workers=args.workers,
    )  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main()
