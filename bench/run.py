"""``make bench``: the relay under daphne against a raw ASGI floor, with the same load.

For each target, one at a time — ``floor`` (``bench.floor:application``), then the relay
(``relayproject.asgi:application`` with ``REDIS_URL``) as ``relay`` (delivery history on,
the default), ``relay-no-history``, ``relay-async-handler`` (one async no-op message
handler) and ``relay-orm-handler`` (one sync handler doing one ORM query per frame) —
start daphne on a free port, run the closed-loop load (1,000 clients, 4 in flight each)
and the open-loop load (2,000 msg/s), stop daphne. Then it measures what history costs in
Redis memory (``bench/history_memory.py``). Server CPU is utime+stime of the daphne process over the
measured window (``/proc/PID/stat``), plus Redis's own CPU (``INFO cpu``) for the relay.
Prints a table, relay ÷ floor for CPU µs per delivery, and writes everything as JSON to
``bench/results/``. Exits 1 if any message was lost, duplicated or misdelivered, the
server answered with an error frame, or any client failed to connect or was disconnected.

``--processes 2`` adds a run of two relay processes sharing Redis, every pair split across
them (all traffic crosses processes), reported as ``relay-x2``.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402

RESULTS = ROOT / "bench" / "results"
APPS = {"floor": "bench.floor:application", "relay": "relayproject.asgi:application"}
#: The relay's configurations measured against the floor: target -> environment of its servers.
VARIANTS = {
    "relay": {},  # with Redis, delivery history is on by default
    "relay-no-history": {"RELAY_HISTORY": "0"},
    "relay-async-handler": {"DJANGO_SETTINGS_MODULE": "bench.site_code_settings", "BENCH_HANDLER": "async"},
    "relay-orm-handler": {"DJANGO_SETTINGS_MODULE": "bench.site_code_settings", "BENCH_HANDLER": "orm"},
}
TARGETS = ["floor", *VARIANTS]
TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"  # as in the Makefile
#: The bars (one relay process with Redis): relay ÷ floor with history in the closed loop,
#: without history in both loops, p99 in open loop; an async no-op handler's extra CPU.
MAX_HISTORY_CLOSED_RATIO, MAX_RATIO, MAX_OPEN_P99_MS, MAX_HANDLER_EXTRA = 1.6, 2.0, 20.0, 0.10
#: Seconds to let a server finish handling the last load's disconnects before the next
#: load or the shutdown (which would kill the application instances still at it).
AFTER_LOAD = 2.0
#: Other work on the machine above this many cores makes a run's throughput and latency suspect.
BUSY_CORES = 0.25
#: Report fields that must all be zero for a run to pass.
FAILURES = (
    "lost", "duplicates", "misdelivered", "error_frames", "bad_payload", "protocol_errors",
    "failed_connects", "unexpected_closes", "server_closes",
)  # fmt: skip


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) that process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_cpu() -> float:
    """CPU seconds all processes of the machine have used (``/proc/stat``: user, nice, system).

    Interrupt time is left out, as it is from a process's utime+stime.
    """
    user, nice, system = map(int, Path("/proc/stat").read_text().split()[1:4])
    return (user + nice + system) / TICKS


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


def server_env(redis_url: str, database_url: str | None = None) -> dict:
    """The environment of the daphne processes: DEBUG on (for ``?id=``), the relay's REDIS_URL."""
    env = {**os.environ, "DEBUG": "1", "REDIS_URL": redis_url}
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def migrated_database(stamp: str) -> str:
    """A fresh SQLite database for the relay's servers (a handler variant queries it)."""
    url = f"sqlite:///{RESULTS / f'{stamp}-db.sqlite3'}"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT, env=server_env("", url), check=True, timeout=120,
    )  # fmt: skip
    return url


def cpu_sample(pids: list[int], redis_urls: list[str]) -> dict:
    """CPU seconds used so far by the servers (together), the machine, and each Redis of ``redis_urls``."""
    cpu = {"server": sum(process_cpu(pid) for pid in pids), "machine": machine_cpu()}
    if redis_urls:
        shards = [redis_cpu(url) for url in redis_urls]
        cpu["redis"] = sum(shards)
        if len(shards) > 1:
            cpu.update({f"redis{index}": seconds for index, seconds in enumerate(shards)})
    return cpu


