"""``make bench``: the relay against a raw ASGI floor, under the same server, with the same load, in one run.

For each server (``--servers``, default daphne and uvicorn, started as ``bench/servers.py``
says) and each target in turn — ``floor`` (``bench.floor:application``), then the relay
(``relayproject.asgi:application`` with ``REDIS_URL``) as ``relay`` (delivery history on,
the default), ``relay-no-history``, ``relay-async-handler`` (one async no-op message
handler) and ``relay-orm-handler`` (one sync handler doing one ORM query per frame) — it
starts the server on a free port and runs the modes:

- ``closed``: 1,000 clients in pairs, 4 messages in flight each; CPU µs per delivery;
- ``open``: the same clients, 2,000 msg/s in total at fixed times; CPU µs per delivery;
- ``fanout``: 10 senders, each message to 100 targets, 1 in flight; CPU µs per delivery;
- ``handshake``: 2,000 connections opened (100 handshakes pending) and closed, in cycles
  for 10 s; CPU ms per handshake, handshakes/s, handshake latency;
- ``idle``: on a fresh server, RSS before and after 5,000 idle connections, KB per connection;
- ``scale`` (not by default: ``make bench-scale``): on a fresh server, as many idle
  connections as one process can hold (the file descriptor limit), its RSS, the handshake
  rate, and the p99 of a probe pair exchanging messages while they are held.

The relay's variants run the per-frame modes (closed, open) only. Server CPU is
utime+stime of the server process over the measured part (``/proc/PID/stat``), plus
Redis's own CPU (``INFO cpu``) for the relay. Then it measures what history costs in Redis
memory (``bench/history_memory.py``). It prints the tables, relay ÷ floor for each server
and mode, the bars (yes/NO), and writes everything as JSON to ``bench/results/``. Exits 1
if any message was lost, duplicated or misdelivered, the server answered with an error
frame, or any client failed to connect or was disconnected.

``--processes 2`` adds a run of two relay processes sharing Redis, every pair split across
them (all traffic crosses processes), reported as ``relay-x2``.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.pool import Pool  # noqa: E402
from bench.servers import (  # noqa: E402
    APPS,
    DEFAULT_REDIS_URL,
    RESULTS,
    SERVERS,
    Server,
    code_state,
    cpu_sample,
    free_port,
    process_rss_kb,
    server_env,
    socket_count,
    summarize,
)

#: The relay's configurations measured against the floor: target -> environment of its servers.
VARIANTS = {
    "relay": {},  # with Redis, delivery history is on by default
    "relay-no-history": {"RELAY_HISTORY": "0"},
    "relay-async-handler": {"DJANGO_SETTINGS_MODULE": "bench.site_code_settings", "BENCH_HANDLER": "async"},
    "relay-orm-handler": {"DJANGO_SETTINGS_MODULE": "bench.site_code_settings", "BENCH_HANDLER": "orm"},
}
TARGETS = ["floor", *VARIANTS]
#: Modes with a message load, measured in CPU per delivery.
TRAFFIC_MODES = ("closed", "open", "fanout")
MODES = (*TRAFFIC_MODES, "handshake", "idle", "scale")
DEFAULT_MODES = ("closed", "open", "fanout", "handshake", "idle")
#: Modes the relay's variants (handlers, no history) run: they differ per frame only.
FRAME_MODES = ("closed", "open")
#: Modes measured on a server of their own, freshly started: memory freed by an earlier
#: load stays in the process and would be reused by the new connections, unseen.
FRESH_MODES = ("idle", "scale")
#: The relay's limits, raised so that no load here is refused by them while their code still
#: runs on every frame, as in production: frames per second per connection (a fan-out sender
#: sends about the default 50/s, a closed-loop client under uvicorn ~40), and bytes per second
#: a client id may store in streams (a fan-out message to 100 targets counts ~110 KB against
#: the default 64 KiB/s, after a 2 MiB burst).
BENCH_ENV = {"RELAY_RATE_LIMIT": "100000/s", "RELAY_HISTORY_RATE": str(10**9)}
#: The production server, whose figures the issue's bars are about.
PRODUCTION_SERVER = "uvicorn"
#: The bars (one relay process with Redis): relay ÷ floor with history in the closed loop,
#: without history in both loops, p99 in open loop; an async no-op handler's extra CPU.
MAX_HISTORY_CLOSED_RATIO, MAX_RATIO, MAX_OPEN_P99_MS, MAX_HANDLER_EXTRA = 1.6, 2.0, 20.0, 0.10
#: The bars of the production server (issue 14): relay (history on) ÷ floor, per mode.
PRODUCTION_BARS = {"handshake": 1.3, "idle": 1.15, "closed": 1.2, "open": 1.3, "fanout": 1.15}
#: Seconds to let a server finish handling the last load's disconnects before the next
#: load or the shutdown (which would kill the application instances still at it).
AFTER_LOAD = 2.0
#: Seconds after closing a handshake cycle's connections, for the server to finish the
#: disconnects before the next cycle's CPU is counted.
QUIET = 0.5
#: Other work on the machine above this many cores makes a run's throughput and latency suspect.
BUSY_CORES = 0.25
#: Client ids of each mode's connections, apart from the traffic modes' 0..N-1 (and each other's).
HANDSHAKE_IDS, IDLE_IDS, WARM_IDS, PROBE_IDS = 1_000_000, 2_000_000, 3_000_000, 4_000_000
#: Connections opened and closed before memory or handshakes are measured: the first ones
#: pay for what the server sets up lazily (imports, Redis connections, caches).
WARM_CONNECTIONS = 50
#: Report fields that must all be zero for a run to pass.
FAILURES = (
    "lost", "duplicates", "misdelivered", "error_frames", "bad_payload", "protocol_errors",
    "failed_connects", "unexpected_closes", "server_closes",
)  # fmt: skip
#: The same, for the modes that only connect (handshake, idle, scale).
CONNECT_FAILURES = (
    "failed_connects",
    "unexpected_closes",
    "server_closes",
    "protocol_errors",
    "text_frames",
    "dropped",
)


def migrated_database(stamp: str) -> str:
    """A fresh SQLite database for the relay's servers (a handler variant queries it)."""
    url = f"sqlite:///{RESULTS / f'{stamp}-db.sqlite3'}"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT, env=server_env("", url), check=True, timeout=120,
    )  # fmt: skip
    return url


