"""``make bench-storm``: a reconnect storm. Two relay processes behind one port; SIGTERM the one most clients are on.

For each server (``--servers``): the benchmark listens on one TCP port itself and both relay
processes accept from that socket (``--fd``), both with ``REDIS_URL`` (delivery history on).

1. Process A starts alone and ``--clients`` relay.v1 clients connect (all to A), spread over
   generator processes and loopback source addresses.
2. Process B starts; while A is stopped (SIGSTOP, so that only B accepts), ``--existing``
   clients connect, all to B; then A continues (SIGCONT).
3. Steady traffic: every client sends to its partner (``i ^ 1``, both on the same process),
   ``--rate`` msg/s in total over A's clients and ``--existing-rate`` over B's.
4. After ``--before`` s, SIGTERM to A: the relay closes every socket with 1001 and its
   clients reconnect, as relay.js does, after a full-jitter exponential backoff (a uniform
   delay in [0, min(20 s, 0.5 s × 2^attempt)]) with ``?since=<epoch>:<offset>``; the
   shared port hands them to B, which replays what they missed.
5. When all are back, ``--after`` s more of traffic, then the drain and the accounting of
   ``churn.py`` (its clients and workers are reused): every message written, after
   deduplication by offset, is delivered once and in order.

Reported: the time from the SIGTERM until every client of A had resumed on B, reconnect
attempts that failed, the close codes A's clients saw, B's CPU and handshake rate during
the storm, the latency of B's existing clients before, during and after the storm (p50,
p99), and messages lost (acked and never delivered: must be 0), never acked and never
delivered (written as A closed: the sender, which got no ack, knows), duplicated and out
of order. Exits 1 on a loss, a duplicate, a client that never came back, or a client
refused for good. Results in ``bench/results/storm-*.json``.
"""

import argparse
import array
import asyncio
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import churn, loadgen  # noqa: E402
from bench.run import finish, fmt  # noqa: E402
from bench.servers import (  # noqa: E402
    DEFAULT_REDIS_URL,
    RESULTS,
    SERVERS,
    Server,
    code_state,
    process_cpu,
    server_env,
    shared_listener,
    socket_count,
    summarize,
)

NS = loadgen.NS
#: relay.js's reconnect backoff: full jitter, from 0.5 s doubling up to 20 s.
BACKOFF_MIN, BACKOFF_MAX = 0.5, 20.0
#: Descriptors a server keeps besides its clients' sockets (Redis, the listener, its files).
SERVER_RESERVED_FDS = 1000


def backoff_delay(attempt: int) -> float:
    """Seconds before reconnect number ``attempt`` (0, 1, ...), as relay.js's ``backoffDelay``."""
    return random.uniform(0, min(BACKOFF_MAX, BACKOFF_MIN * 2**attempt))