def add_cpu(report: dict, start: dict, end: dict) -> None:
    """Add to a load's ``report`` the CPU used between two ``cpu_sample()``s at its window's edges.

    For the server, Redis, and ``other`` (everything else the machine ran besides them and the
    generator: other users' work competing with ours): seconds, µs per delivery in the window
    and cores; plus ``cpu_us_per_delivery``, what serving cost (server + Redis).
    """
    delivered, window = report["delivered_in_window"], report["window_s"]
    cpu = {part: end[part] - start[part] for part in start}
    cpu["other"] = cpu.pop("machine") - cpu["server"] - cpu.get("redis", 0) - report["client_cpu_window_s"]
    shards = [cpu.pop(part) for part in sorted(cpu) if part.startswith("redis") and part != "redis"]
    if shards:  # each shard's Redis CPU per delivery
        report["redis_shard_cpu_us_per_delivery"] = [s * 1e6 / delivered if delivered else None for s in shards]
    for part, seconds in cpu.items():
        report[f"{part}_cpu_s"] = seconds
        report[f"{part}_cpu_us_per_delivery"] = seconds * 1e6 / delivered if delivered else None
        report[f"{part}_cores"] = seconds / window if window else None
    served = [p for p in ("server", "redis") if p in cpu]
    report["cpu_us_per_delivery"] = sum(report[f"{p}_cpu_us_per_delivery"] or 0 for p in served) or None