def add_cpu(report: dict, start: dict, end: dict) -> None:
    """Add to a load's ``report`` the CPU used between two ``cpu_sample()``s at its window's edges.

    For the server, Redis, and ``other`` (everything else the machine ran besides them and the
    generator: other users' work competing with ours): seconds, µs per delivery in the window
    and cores; plus ``cpu_us_per_delivery``, what serving cost (server + Redis).
    """
    delivered, window = report["delivered_in_window"], report["window_s"]
    cpu = cpu_used(start, end, report["client_cpu_window_s"])
    shards = [cpu.pop(part) for part in sorted(cpu) if part.startswith("redis") and part != "redis"]
    if shards:  # each shard's Redis CPU per delivery
        report["redis_shard_cpu_us_per_delivery"] = [s * 1e6 / delivered if delivered else None for s in shards]
    for part, seconds in cpu.items():
        report[f"{part}_cpu_s"] = seconds
        report[f"{part}_cpu_us_per_delivery"] = seconds * 1e6 / delivered if delivered else None
        report[f"{part}_cores"] = seconds / window if window else None
    served = [p for p in ("server", "redis") if p in cpu]
    report["cpu_us_per_delivery"] = sum(report[f"{p}_cpu_us_per_delivery"] or 0 for p in served) or None


def cpu_used(start: dict, end: dict, generator_s: float) -> dict:
    """CPU seconds between two ``cpu_sample()``s: server, Redis, ``other`` (the machine but them and the generator)."""
    cpu = {part: end[part] - start[part] for part in start}
    cpu["other"] = cpu.pop("machine") - cpu["server"] - cpu.get("redis", 0) - generator_s
    return cpu


