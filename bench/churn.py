"""``make churn``: clients that keep dropping and resuming, under steady load; nothing may be lost.

One relay process with delivery history (``REDIS_URL``), ``--clients`` relay.v1 clients in
pairs (``i`` sends to ``i ^ 1``) at ``--rate`` messages/s in total, each message with an
``id``. Every client, at random every ``--min-up``..``--max-up`` seconds, closes its
connection, stays away up to ``--max-down`` seconds (its partner keeps sending to it),
and reconnects with ``?since=<epoch>:<offset>`` of the last delivery it saw. After
``--duration`` seconds everyone is connected again and the run drains.

Exact accounting, after deduplication by offset (as a client does): every message the
client wrote is delivered to its target exactly once and in the order sent; ``lost``
(written, never delivered), ``duplicates`` (the same message at two offsets),
``out_of_order``, resumes that did not recover and error frames must all be 0. Acks are
counted (``unacked``: their sender had dropped the connection before the ack came).
Latency is reported for live deliveries, and for all (replays wait for the resume).
Exits 1 on any loss or fault. Results in ``bench/results/churn-*.json``.
"""

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.run import finish  # noqa: E402
from bench.servers import DEFAULT_REDIS_URL, RESULTS, SERVERS, Server, server_env  # noqa: E402

NS = 1_000_000_000
COUNTERS = (
    "sent", "acked", "unacked", "delivered", "lost", "lost_unacked", "duplicates", "out_of_order", "resumes",
    "not_recovered", "errors", "failed_connects", "unexpected_closes", "server_closes", "protocol_errors",
)  # fmt: skip


class Connection(loadgen.WebSocket):
    """One relay.v1 connection of a resuming client: its frames go to the client."""

    def __init__(self, client: "ChurnClient", host: str, port: int, path: str) -> None:
        super().__init__(client.stats, host, port, path, subprotocol="relay.v1")
        self.client = client

    def on_text(self, payload: bytes) -> None:
        self.client.on_frame(json.loads(payload))

    def on_lost(self) -> None:
        self.client.on_lost(self)

    def send(self, data: dict) -> None:
        self.send_text(json.dumps(data, separators=(",", ":")))