class StormWorker(churn.Worker):
    """One process's clients of A (``storm``) and of B (``existing``): they reconnect whenever they are closed."""

    def __init__(self, spec: dict) -> None:
        super().__init__({**spec, "ids": spec["storm"] + spec["existing"]})
        self.storm = [self.clients[cid] for cid in spec["storm"]]
        self.existing = [self.clients[cid] for cid in spec["existing"]]
        self.existing_ids = set(spec["existing"])
        self.existing_latency = array.array("q")  # (receive time, latency) pairs, ns, of B's existing clients
        self.back: dict[int, int] = {}  # storm client -> when it had resumed after its drop (ns)
        self.dropped: set[int] = set()  # storm clients whose connection ended
        self.reconnecting: dict[int, asyncio.Task] = {}
        self.close_codes: dict[str, int] = {}
        self.attempts = 0  # reconnect attempts, successful or not
        self.all_back = asyncio.Event()

    def record_latency(self, client: churn.ChurnClient, now: int, ts: int) -> None:
        """Keep the existing clients' latencies with their time, to cut them into before, during and after."""
        if client.cid in self.existing_ids and client.ready.is_set():
            self.existing_latency.extend((now, now - ts))

    def on_lost(self, client: churn.ChurnClient, connection: churn.Connection) -> None:
        """A connection closed by the server (or dropped): reconnect with relay.js's backoff."""
        code = str(connection.close_code or 1006)
        self.close_codes[code] = self.close_codes.get(code, 0) + 1
        if client.cid not in self.existing_ids:
            self.dropped.add(client.cid)
        if client.cid not in self.reconnecting:
            self.reconnecting[client.cid] = asyncio.get_running_loop().create_task(self.reconnect(client))

    async def reconnect(self, client: churn.ChurnClient) -> None:
        """Back off, reconnect with ``since``; again, longer, until it works (or the run is over)."""
        attempt = 0
        while self.measuring:
            await asyncio.sleep(backoff_delay(attempt))
            attempt += 1
            self.attempts += 1
            if await client.connect():
                break
        del self.reconnecting[client.cid]
        if client.cid in self.dropped and client.connected:
            self.back[client.cid] = time.monotonic_ns()
            if len(self.back) == len(self.storm):
                self.all_back.set()

    async def connect_group(self, name: str) -> dict:
        """Connect the storm or the existing clients; how many made it."""
        clients = self.storm if name == "storm" else self.existing
        await self.connect_all(clients, self.spec["max_pending"])
        return {"connected": sum(c.connected for c in clients)}

    async def traffic(self, pipe, timeline: dict) -> dict:
        """Send until the parent says when to stop; tell it when every storm client is back; drain and report."""
        loop = asyncio.get_running_loop()
        self.measuring = True
        self.send_until = timeline["far"]  # until the parent sets the real end
        await asyncio.sleep(max(0.0, (timeline["start"] - time.monotonic_ns()) / NS))
        sending = asyncio.gather(
            self.send_load(self.storm, self.spec["rate"]), self.send_load(self.existing, self.spec["existing_rate"])
        )
        if self.storm:
            try:
                await asyncio.wait_for(self.all_back.wait(), timeline["back_deadline"] / NS - time.monotonic())
            except TimeoutError:
                pass
        pipe.send({"back": max(self.back.values(), default=None), "back_count": len(self.back)})
        self.send_until = await loop.run_in_executor(None, pipe.recv)
        await sending
        self.measuring = False
        for task in list(self.reconnecting.values()):
            task.cancel()
        report = await self.finish()
        return {
            **report, "existing_latency": self.existing_latency, "back": self.back, "close_codes": self.close_codes,
            "attempts": self.attempts, "storm_clients": len(self.storm), "dropped": len(self.dropped),
        }  # fmt: skip


def _worker_main(pipe, spec: dict) -> None:
    """A storm worker: connect the storm clients, then the existing ones, then the traffic, on the parent's word."""

    async def main() -> None:
        loadgen.raise_nofile()
        worker = StormWorker(spec)
        loop = asyncio.get_running_loop()
        for group in ("storm", "existing"):
            await loop.run_in_executor(None, pipe.recv)
            pipe.send(await worker.connect_group(group))
        timeline = await loop.run_in_executor(None, pipe.recv)
        pipe.send(await worker.traffic(pipe, timeline))

    loadgen.run_loop(main)


def ask(pipes: list, message) -> list:
    """Send ``message`` to every worker; their answers."""
    for pipe in pipes:
        pipe.send(message)
    return [pipe.recv() for pipe in pipes]


def window_latency(reports: list[dict], start: int, end: int) -> dict:
    """p50/p99 of the existing clients' deliveries received in [start, end) (monotonic ns)."""
    values = []
    for report in reports:
        pairs = report["existing_latency"]
        values += [pairs[i + 1] for i in range(0, len(pairs), 2) if start <= pairs[i] < end]
    return loadgen.latency_summary(values)