def run_target(
    kind: str,
    name: str,
    app: str,
    processes: int,
    args,
    stamp: str,
    extra_env: dict | None = None,
    cwd: Path = ROOT,
    redis_urls: list[str] | None = None,
    modes: tuple[str, ...] | None = None,
) -> dict:
    """Run ``modes`` against ``processes`` servers of ``kind`` serving ``app`` from ``cwd``.

    The modes that need a fresh server (``FRESH_MODES``) get one each; the others share one.
    ``redis_urls``: the Redis servers (shards) of this target, instead of ``--redis-url``.
    """
    redis_urls = redis_urls or ([args.redis_url] if args.redis_url else [])
    env = {
        **server_env(",".join(redis_urls), args.database_url),
        **BENCH_ENV,
        **(extra_env or {}),
    }
    uses_redis = app == "relay" and bool(redis_urls)
    modes = tuple(m for m in args.modes if modes is None or m in modes)
    shared = [m for m in modes if m not in FRESH_MODES]
    groups = ([shared] if shared else []) + [[m] for m in modes if m in FRESH_MODES]
    loads, logs, problems, modules = [], [], [], {}
    for group in groups:
        label = "-".join(group) if group != shared else "loads"
        servers = [
            Server(kind, app, env, RESULTS / f"{stamp}-{kind}-{name}-{label}-{i}.log", cwd) for i in range(processes)
        ]
        try:
            for server in servers:
                server.wait_ready()
            modules = servers[0].modules()
            if not all(modules.values()):
                print(f"  warning: {kind} runs without {modules}: see {servers[0].log_path}", file=sys.stderr)
            pids = [s.pid for s in servers]
            sample = lambda pids=pids: cpu_sample(pids, redis_urls if uses_redis else [])  # noqa: E731
            for mode in group:
                print(f"  {kind} {name}: {mode} ...", file=sys.stderr, flush=True)
                loads.append({"mode": mode, **MODE_RUNNERS[mode](servers, args, sample, uses_redis)})
                time.sleep(AFTER_LOAD)
        finally:
            for server in servers:
                server.stop()
        logs += [str(s.log_path) for s in servers]
        problems += [line for s in servers for line in s.problems()]
    return {
        "server": kind, "target": name, "app": APPS[app], "processes": processes, "redis": uses_redis,
        "env": extra_env or {}, "command": servers[0].command if groups else None, "modules": modules,
        "logs": logs, "log_problems": len(problems), "log_problem_kinds": summarize(problems), "loads": loads,
    }  # fmt: skip


def traffic_load(mode: str):
    """The runner of a message load (closed, open, fan-out): loadgen against the servers, CPU per delivery."""

    def run(servers: list[Server], args, sample, uses_redis: bool) -> dict:
        shape = {
            "closed": {"window": args.window},
            "open": {"rate": args.rate},
            "fanout": {"senders": args.fanout_senders, "fanout": args.fanout_targets, "window": args.fanout_window},
        }[mode]
        report = loadgen.run(
            [s.url for s in servers], clients=args.clients, warmup=args.warmup, duration=args.duration,
            drain=args.drain, workers=args.workers, sample=sample, **shape,
        )  # fmt: skip
        start, end = report.pop("samples")
        add_cpu(report, start, end)
        return report

    return run


def warm_up(url: str) -> None:
    """Open and close a few connections, so that what the server sets up lazily is not measured."""
    with Pool(url, WARM_CONNECTIONS, id_base=WARM_IDS) as pool:
        pool.connect()
        pool.close()