class Daphne:
    """A daphne process serving one app, as a user runs it; its log goes to a file.

    ``cwd``: the checkout it serves (another one for an A/B against an earlier version).
    """

    def __init__(self, app: str, env: dict, log_path: Path, cwd: Path = ROOT) -> None:
        self.port = free_port()
        self.log_path = log_path
        daphne = Path(sys.executable).with_name("daphne")
        cmd = [str(daphne)] if daphne.exists() else [sys.executable, "-m", "daphne"]
        cmd += ["-b", "127.0.0.1", "-p", str(self.port), "--websocket_timeout", "-1", APPS[app]]
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.url = f"ws://127.0.0.1:{self.port}/ws"

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the port accepts connections; fail if daphne exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited with {self.proc.returncode}; see {self.log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"daphne did not listen on {self.port} within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in 10 s."""
        self.log.flush()
        self.log_bytes_before_stop = self.log_path.stat().st_size
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def problems(self) -> list[str]:
        """Errors, warnings and tracebacks the server logged before we stopped it."""
        pattern = re.compile(r"Traceback|\b(ERROR|CRITICAL|WARNING)\b|Exception")
        with self.log_path.open("rb") as log:
            text = log.read(self.log_bytes_before_stop).decode(errors="replace")
        return [line for line in text.splitlines() if pattern.search(line)]


def run_target(
    name: str,
    app: str,
    processes: int,
    args,
    stamp: str,
    extra_env: dict | None = None,
    cwd: Path = ROOT,
    redis_urls: list[str] | None = None,
) -> dict:
    """Start ``processes`` daphnes serving ``app`` from ``cwd``, run every load against them, stop them.

    ``redis_urls``: the Redis servers (shards) of this target, instead of ``--redis-url``.
    """
    redis_urls = redis_urls or ([args.redis_url] if args.redis_url else [])
    env = {**server_env(",".join(redis_urls), args.database_url), **(extra_env or {})}
    uses_redis = app == "relay" and bool(redis_urls)
    servers = [Daphne(app, env, RESULTS / f"{stamp}-{name}-{i}.log", cwd) for i in range(processes)]
    loads = []
    try:
        for server in servers:
            server.wait_ready()
        for mode in args.modes:
            rate = args.rate if mode == "open" else None
            print(f"  {name}: {mode} loop ...", file=sys.stderr, flush=True)
            report = loadgen.run(
                [s.url for s in servers], clients=args.clients, window=args.window, rate=rate,
                warmup=args.warmup, duration=args.duration, drain=args.drain, workers=args.workers,
                sample=lambda: cpu_sample([s.pid for s in servers], redis_urls if uses_redis else []),
            )  # fmt: skip
            start, end = report.pop("samples")
            add_cpu(report, start, end)
            loads.append({"mode": mode, **report})
            time.sleep(AFTER_LOAD)
    finally:
        for server in servers:
            server.stop()
    problems = [line for s in servers for line in s.problems()]
    return {
        "target": name, "app": APPS[app], "processes": processes, "redis": uses_redis, "env": extra_env or {},
        "logs": [str(s.log_path) for s in servers], "log_problems": len(problems),
        "log_problem_samples": problems[:20], "loads": loads,
    }  # fmt: skip


def run_sharded(args, stamp: str) -> list[dict]:
    """``--processes`` relay processes on one private Redis, then on ``--shards`` of them."""
    processes = max(args.processes, 2)
    results = []
    for count in (1, args.shards):
        redis_servers = [PrivateRedis(RESULTS / f"{stamp}-redis-{count}-{i}.log") for i in range(count)]
        try:
            name = f"relay-x{processes}-{count}redis"
            results.append(
                run_target(name, "relay", processes, args, stamp, {}, redis_urls=[r.url for r in redis_servers])
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
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self.log.close()


def fmt(value, spec: str = ",.1f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: list[dict]) -> None:
    """One row per target and load: throughput, CPU per delivery, latency, accounting."""
    head = ("target", "load", "deliv/s", "µs/deliv", "server", "redis", "srv cores", "gen µs", "gen cores",
            "other cores", "p50 ms", "p99 ms", "lost", "dup", "faults")  # fmt: skip
    rows = [head]
    for target in results:
        for load in target["loads"]:
            lat = load["latency_us"]
            faults = sum(load[k] for k in FAILURES if k not in ("lost", "duplicates"))
            rows.append((
                target["target"], load["load"], fmt(load["deliveries_per_s"], ",.0f"),
                fmt(load["cpu_us_per_delivery"]), fmt(load["server_cpu_us_per_delivery"]),
                fmt(load.get("redis_cpu_us_per_delivery")), fmt(load["server_cores"], ".2f"),
                fmt(load["client_cpu_us_per_delivery"]), fmt(load["client_cores"], ".2f"),
                fmt(load["other_cores"], ".2f"),
                fmt(lat["p50"] and lat["p50"] / 1000, ".2f"), fmt(lat["p99"] and lat["p99"] / 1000, ".2f"),
                str(load["lost"]), str(load["duplicates"]), str(faults),
            ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        print(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=False))
            )
        )
    print(
        "µs/deliv = server + redis CPU per delivery in the measured window; srv cores = server CPU / window;\n"
        "gen = the load generator's own CPU; other cores = CPU the rest of the machine used in the window;\n"
        "faults = misdelivered + error frames + bad frames + failed or dropped connections"
    )
    busy = max((load["other_cores"] or 0 for target in results for load in target["loads"]), default=0)
    if busy > BUSY_CORES:
        print(f"note: other work used up to {busy:.2f} cores during the runs: throughput and latency are noisy")


def ratios(results: list[dict]) -> dict:
    """relay ÷ floor, CPU µs per delivery, for each relay target and mode."""
    by_target = {t["target"]: {load["mode"]: load for load in t["loads"]} for t in results}
    floor = by_target.get("floor", {})
    out = {}
    for target, loads in by_target.items():
        for mode, load in loads.items():
            base = floor.get(mode, {}).get("cpu_us_per_delivery")
            if target != "floor" and base and load["cpu_us_per_delivery"]:
                out[f"{target} {mode}"] = load["cpu_us_per_delivery"] / base
    return out


def check_bar(results: list[dict], relay_floor: dict, rate: float) -> dict:
    """The bars: relay ÷ floor (history ≤ 1.6 closed loop, without ≤ 2.0), p99, an async handler's cost."""
    bar = {}
    if "relay closed" in relay_floor:
        bar[f"relay (history) ÷ floor ≤ {MAX_HISTORY_CLOSED_RATIO} closed loop"] = (
            relay_floor["relay closed"] <= MAX_HISTORY_CLOSED_RATIO
        )
    plain = [k for k in relay_floor if k.startswith("relay-no-history ")]
    if plain:
        bar[f"relay (no history) ÷ floor ≤ {MAX_RATIO}"] = all(relay_floor[k] <= MAX_RATIO for k in plain)
    for mode in ("closed", "open"):
        with_handler, without = relay_floor.get(f"relay-async-handler {mode}"), relay_floor.get(f"relay {mode}")
        if with_handler and without:
            bar[f"async no-op handler ≤ +{MAX_HANDLER_EXTRA:.0%} CPU per delivery, {mode} loop"] = (
                with_handler / without <= 1 + MAX_HANDLER_EXTRA
            )
    for target in results:
        for load in target["loads"]:
            if target["target"] == "relay" and load["mode"] == "open" and load["latency_us"]["p99"] is not None:
                bar[f"p99 ≤ {MAX_OPEN_P99_MS:g} ms at {rate:g} msg/s"] = (
                    load["latency_us"]["p99"] / 1000 <= MAX_OPEN_P99_MS
                )
    return bar


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=TARGETS, help="default: all")
    parser.add_argument("--relay-only", action="store_true", help="same as --targets relay")
    parser.add_argument("--modes", nargs="+", choices=["closed", "open"], default=["closed", "open"])
    parser.add_argument("--processes", type=int, default=1, help="also run the relay as N processes sharing Redis")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--window", type=int, default=4, help="closed loop: messages in flight per client")
    parser.add_argument("--rate", type=float, default=2000, help="open loop: total msg/s")
    parser.add_argument("--duration", type=float, default=20, help="measured seconds per load")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--drain", type=float, default=30, help="max seconds to wait for in-flight messages")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
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

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.database_url = migrated_database(stamp)
    plan = [(t, "floor" if t == "floor" else "relay", 1, VARIANTS.get(t)) for t in args.targets]
    if args.processes > 1 and "relay" in args.targets:
        plan.append((f"relay-x{args.processes}", "relay", args.processes, {}))
    print(
        f"bench: {args.clients} clients; closed loop {args.window} in flight, open loop {args.rate:g} msg/s; "
        f"{args.duration:g} s measured; REDIS_URL={args.redis_url or '(unset: in-memory layer)'}",
        file=sys.stderr,
    )
    results = []
    if args.shards > 1:
        results += run_sharded(args, stamp)
    if args.baseline:
        results.append(run_target("baseline", "relay", 1, args, stamp, {}, args.baseline.resolve()))
    for name, app, processes, extra_env in plan:
        results.append(run_target(name, app, processes, args, stamp, extra_env))

    print()
    print_table(results)
    for target in results:
        for load in target["loads"]:
            shards = load.get("redis_shard_cpu_us_per_delivery")
            if shards:
                each = ", ".join(fmt(value) for value in shards)
                print(f"{target['target']} {load['mode']}: Redis CPU µs per delivery on each shard: {each}")
    relay_floor = ratios(results)
    for key, value in relay_floor.items():
        print(f"{key}: relay ÷ floor = {value:.2f} (CPU µs per delivery)")
    bar = check_bar(results, relay_floor, args.rate)
    for name, ok in bar.items():
        print(f"bar: {name}: {'yes' if ok else 'NO'}")
    failures = []
    for target in results:
        for load in target["loads"]:
            bad = {k: load[k] for k in FAILURES if load[k]}
            if bad:
                failures.append(f"{target['target']} {load['mode']}: {bad} {load['error_samples'][:1]}")
        if target["log_problems"]:
            print(f"{target['target']}: {target['log_problems']} error/warning lines in {', '.join(target['logs'])}")

    memory = None
    if args.redis_url and not args.skip_memory:
        from bench.history_memory import measure

        memory = measure(args.redis_url)
        print(
            f"history in Redis: {memory['ids']:,} ids × {memory['entries']} entries of {memory['payload_bytes']} B: "
            f"{memory['used_memory_bytes'] / 1e6:.1f} MB ({memory['bytes_per_entry']:.0f} B per entry)"
        )
    data = {"args": vars(args), "results": results, "relay_over_floor": relay_floor, "bar": bar, "memory": memory}
    return finish(f"bench-{stamp}.json", data, failures)


def finish(name: str, data: dict, failures: list[str]) -> int:
    """Write ``data`` and the failures to ``bench/results/name``, print them; the exit status."""
    out = RESULTS / name
    out.write_text(json.dumps({**data, "failures": failures}, indent=2))
    print(f"results: {out.relative_to(ROOT)}")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