def exit_code(server: Server, timeout: float) -> int | None:
    """``server``'s exit status once it has exited, None if it still runs after ``timeout`` s."""
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def run_storm(kind: str, args, stamp: str) -> dict:
    """One storm under server ``kind``: A and B on one listening socket, A's clients moved to B by a SIGTERM."""
    env = server_env(args.redis_url)  # the relay's own limits: no client here comes near them
    listener = shared_listener()
    fd = listener.fileno()
    a = Server(kind, "relay", env, RESULTS / f"storm-{stamp}-{kind}-A.log", fd=fd)
    b = None
    total = args.clients + args.existing
    workers = max(args.workers, math.ceil(total / (args.nofile_limit - SERVER_RESERVED_FDS)))
    storm_ids = loadgen.worker_ids(args.clients, workers, None, 0)
    existing_ids = loadgen.worker_ids(args.existing, workers, None, args.clients)
    specs = [
        {
            "url": a.url,
            "storm": storm,
            "existing": existing,
            "sources": args.sources,
            "drain": args.drain,
            "max_pending": max(1, args.max_pending // workers),
            "connect_timeout": 30,
            "rate": args.rate * len(storm) / max(1, args.clients),
            "existing_rate": args.existing_rate * len(existing) / max(1, args.existing),
        }  # fmt: skip
        for (storm, _), (existing, _) in zip(storm_ids, existing_ids, strict=True)
    ]
    procs, pipes = [], []
    try:
        a.wait_ready()
        print(f"  {kind}: {args.clients:,} clients connecting to A ...", file=sys.stderr, flush=True)
        procs, pipes = loadgen.spawn(_worker_main, specs)
        started = time.monotonic()
        on_a = sum(r["connected"] for r in ask(pipes, "storm"))
        connect_a_s = time.monotonic() - started
        a_sockets = socket_count(a.pid)
        b = Server(kind, "relay", env, RESULTS / f"storm-{stamp}-{kind}-B.log", fd=fd)
        a.signal(signal.SIGSTOP)  # only B accepts while the existing clients connect
        try:
            b.wait_ready()
            on_b = sum(r["connected"] for r in ask(pipes, "existing"))
        finally:
            a.signal(signal.SIGCONT)
        b_sockets = socket_count(b.pid)
        print(
            f"  {kind}: A holds {a_sockets:,} sockets ({on_a:,} clients connected in {connect_a_s:.0f} s), B "
            f"{b_sockets:,} ({on_b:,} existing); traffic, then SIGTERM to A in {args.before:g} s ...",
            file=sys.stderr,
            flush=True,
        )
        start = time.monotonic_ns() + NS
        sigterm_at = start + int(args.before * NS)
        timeline = {"start": start, "far": sigterm_at + 3600 * NS, "back_deadline": sigterm_at + int(args.timeout * NS)}
        for pipe in pipes:
            pipe.send(timeline)
        time.sleep(max(0.0, (sigterm_at - time.monotonic_ns()) / NS))
        b_cpu = process_cpu(b.pid)
        a.signal(signal.SIGTERM)
        backs = [pipe.recv() for pipe in pipes]
        back_times = [r["back"] for r in backs if r["back"] is not None]
        all_back = max(back_times) if back_times else None
        storm_end = all_back or time.monotonic_ns()
        b_cpu = process_cpu(b.pid) - b_cpu  # not exact: B's CPU until the parent heard from every worker
        stop = time.monotonic_ns() + int(args.after * NS)
        for pipe in pipes:
            pipe.send(stop)
        reports = [pipe.recv() for pipe in pipes]
        a_exit = exit_code(a, 30)
    finally:
        loadgen.join(procs)
        a.stop()
        if b is not None:
            b.stop()
        listener.close()
    totals = {name: sum(r[name] for r in reports) for name in churn.COUNTERS}
    codes: dict[str, int] = {}
    for report in reports:
        for code, count in report["close_codes"].items():
            codes[code] = codes.get(code, 0) + count
    back_count = sum(r["back_count"] for r in backs)
    storm_s = (storm_end - sigterm_at) / NS
    return {
        "server": kind, "commands": {"A": a.command, "B": b.command}, "clients": args.clients,
        "existing": args.existing, "on_a": on_a, "on_b_before": on_b, "a_sockets": a_sockets, "b_sockets": b_sockets,
        "connect_a_s": connect_a_s, "a_exit_code": a_exit, "back": back_count,
        "all_back_s": storm_s if all_back else None, "b_cpu_s_storm": b_cpu,
        "b_cpu_ms_per_reconnect": b_cpu * 1e3 / back_count if back_count else None,
        "reconnects_per_s": back_count / storm_s if storm_s > 0 else None,
        "reconnect_attempts": sum(r["attempts"] for r in reports), "close_codes": codes,
        "latency_existing_before_us": window_latency(reports, start + NS, sigterm_at),
        "latency_existing_storm_us": window_latency(reports, sigterm_at, storm_end),
        "latency_existing_after_us": window_latency(reports, storm_end, stop),
        **totals, "lost_acked": totals["lost"] - totals["lost_unacked"],
        "samples": [s for r in reports for s in r["samples"]][:10],
        "log_problems_a": summarize(a.problems(whole=True)), "log_problems_b": summarize(b.problems()),
        "logs": [str(a.log_path), str(b.log_path)],
    }  # fmt: skip


def print_storm(result: dict) -> None:
    """The figures of one storm, a line each."""
    lat = {w: result[f"latency_existing_{w}_us"] for w in ("before", "storm", "after")}

    def p(window: str, q: str) -> str:
        value = lat[window][q]
        return fmt(value and value / 1000, ".1f")

    lines = [
        ("clients", f"{result['on_a']:,} on A ({result['a_sockets']:,} sockets), {result['on_b_before']:,} on B "
                    f"before the SIGTERM"),
        ("all back on B", f"{fmt(result['all_back_s'], '.1f')} s after the SIGTERM ({result['back']:,} of "
                          f"{result['clients']:,}; {result['reconnect_attempts']:,} attempts, "
                          f"{result['failed_connects']:,} failed)"),
        ("close codes seen", ", ".join(f"{code}: {n:,}" for code, n in sorted(result["close_codes"].items()))),
        ("B during the storm", f"{fmt(result['b_cpu_s_storm'], '.1f')} s CPU, "
                               f"{fmt(result['b_cpu_ms_per_reconnect'], '.2f')} ms per reconnect, "
                               f"{fmt(result['reconnects_per_s'], ',.0f')} reconnects/s"),
        ("existing p50 / p99 ms", f"before {p('before', 'p50')} / {p('before', 'p99')}, during the storm "
                                  f"{p('storm', 'p50')} / {p('storm', 'p99')} ({lat['storm']['n']:,} deliveries), "
                                  f"after {p('after', 'p50')} / {p('after', 'p99')}"),
        ("messages", f"{result['sent']:,} sent, {result['delivered']:,} delivered, {result['resumes']:,} resumes "
                     f"({result['not_recovered']} not recovered)"),
        ("lost", f"{result['lost_acked']} acked and never delivered; {result['lost_unacked']} never acked nor "
                 f"delivered (the sender got no ack)"),
        ("duplicated / out of order", f"{result['duplicates']} / {result['out_of_order']}"),
        ("log problems", f"A {sum(result['log_problems_a'].values()):,}, B {sum(result['log_problems_b'].values()):,} "
                         f"({', '.join(result['logs'])})"),
    ]  # fmt: skip
    print(f"{result['server']}:")
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"  {name.ljust(width)}  {value}")
    for process in ("a", "b"):
        for kind, count in list(result[f"log_problems_{process}"].items())[:5]:
            print(f"    {process.upper()} log, {count:,}×: {kind}")