def handshake_load(servers: list[Server], args, sample, uses_redis: bool) -> dict:
    """Connections opened and closed in cycles: server (+ Redis) CPU per handshake, rate, latency.

    CPU is counted separately while the connections open (``cpu_ms_per_handshake``, the
    bar's figure, what ``wsbench idle`` reports) and while they close (``close_cpu_ms``).
    """
    url = servers[0].url
    warm_up(url)
    phases = {"open": [], "close": []}  # per cycle: cpu_used() of each phase
    handshakes = 0
    connect_s = client_s = 0.0
    latencies: list[int] = []
    faults = dict.fromkeys(CONNECT_FAILURES, 0)
    with Pool(url, args.handshake_clients, id_base=HANDSHAKE_IDS, max_pending=args.max_pending) as pool:
        started = time.monotonic()
        first = before = sample()
        while time.monotonic() - started < args.handshake_duration:
            opened = pool.connect()
            middle = sample()
            done = pool.close()
            time.sleep(QUIET)
            after = sample()
            phases["open"].append(cpu_used(before, middle, opened["client_cpu_s"]))
            phases["close"].append(cpu_used(middle, after, done["client_cpu_s"]))
            handshakes += opened["handshakes"]
            connect_s += opened["elapsed_s"]
            client_s += opened["client_cpu_s"] + done["client_cpu_s"]
            latencies += opened["latencies_ns"]
            before = after
        for name in faults:
            faults[name] = done.get(name, 0)
        elapsed = time.monotonic() - started
    total = cpu_used(first, before, client_s)
    served = ("server", "redis") if uses_redis else ("server",)

    def per(phase: str, part: str) -> float | None:
        """CPU ms of ``part`` (server, redis) in ``phase`` (open, close) per handshake."""
        if not handshakes or part not in phases[phase][0]:
            return None
        return sum(p[part] for p in phases[phase]) * 1e3 / handshakes

    return {
        "load": f"{args.handshake_clients:,} open+close, {args.max_pending} pending", "cycles": len(phases["open"]),
        "handshakes": handshakes, "elapsed_s": elapsed, "handshakes_per_s": handshakes / connect_s if connect_s else 0,
        "cpu_ms_per_handshake": sum(per("open", p) or 0 for p in served) or None,
        "server_cpu_ms_per_handshake": per("open", "server"), "redis_cpu_ms_per_handshake": per("open", "redis"),
        "close_cpu_ms": sum(per("close", p) or 0 for p in served) or None,
        "lifecycle_cpu_ms": sum(total.get(p, 0.0) for p in served) * 1e3 / handshakes if handshakes else None,
        "handshake_latency_us": loadgen.latency_summary(latencies), "client_cores": client_s / elapsed,
        "other_cores": total["other"] / elapsed, **faults,
    }  # fmt: skip


def hold_connections(server: Server, clients: int, args, sample, id_base: int, **pool_args) -> tuple:
    """Connect ``clients`` idle connections to a fresh ``server``, let them settle; memory and handshake figures.

    Returns the report and the open pool (the caller closes it).
    """
    warm_up(server.url)
    time.sleep(1)  # the warm-up's disconnects
    rss_before = process_rss_kb(server.pid)
    pool = Pool(server.url, clients, id_base=id_base, max_pending=args.max_pending, **pool_args)
    try:
        start = sample()
        opened = pool.connect()
        end = sample()
        time.sleep(args.settle)
        held = pool.status()
        rss_after = process_rss_kb(server.pid)
        sockets = socket_count(server.pid)
    except BaseException:
        pool.stop()
        raise
    cpu = cpu_used(start, end, opened["client_cpu_s"])
    connected = opened["connected"]
    served = cpu["server"] + cpu.get("redis", 0.0)
    report = {
        "connections": connected, "held": held["open"], "server_sockets": sockets, "workers": pool.workers,
        "rss_before_kb": rss_before, "rss_after_kb": rss_after,
        "rss_kb_per_connection": (rss_after - rss_before) / connected if connected else None,
        "connect_s": opened["elapsed_s"], "handshakes_per_s": connected / opened["elapsed_s"],
        "cpu_ms_per_handshake": served * 1e3 / connected if connected else None,
        "handshake_latency_us": opened["handshake_latency_us"], "other_cores": cpu["other"] / opened["elapsed_s"],
        **{name: held.get(name, 0) for name in CONNECT_FAILURES}, "dropped": connected - held["open"],
    }  # fmt: skip
    return report, pool


def idle_load(servers: list[Server], args, sample, uses_redis: bool) -> dict:
    """RSS per idle connection: ``--idle-clients`` connections held on a fresh server."""
    report, pool = hold_connections(servers[0], args.idle_clients, args, sample, IDLE_IDS)
    with pool:
        pool.close()
    return {"load": f"{args.idle_clients:,} idle", **report}


def probe(server: Server, args) -> dict:
    """Two clients on ``server`` exchanging ``--probe-rate`` msg/s: latency and accounting."""
    report = loadgen.run(
        [server.url], clients=2, rate=args.probe_rate, warmup=1, duration=args.probe_duration, drain=10,
        workers=1, id_base=PROBE_IDS,
    )  # fmt: skip
    report.pop("samples")
    return report