class ChurnClient:
    """A client id that sends to its partner, drops its connection now and then, and resumes."""

    def __init__(self, worker: "Worker", cid: int) -> None:
        self.worker = worker
        self.stats = worker.stats
        self.cid = cid
        self.partner = cid ^ 1
        self.connection: Connection | None = None
        self.position: tuple[str, int] | None = None  # (epoch, offset) of the last delivery
        self.sent: dict[int, int] = {}  # seq -> send time (ns), until acked
        self.seq = 0
        self.expected_next = 0  # the partner's next seq this client must receive
        self.ready = asyncio.Event()  # connected, and the resume (if any) announced

    @property
    def connected(self) -> bool:
        return self.connection is not None and self.connection.open and not self.connection.closing

    async def connect(self) -> bool:
        """Connect, resuming from the last delivery seen; True once the relay announced the resume."""
        spec = self.worker.spec
        url = urlsplit(spec["url"])
        since = f"{self.position[0]}:{self.position[1]}" if self.position else ""
        path = f"{url.path}?id={self.cid}&since={since}"
        self.ready.clear()
        timeout = spec.get("connect_timeout", 20)
        connection = await loadgen.open_socket(
            lambda: Connection(self, url.hostname, url.port, path),
            url.hostname, url.port, loadgen.source_address(self.cid, spec.get("sources", 0)), timeout,
        )  # fmt: skip
        if connection is not None:
            self.connection = connection
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
                return True
            except TimeoutError:
                if connection.transport is not None:
                    connection.transport.abort()
        self.stats["failed_connects"] += 1
        return False

    def on_lost(self, connection: Connection) -> None:
        """``connection`` ended; if it was the current one and we did not drop it, the worker decides what next."""
        if connection is self.connection:
            self.connection = None
            self.worker.on_lost(self, connection)

    async def drop(self) -> None:
        """Close the connection ourselves (1000) and wait for it to end."""
        connection = self.connection
        if connection is not None:
            self.connection = None
            connection.close()
            await connection.wait_closed(5)

    def send_next(self) -> None:
        if not self.connected:
            return
        now = time.monotonic_ns()
        self.connection.send(
            {"targets": [self.partner], "payload": {"from": self.cid, "seq": self.seq, "ts": now}, "id": self.seq}
        )
        self.sent[self.seq] = now
        self.worker.expected.add((self.cid, self.seq))
        self.seq += 1
        self.stats["sent"] += 1

    def on_frame(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "message":
            position = (frame["epoch"], frame["offset"])
            if self.position and position[0] == self.position[0] and position[1] <= self.position[1]:
                return  # already seen (deduplicated by offset)
            self.position = position
            self.worker.delivered(self, frame["payload"])
        elif kind == "ack":
            if self.sent.pop(frame["ref"], None) is not None:
                self.stats["acked"] += 1
                self.worker.acked.add((self.cid, frame["ref"]))
        elif kind == "recovered":
            if self.position is None:
                self.position = (frame["epoch"], frame["offset"])  # the first connection learns it
            else:
                self.stats["resumes"] += 1
                if not frame["recovered"]:
                    self.stats["not_recovered"] += 1
                    self.worker.samples.append(frame)
            self.ready.set()
        else:
            self.stats["errors"] += 1
            if len(self.worker.samples) < 5:
                self.worker.samples.append(frame)


class Worker:
    """One process's resuming clients: connect, churn, send, account.

    The accounting and the sending are shared with ``storm.py``, whose worker drives its
    clients differently (``run``) and records latency by time (``record_latency``).
    """

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.stats = dict.fromkeys(COUNTERS, 0)
        self.clients = {cid: ChurnClient(self, cid) for cid in spec["ids"]}
        self.received: dict[int, set[int]] = {cid: set() for cid in spec["ids"]}  # sender -> seqs delivered
        self.acked: set[tuple[int, int]] = set()
        self.expected: set[tuple[int, int]] = set()  # every (sender, seq) written to a socket
        self.live_latency: list[int] = []
        self.all_latency: list[int] = []
        self.samples: list[dict] = []
        self.measuring = False
        self.send_until = 0  # monotonic ns: the sending stops then

    def delivered(self, client: ChurnClient, payload: dict) -> None:
        """Account for one delivery to ``client`` (already deduplicated by offset)."""
        sender, seq = payload["from"], payload["seq"]
        got = self.received[sender]
        if seq in got:
            self.stats["duplicates"] += 1
            return
        got.add(seq)
        self.stats["delivered"] += 1
        # Behind one already delivered: out of order. Ahead of the next expected: a gap, which
        # ``lost`` and ``lost_unacked`` account for (a frame the sender wrote as its process
        # closed, and never got an ack for).
        if seq < client.expected_next:
            self.stats["out_of_order"] += 1
        client.expected_next = max(client.expected_next, seq + 1)
        if self.measuring:
            self.record_latency(client, time.monotonic_ns(), payload["ts"])

    def record_latency(self, client: ChurnClient, now: int, ts: int) -> None:
        """Keep one delivery's latency: among the live ones too if the client had finished resuming."""
        self.all_latency.append(now - ts)
        if client.ready.is_set():
            self.live_latency.append(now - ts)

    def on_lost(self, client: ChurnClient, connection: Connection) -> None:
        """``client``'s connection ended without ``drop()``: churn's clients reconnect on their own schedule."""

    async def churn(self, client: ChurnClient, until: int) -> None:
        spec = self.spec
        while time.monotonic_ns() < until:
            await asyncio.sleep(random.uniform(spec["min_up"], spec["max_up"]))
            if time.monotonic_ns() >= until:
                break
            await client.drop()
            await asyncio.sleep(random.uniform(0, spec["max_down"]))
            while not await client.connect():
                await asyncio.sleep(0.5)

    async def send_load(self, clients: list[ChurnClient], rate: float) -> None:
        """Send ``rate`` msg/s round-robin over ``clients`` until ``send_until``; one not connected skips its turn."""
        if not clients or rate <= 0:
            return
        interval = NS / rate
        scheduled, i = time.monotonic_ns(), 0
        while scheduled < self.send_until:
            now = time.monotonic_ns()
            while scheduled <= now:
                clients[i % len(clients)].send_next()
                scheduled += interval
                i += 1
            await asyncio.sleep(max(0.0, (scheduled - time.monotonic_ns()) / NS))

    async def connect_all(self, clients: list[ChurnClient], pending: int = 64) -> None:
        """First connections, ``pending`` at a time."""
        limit = asyncio.Semaphore(pending)

        async def first(client: ChurnClient) -> None:
            async with limit:
                await client.connect()

        await asyncio.gather(*(first(c) for c in clients))

    async def run(self) -> dict:
        spec = self.spec
        clients = list(self.clients.values())
        await self.connect_all(clients)
        self.send_until = until = time.monotonic_ns() + int(spec["duration"] * NS)
        self.measuring = True
        share = spec["rate"] * len(clients) / spec["total_clients"]
        await asyncio.gather(self.send_load(clients, share), *(self.churn(c, until) for c in clients))
        self.measuring = False
        return await self.finish()

    async def finish(self) -> dict:
        """Everyone back, wait for what is missing (up to ``drain`` s), close; the counters and latencies."""
        for client in self.clients.values():
            if not client.connected:
                await client.connect()
        deadline = time.monotonic() + self.spec["drain"]
        while time.monotonic() < deadline and self.missing():
            await asyncio.sleep(0.1)
        missing = self.missing()
        self.stats["unacked"] = sum(len(c.sent) for c in self.clients.values())
        self.stats["lost"] = len(missing)
        self.stats["lost_unacked"] = len(missing - self.acked)
        for client in self.clients.values():
            await client.drop()
        return {
            **self.stats,
            "live_latency": self.live_latency,
            "all_latency": self.all_latency,
            "samples": self.samples,
        }

    def missing(self) -> set[tuple[int, int]]:
        """Messages written to the relay and not delivered (yet): acked or not, since a frame
        written before a client's close is still read by the server."""
        return {(sender, seq) for sender, seq in self.expected if seq not in self.received[sender]}


def _worker_main(pipe, spec: dict) -> None:
    loadgen.raise_nofile()
    pipe.send(loadgen.run_loop(Worker(spec).run))


def percentiles(values: list[int]) -> dict:
    values = sorted(values)
    pick = loadgen.percentile
    return {name: loadgen._us(pick(values, q)) for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=SERVERS, default="daphne")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1000, help="messages/s in total")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--min-up", type=float, default=2.0)
    parser.add_argument("--max-up", type=float, default=6.0)
    parser.add_argument("--max-down", type=float, default=1.0)
    parser.add_argument("--drain", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    env = {**server_env(args.redis_url), "RELAY_RATE_LIMIT": "off"}
    server = Server(args.server, "relay", env, RESULTS / f"churn-{stamp}.log")
    try:
        server.wait_ready()
        print(
            f"churn: {args.server}, {args.clients} clients, {args.rate:g} msg/s, each away up to {args.max_down:g} s "
            f"every {args.min_up:g}-{args.max_up:g} s, for {args.duration:g} s ...",
            file=sys.stderr,
            flush=True,
        )
        specs = [
            {**vars(args), "url": server.url, "ids": ids, "total_clients": args.clients}
            for ids, _ in loadgen.worker_ids(args.clients, args.workers, None, 0)
        ]
        procs, pipes = loadgen.spawn(_worker_main, specs)
        reports = [pipe.recv() for pipe in pipes]
        loadgen.join(procs)
    finally:
        server.stop()
    totals = {name: sum(r[name] for r in reports) for name in COUNTERS}
    live = [ns for r in reports for ns in r["live_latency"]]
    every = [ns for r in reports for ns in r["all_latency"]]
    report = {
        **totals,
        "latency_live_us": percentiles(live),
        "latency_all_us": percentiles(every),
        "samples": [s for r in reports for s in r["samples"]][:10],
        "log_problems": server.problems()[:20],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    informative = ("sent", "acked", "unacked", "delivered", "resumes")
    failures = [f"{name}: {totals[name]}" for name in COUNTERS if name not in informative and totals[name]]
    if totals["resumes"] == 0:
        failures.append("no client resumed: the churn did not happen")
    return finish(f"churn-{stamp}.json", {"args": vars(args), "report": report}, failures)


if __name__ == "__main__":
    sys.exit(main())