def failures_of(result: dict) -> list[str]:
    """What makes the storm fail: loss, duplicates, clients that did not come back or were refused."""
    checks = {
        "lost (acked, never delivered)": result["lost_acked"],
        "duplicates": result["duplicates"],
        "out of order": result["out_of_order"],
        "not recovered": result["not_recovered"],
        "error frames": result["errors"],
        "not back": result["clients"] - result["back"],
        "not on A at the start": result["clients"] - result["on_a"],
        "not on B at the start": result["existing"] - result["on_b_before"],
    }
    return [f"{result['server']}: {name}: {value}" for name, value in checks.items() if value]


def default_clients(nofile_limit: int, existing: int) -> int:
    """As many clients as B can hold with its existing ones (20,000 at most, as issue 14 asks)."""
    return min(20_000, (nofile_limit - SERVER_RESERVED_FDS - existing) // 100 * 100)


def main() -> int:
    nofile_limit = loadgen.raise_nofile()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=SERVERS)
    parser.add_argument("--existing", type=int, default=300, help="clients on B before the storm")
    parser.add_argument("--clients", type=int, help="clients on A (default: what B can hold with --existing)")
    parser.add_argument("--rate", type=float, default=1000, help="msg/s in total over A's clients")
    parser.add_argument("--existing-rate", type=float, default=300, help="msg/s in total over B's existing clients")
    parser.add_argument("--before", type=float, default=10, help="seconds of traffic before the SIGTERM")
    parser.add_argument("--after", type=float, default=5, help="seconds of traffic after everyone is back")
    parser.add_argument("--timeout", type=float, default=180, help="max seconds for everyone to be back")
    parser.add_argument("--drain", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2, help="generator processes (more if the fd limit needs)")
    parser.add_argument("--sources", type=int, default=4, help="loopback source addresses, 127.0.0.2...")
    parser.add_argument("--max-pending", type=int, default=100, help="first connections: handshakes at once")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    args = parser.parse_args()
    args.nofile_limit = nofile_limit
    args.clients = args.clients or default_clients(nofile_limit, args.existing)
    if args.clients % 2 or args.existing % 2:
        parser.error("--clients and --existing must be even (they send in pairs)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    print(
        f"storm: {args.clients:,} clients on A, {args.existing:,} on B; RLIMIT_NOFILE {nofile_limit:,} per process "
        f"(hard limit); REDIS_URL={args.redis_url}",
        file=sys.stderr,
    )
    code = code_state()
    results = [run_storm(kind, args, stamp) for kind in args.servers]
    print()
    for result in results:
        print_storm(result)
    failures = [failure for result in results for failure in failures_of(result)]
    return finish(f"storm-{stamp}.json", {"args": vars(args), "code": code, "results": results}, failures)


if __name__ == "__main__":
    sys.exit(main())