def scale_load(servers: list[Server], args, sample, uses_redis: bool) -> dict:
    """As many idle connections as fit: RSS, handshake rate, and a probe pair's latency while they are held."""
    server = servers[0]
    alone = probe(server, args)
    report, pool = hold_connections(
        server, args.scale_clients, args, sample, IDLE_IDS, sources=args.sources, workers=args.scale_workers
    )
    with pool:
        loaded = probe(server, args)
        after = pool.status()  # the connections must still all be there
        report.update({name: after.get(name, 0) for name in CONNECT_FAILURES}, held=after["open"])
        report["dropped"] = report["connections"] - after["open"]
        pool.close()
    return {
        "load": f"{args.scale_clients:,} idle + probe pair", **report, "nofile_limit": args.nofile_limit,
        "probe_alone": alone, "probe_held": loaded,
        "probe_faults": {k: loaded[k] + alone[k] for k in FAILURES if loaded[k] + alone[k]},
    }  # fmt: skip


MODE_RUNNERS = {
    **{mode: traffic_load(mode) for mode in TRAFFIC_MODES},
    "handshake": handshake_load,
    "idle": idle_load,
    "scale": scale_load,
}


def run_sharded(kind: str, args, stamp: str) -> list[dict]:
    """``--processes`` relay processes on one private Redis, then on ``--shards`` of them."""
    processes = max(args.processes, 2)
    results = []
    for count in (1, args.shards):
        redis_servers = [PrivateRedis(RESULTS / f"{stamp}-redis-{count}-{i}.log") for i in range(count)]
        try:
            name = f"relay-x{processes}-{count}redis"
            results.append(
                run_target(
                    kind,
                    name,
                    "relay",
                    processes,
                    args,
                    stamp,
                    {},
                    redis_urls=[r.url for r in redis_servers],
                    modes=FRAME_MODES,
                )  # fmt: skip
            )
        finally:
            for server in redis_servers:
                server.stop()
    return results


class PrivateRedis:
    """A redis-server of the benchmark's own on a free port, for the shard runs."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def fmt(value, spec: str = ",.1f") -> str:
    return "-" if value is None else format(value, spec)


def ms(us: float | None) -> float | None:
    return None if us is None else us / 1000


def print_rows(rows: list[tuple], left: int = 3) -> None:
    """Print ``rows`` (the first is the header) as aligned columns, the first ``left`` left-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = enumerate(zip(row, widths, strict=True))
        print("  ".join(cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in cells))


def loads_of(results: list[dict], modes: tuple[str, ...]):
    """(target, load) for every load of ``modes``, in the order run."""
    return [(t, load) for t in results for load in t["loads"] if load["mode"] in modes]


def print_traffic(results: list[dict]) -> None:
    """One row per server, target and message load: throughput, CPU per delivery, latency, accounting."""
    rows = [("server", "target", "load", "deliv/s", "µs/deliv", "server", "redis", "srv cores", "gen µs", "gen cores",
             "other cores", "p50 ms", "p99 ms", "lost", "dup", "faults")]  # fmt: skip
    for target, load in loads_of(results, TRAFFIC_MODES):
        lat = load["latency_us"]
        faults = sum(load[k] for k in FAILURES if k not in ("lost", "duplicates"))
        rows.append((
            target["server"], target["target"], load["load"], fmt(load["deliveries_per_s"], ",.0f"),
            fmt(load["cpu_us_per_delivery"]), fmt(load["server_cpu_us_per_delivery"]),
            fmt(load.get("redis_cpu_us_per_delivery")), fmt(load["server_cores"], ".2f"),
            fmt(load["client_cpu_us_per_delivery"]), fmt(load["client_cores"], ".2f"), fmt(load["other_cores"], ".2f"),
            fmt(ms(lat["p50"]), ".2f"), fmt(ms(lat["p99"]), ".2f"), str(load["lost"]), str(load["duplicates"]),
            str(faults),
        ))  # fmt: skip
    if len(rows) > 1:
        print_rows(rows)
        print(
            "µs/deliv = server + redis CPU per delivery in the measured window; srv cores = server CPU / window;\n"
            "gen = the load generator's own CPU; other cores = CPU the rest of the machine used in the window;\n"
            "faults = misdelivered + error frames + bad frames + failed or dropped connections\n"
        )


def print_connections(results: list[dict]) -> None:
    """The handshake, idle and scale modes: one table each."""
    rows = [("server", "target", "load", "handshakes", "hs/s", "ms/hs", "server", "redis", "close ms", "p50 ms",
             "p99 ms", "other cores", "faults")]  # fmt: skip
    for target, load in loads_of(results, ("handshake",)):
        lat = load["handshake_latency_us"]
        rows.append((
            target["server"], target["target"], load["load"], f"{load['handshakes']:,}",
            fmt(load["handshakes_per_s"], ",.0f"), fmt(load["cpu_ms_per_handshake"], ".3f"),
            fmt(load["server_cpu_ms_per_handshake"], ".3f"), fmt(load["redis_cpu_ms_per_handshake"], ".3f"),
            fmt(load["close_cpu_ms"], ".3f"), fmt(ms(lat["p50"]), ".1f"), fmt(ms(lat["p99"]), ".1f"),
            fmt(load["other_cores"], ".2f"), str(sum(load[k] for k in CONNECT_FAILURES)),
        ))  # fmt: skip
    if len(rows) > 1:
        print_rows(rows)
        print("ms/hs = server + redis CPU while the connections open, per handshake; close ms = CPU while they close\n")
    rows = [("server", "target", "load", "held", "RSS before MB", "RSS after MB", "KB/conn", "hs/s",
             "ms/hs", "hs p99 ms", "probe p99 ms alone", "probe p99 ms held", "other cores", "faults")]  # fmt: skip
    for target, load in loads_of(results, ("idle", "scale")):
        alone, held = load.get("probe_alone", {}), load.get("probe_held", {})
        rows.append((
            target["server"], target["target"], load["load"], f"{load['held']:,}", fmt(load["rss_before_kb"] / 1024),
            fmt(load["rss_after_kb"] / 1024), fmt(load["rss_kb_per_connection"]), fmt(load["handshakes_per_s"], ",.0f"),
            fmt(load["cpu_ms_per_handshake"], ".3f"), fmt(ms(load["handshake_latency_us"]["p99"]), ".1f"),
            fmt(ms(alone.get("latency_us", {}).get("p99")), ".2f"),
            fmt(ms(held.get("latency_us", {}).get("p99")), ".2f"),
            fmt(load["other_cores"], ".2f"),
            str(sum(load[k] for k in CONNECT_FAILURES) + sum(load.get("probe_faults", {}).values())),
        ))  # fmt: skip
    if len(rows) > 1:
        print_rows(rows)
        print("KB/conn = (server RSS with the connections held - RSS before) / connections; probe = 2 clients "
              "exchanging messages\n")  # fmt: skip


#: What relay ÷ floor compares in each mode.
FIGURES = {
    "closed": "cpu_us_per_delivery", "open": "cpu_us_per_delivery", "fanout": "cpu_us_per_delivery",
    "handshake": "cpu_ms_per_handshake", "idle": "rss_kb_per_connection", "scale": "rss_kb_per_connection",
}  # fmt: skip


def ratios(results: list[dict]) -> dict:
    """relay ÷ floor under the same server, for each server, relay target and mode: ``"uvicorn relay closed"``."""
    floor = {(t["server"], load["mode"]): load for t in results if t["target"] == "floor" for load in t["loads"]}
    out = {}
    for target in results:
        for load in target["loads"]:
            base = floor.get((target["server"], load["mode"]), {}).get(FIGURES[load["mode"]])
            value = load.get(FIGURES[load["mode"]])
            if target["target"] != "floor" and base and value:
                out[f"{target['server']} {target['target']} {load['mode']}"] = value / base
    return out


def check_bar(results: list[dict], relay_floor: dict, rate: float) -> dict:
    """The bars, each ``{"value", "limit", "ok"}``: the old ones under each server, issue 14's under uvicorn."""
    bars = {}

    def bar(name: str, value: float | None, limit: float) -> None:
        if value is not None:
            bars[name] = {"value": value, "limit": limit, "ok": value <= limit}

    for kind in dict.fromkeys(t["server"] for t in results):
        bar(f"{kind}: relay (history) ÷ floor, closed loop", relay_floor.get(f"{kind} relay closed"),
            MAX_HISTORY_CLOSED_RATIO)  # fmt: skip
        plain = [v for k, v in relay_floor.items() if k.startswith(f"{kind} relay-no-history ")]
        bar(f"{kind}: relay (no history) ÷ floor, worst loop", max(plain, default=None), MAX_RATIO)
        for mode in FRAME_MODES:
            with_handler = relay_floor.get(f"{kind} relay-async-handler {mode}")
            without = relay_floor.get(f"{kind} relay {mode}")
            if with_handler and without:
                bar(f"{kind}: async no-op handler, CPU per delivery ÷ relay's, {mode} loop", with_handler / without,
                    1 + MAX_HANDLER_EXTRA)  # fmt: skip
        for target, load in loads_of(results, ("open",)):
            if target["server"] == kind and target["target"] == "relay":
                bar(f"{kind}: relay p99 ms at {rate:g} msg/s", ms(load["latency_us"]["p99"]), MAX_OPEN_P99_MS)
    for mode, limit in PRODUCTION_BARS.items():
        bar(f"{PRODUCTION_SERVER} (production): relay (history) ÷ floor, {mode} ({FIGURES[mode]})",
            relay_floor.get(f"{PRODUCTION_SERVER} relay {mode}"), limit)  # fmt: skip
    return bars


def failures_of(results: list[dict]) -> list[str]:
    """Every load's lost, duplicated, misdelivered or refused messages and failed or dropped connections."""
    failures = []
    for target in results:
        for load in target["loads"]:
            names = FAILURES if load["mode"] in TRAFFIC_MODES else CONNECT_FAILURES
            bad = {k: load[k] for k in names if load.get(k)}
            bad.update(load.get("probe_faults", {}))
            if bad:
                where = f"{target['server']} {target['target']} {load['mode']}"
                failures.append(f"{where}: {bad} {load.get('error_samples', [])[:1]}")
    return failures


def default_scale_clients(nofile_limit: int) -> int:
    """As many connections as one server process can hold here: its fd limit less a thousand, at most 50,000."""
    return max(1000, min(50_000, (nofile_limit - 1000) // 1000 * 1000))


def parse_args() -> argparse.Namespace:
    """The command line; ``nofile_limit``, the file descriptor limit of every process here, added."""
    nofile_limit = loadgen.raise_nofile()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=SERVERS, help="default: all")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=TARGETS, help="default: all")
    parser.add_argument("--relay-only", action="store_true", help="same as --targets relay")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES), help="default: all but scale")
    parser.add_argument("--processes", type=int, default=1, help="also run the relay as N processes sharing Redis")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--window", type=int, default=4, help="closed loop: messages in flight per client")
    parser.add_argument("--rate", type=float, default=2000, help="open loop: total msg/s")
    parser.add_argument("--fanout-senders", type=int, default=10)
    parser.add_argument("--fanout-targets", type=int, default=100, help="fan-out: targets per message")
    parser.add_argument("--fanout-window", type=int, default=1, help="fan-out: messages in flight per sender")
    parser.add_argument("--duration", type=float, default=20, help="measured seconds per message load")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--drain", type=float, default=30, help="max seconds to wait for in-flight messages")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--handshake-clients", type=int, default=2000, help="handshake: connections per cycle")
    parser.add_argument("--handshake-duration", type=float, default=10, help="handshake: seconds of cycles")
    parser.add_argument("--max-pending", type=int, default=100, help="handshakes in progress at once")
    parser.add_argument("--idle-clients", type=int, default=5000)
    parser.add_argument("--settle", type=float, default=5, help="idle, scale: seconds the connections are held")
    parser.add_argument(
        "--scale-clients", type=int, default=default_scale_clients(nofile_limit),
        help=f"scale: connections to hold in one process (default: what RLIMIT_NOFILE {nofile_limit:,} allows)",
    )  # fmt: skip
    parser.add_argument("--scale-workers", type=int, default=None, help="scale: generator processes (default: fit)")
    parser.add_argument("--sources", type=int, default=4, help="scale: loopback source addresses, 127.0.0.2...")
    parser.add_argument("--probe-rate", type=float, default=100, help="scale: msg/s the probe pair exchanges")
    parser.add_argument("--probe-duration", type=float, default=10)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        help=f"the relay's REDIS_URL (default: $REDIS_URL, else {DEFAULT_REDIS_URL}); '' = in-memory layer",
    )
    parser.add_argument("--skip-memory", action="store_true", help="do not measure history's Redis memory")
    parser.add_argument(
        "--shards",
        type=int,
        default=0,
        help="also run --processes N relay processes on one Redis and on this many Redis shards (servers of "
        "the benchmark's own), to compare CPU per delivery",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run the relay of another checkout (e.g. a git worktree of an earlier commit) as 'baseline'",
    )
    args = parser.parse_args()
    if args.relay_only:
        args.targets = ["relay"]
    args.nofile_limit = nofile_limit
    return args


def main() -> int:
    args = parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.database_url = migrated_database(stamp)
    code = code_state()
    print(
        f"bench: servers {', '.join(args.servers)}; modes {', '.join(args.modes)}; {args.clients} clients, closed "
        f"loop {args.window} in flight, open loop {args.rate:g} msg/s, fan-out {args.fanout_senders}×"
        f"{args.fanout_targets}; {args.duration:g} s measured; RLIMIT_NOFILE {args.nofile_limit:,}; "
        f"REDIS_URL={args.redis_url or '(unset: in-memory layer)'}",
        file=sys.stderr,
    )
    results = []
    for kind in args.servers:
        if args.shards > 1:
            results += run_sharded(kind, args, stamp)
        if args.baseline:
            results.append(
                run_target(kind, "baseline", "relay", 1, args, stamp, {}, args.baseline.resolve(), modes=FRAME_MODES)
            )
        for name in args.targets:
            modes = None if name in ("floor", "relay") else FRAME_MODES
            app = "floor" if name == "floor" else "relay"
            results.append(run_target(kind, name, app, 1, args, stamp, VARIANTS.get(name), modes=modes))
        if args.processes > 1 and "relay" in args.targets:
            results.append(run_target(kind, f"relay-x{args.processes}", "relay", args.processes, args, stamp, {},
                                      modes=FRAME_MODES))  # fmt: skip

    print()
    for kind in args.servers:
        loaded = [t["modules"] for t in results if t["server"] == kind and t["modules"]]
        if loaded:
            found = ", ".join(f"{name} {'yes' if all(m[name] for m in loaded) else 'NO'}" for name in loaded[0])
            print(f"{kind} (every target): {found}")
    print_traffic(results)
    print_connections(results)
    busy = max((load.get("other_cores") or 0 for target in results for load in target["loads"]), default=0)
    if busy > BUSY_CORES:
        print(f"note: other work used up to {busy:.2f} cores during the runs: throughput and latency are noisy")
    for target, load in loads_of(results, TRAFFIC_MODES):
        shards = load.get("redis_shard_cpu_us_per_delivery")
        if shards:
            each = ", ".join(fmt(value) for value in shards)
            where = f"{target['server']} {target['target']} {load['mode']}"
            print(f"{where}: Redis CPU µs per delivery on each shard: {each}")
    relay_floor = ratios(results)
    for key, value in relay_floor.items():
        print(f"{key}: relay ÷ floor = {value:.2f} ({FIGURES[key.rsplit(' ', 1)[1]]})")
    bars = check_bar(results, relay_floor, args.rate)
    for name, bar in bars.items():
        print(f"bar: {name} ≤ {bar['limit']:g}: {bar['value']:.2f} {'yes' if bar['ok'] else 'NO'}")
    for target in results:
        if target["log_problems"]:
            print(f"{target['server']} {target['target']}: {target['log_problems']} error/warning lines in "
                  f"{', '.join(target['logs'])}")  # fmt: skip
            for kind, count in list(target["log_problem_kinds"].items())[:3]:
                print(f"  {count:,}×: {kind}")

    memory = None
    if args.redis_url and not args.skip_memory:
        from bench.history_memory import measure

        memory = measure(args.redis_url)
        print(
            f"history in Redis: {memory['ids']:,} ids × {memory['entries']} entries of {memory['payload_bytes']} B: "
            f"{memory['used_memory_bytes'] / 1e6:.1f} MB ({memory['bytes_per_entry']:.0f} B per entry)"
        )
    data = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "code": code, "results": results, "relay_over_floor": relay_floor, "bar": bars,
            "memory": memory}  # fmt: skip
    return finish(f"bench-{stamp}.json", data, failures_of(results))


def finish(name: str, data: dict, failures: list[str]) -> int:
    """Write ``data`` and the failures to ``bench/results/name``, print them; the exit status."""
    out = RESULTS / name
    out.write_text(json.dumps({**data, "failures": failures}, indent=2, default=list))
    print(f"results: {out.relative_to(ROOT)}")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
