"""``make soak``: one relay process under a steady load for 10 minutes: 0 loss and flat RSS.

One server (``--server``, default daphne) serving ``relayproject.asgi:application`` with
``REDIS_URL``, started as ``bench/servers.py`` starts it; 2,000 clients in pairs (``i`` <-> ``i ^ 1``,
the bench's load generator) sending in open loop at 2,000 msg/s in total (1 msg/s per
client, well under the relay's 50/s per-connection limit) for 600 s measured, after a
warm-up. Every 10 s it samples the server process's RSS (``VmRSS``) and CPU, Redis's CPU
and ``used_memory``. It reports every message as delivered or lost, duplicates,
latency, CPU per delivery, the RSS at the window's start, end and maximum, its slope (a
least-squares line, KB per minute) and its growth from the first minute's mean to the
last minute's mean, and writes it all as JSON to ``bench/results/``.

Exits 1 unless: nothing was lost, duplicated or misdelivered, no error frame, no client
failed to connect or was disconnected, the RSS grew less than ``MAX_RSS_GROWTH_MB``, and
the generator kept to its schedule (it never fell more than ``MAX_GENERATOR_LAG_MS``
behind, so the load really was steady).
"""

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.run import AFTER_LOAD, BUSY_CORES, FAILURES, add_cpu, finish, fmt  # noqa: E402
from bench.servers import (  # noqa: E402
    DEFAULT_REDIS_URL,
    RESULTS,
    SERVERS,
    Server,
    cpu_sample,
    process_rss_kb,
    redis_info,
    server_env,
)

#: Pass bar for memory: the mean RSS of the last minute minus that of the first minute.
#: At the default load, 10 MB over the 9 minutes between them is under 10 bytes per
#: delivery (1.08 million deliveries), less than the smallest Python object, so keeping
#: anything per message fails; it is also ~1.1 MB/min, 1.6 GB a day, a leak that would
#: take a production process down within days. Smaller leaks need a longer soak (the
#: allocator moves RSS in steps of a few hundred KB).
MAX_RSS_GROWTH_MB = 10.0
#: The generator must never fall further behind its schedule than this, or the load was not steady.
MAX_GENERATOR_LAG_MS = 1000.0
#: "The first minute" and "the last minute" of the window (a fifth of it in shorter runs).
EDGE_S = 60.0
#: The relay's default RELAY_RATE_LIMIT: frames per second per connection.
RELAY_RATE_LIMIT = 50


def take_sample(server: Server, redis_url: str) -> dict:
    """The server's RSS, Redis's used_memory, and CPU so far (``run.cpu_sample``), timestamped."""
    if server.proc.poll() is not None:
        raise RuntimeError(f"{server.kind} exited with {server.proc.returncode} during the soak; see {server.log_path}")
    return {
        "t": time.monotonic(),
        "rss_kb": process_rss_kb(server.pid),
        "redis_used_memory": redis_info(redis_url, "memory")["used_memory"],
        "cpu": cpu_sample([server.pid], [redis_url]),
    }


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def slope(xs: list[float], ys: list[float]) -> float:
    """The slope of the least-squares line through the points ``(xs, ys)``."""
    mx, my = mean(xs), mean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def analyse(samples: list[dict]) -> dict:
    """Memory and CPU over the window: start, end, max, slope, first vs last minute."""
    # Seconds into the window, to 0.1 s: samples are taken on a schedule, a few ms late at most.
    t = [round(s["t"] - samples[0]["t"], 1) for s in samples]
    edge = min(EDGE_S, t[-1] / 5)
    first = [i for i, ti in enumerate(t) if ti <= edge]
    last = [i for i, ti in enumerate(t) if ti >= t[-1] - edge]
    rss = [s["rss_kb"] for s in samples]
    redis_mem = [s["redis_used_memory"] / 1024 for s in samples]

    def cores(part: str, i: int, j: int) -> float | None:
        """Cores ``part`` used between samples ``i`` and ``j``."""
        dt = t[j] - t[i]
        return (samples[j]["cpu"][part] - samples[i]["cpu"][part]) / dt if dt > 0 else None

    return {
        "edge_s": edge,
        "samples": len(samples),
        "rss_start_kb": rss[0],
        "rss_end_kb": rss[-1],
        "rss_max_kb": max(rss),
        "rss_min_kb": min(rss),
        "rss_first_minute_mean_kb": mean([rss[i] for i in first]),
        "rss_last_minute_mean_kb": mean([rss[i] for i in last]),
        "rss_growth_kb": mean([rss[i] for i in last]) - mean([rss[i] for i in first]),
        "rss_growth_end_of_first_minute_to_end_kb": rss[-1] - rss[first[-1]],
        "rss_slope_kb_per_min": slope([x / 60 for x in t], rss),
        "redis_used_memory_start_kb": redis_mem[0],
        "redis_used_memory_end_kb": redis_mem[-1],
        "redis_used_memory_max_kb": max(redis_mem),
        "redis_used_memory_slope_kb_per_min": slope([x / 60 for x in t], redis_mem),
        "server_cores_first_minute": cores("server", first[0], first[-1]),
        "server_cores_last_minute": cores("server", last[0], last[-1]),
    }


def print_series(samples: list[dict], rows: int = 10) -> None:
    """About ``rows`` lines of the samples: time, RSS, Redis memory, server and Redis cores since the line before."""
    step = max(1, round((len(samples) - 1) / rows))
    picked = list(range(0, len(samples), step))
    if picked[-1] != len(samples) - 1:
        picked.append(len(samples) - 1)
    t0 = samples[0]["t"]
    print(f"{'t s':>6}  {'RSS MB':>8}  {'Redis MB':>8}  {'srv cores':>9}  {'redis cores':>11}")
    for prev, i in zip([None, *picked], picked, strict=False):
        s = samples[i]
        cores = {"server": None, "redis": None}
        if prev is not None:
            dt = s["t"] - samples[prev]["t"]
            cores = {p: (s["cpu"][p] - samples[prev]["cpu"][p]) / dt for p in cores}
        print(
            f"{s['t'] - t0:6.0f}  {s['rss_kb'] / 1024:8.1f}  {s['redis_used_memory'] / 2**20:8.1f}  "
            f"{fmt(cores['server'], '.2f'):>9}  {fmt(cores['redis'], '.2f'):>11}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=SERVERS, default="daphne")
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=2000, help="total msg/s, open loop")
    parser.add_argument("--duration", type=float, default=600, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10, help="seconds of load before the window")
    parser.add_argument("--interval", type=float, default=10, help="seconds between RSS/CPU samples")
    parser.add_argument("--drain", type=float, default=30, help="max seconds to wait for in-flight messages")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--max-rss-growth-mb",
        type=float,
        default=MAX_RSS_GROWTH_MB,
        help=f"pass bar: last minute's mean RSS - first minute's (default {MAX_RSS_GROWTH_MB:g})",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
        help=f"the relay's REDIS_URL (default: $REDIS_URL, else {DEFAULT_REDIS_URL})",
    )
    args = parser.parse_args()
    if args.rate / args.clients > RELAY_RATE_LIMIT:
        parser.error(f"{args.rate:g} msg/s over {args.clients} clients is over the relay's {RELAY_RATE_LIMIT}/s each")

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    print(
        f"soak: {args.clients} clients, open loop {args.rate:g} msg/s, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s measured, samples every {args.interval:g} s; REDIS_URL={args.redis_url}",
        file=sys.stderr,
        flush=True,
    )
    server = Server(args.server, "relay", server_env(args.redis_url), RESULTS / f"{stamp}-soak-{args.server}-relay.log")
    try:
        server.wait_ready()
        rss_idle_kb = process_rss_kb(server.pid)
        report = loadgen.run(
            [server.url], clients=args.clients, rate=args.rate, warmup=args.warmup, duration=args.duration,
            drain=args.drain, workers=args.workers, sample=lambda: take_sample(server, args.redis_url),
            sample_every=args.interval,
        )  # fmt: skip
        time.sleep(AFTER_LOAD)
        alive = server.proc.poll() is None
        rss_after_kb = process_rss_kb(server.pid) if alive else None
    finally:
        server.stop()
    samples = report.pop("samples")
    add_cpu(report, samples[0]["cpu"], samples[-1]["cpu"])
    memory = analyse(samples)
    memory.update(rss_idle_kb=rss_idle_kb, rss_after_close_kb=rss_after_kb)
    problems = server.problems()

    lat = {q: fmt(v and v / 1000, ".2f") for q, v in report["latency_us"].items()}  # ms
    faults = {k: report[k] for k in FAILURES if k not in ("lost", "duplicates") and report[k]}
    mb = {k: v / 1024 for k, v in memory.items() if k.endswith("_kb") and v is not None}
    growth_mb, edge = mb["rss_growth_kb"], f"{memory['edge_s']:g} s"
    print()
    print_series(samples)
    print()
    figures = [
        ("sent / delivered", f"{report['sent']:,} / {report['delivered']:,} ({report['sent_in_window']:,} sent "
                             f"in the window, {report['deliveries_per_s']:,.0f} deliveries/s)"),
        ("lost / duplicates", f"{report['lost']:,} / {report['duplicates']:,}"),
        ("faults", ", ".join(f"{k} {v}" for k, v in faults.items())
                   or "0 (misdelivered, error frames, bad frames, failed or dropped connections)"),
        ("latency p50 / p99 / max", f"{lat['p50']} / {lat['p99']} / {lat['max']} ms "
                                    f"({report['latency_us']['n']:,} messages sent in the window)"),
        ("CPU µs / delivery", f"{fmt(report['cpu_us_per_delivery'])} (server "
                              f"{fmt(report['server_cpu_us_per_delivery'])} + redis "
                              f"{fmt(report['redis_cpu_us_per_delivery'])})"),
        ("server cores", f"{fmt(report['server_cores'], '.3f')} (first {edge} "
                         f"{fmt(memory['server_cores_first_minute'], '.3f')}, last {edge} "
                         f"{fmt(memory['server_cores_last_minute'], '.3f')})"),
        ("RSS start / end / max", f"{mb['rss_start_kb']:.1f} / {mb['rss_end_kb']:.1f} / {mb['rss_max_kb']:.1f} MB "
                                  f"(idle before the clients {mb['rss_idle_kb']:.1f}, after they closed "
                                  f"{fmt(mb.get('rss_after_close_kb'))})"),
        ("RSS growth", f"{growth_mb:+.2f} MB, mean of the first {edge} to mean of the last {edge} "
                       f"(end of the first {edge} to the end: "
                       f"{mb['rss_growth_end_of_first_minute_to_end_kb']:+.2f} MB)"),
        ("RSS slope", f"{memory['rss_slope_kb_per_min']:+.1f} KB/min (least squares over {len(samples)} samples)"),
        ("Redis used_memory", f"{mb['redis_used_memory_start_kb']:.1f} / {mb['redis_used_memory_end_kb']:.1f} / "
                              f"{mb['redis_used_memory_max_kb']:.1f} MB start / end / max, "
                              f"slope {memory['redis_used_memory_slope_kb_per_min']:+.1f} KB/min"),
        ("generator", f"{fmt(report['client_cores'], '.2f')} cores, {fmt(report['client_cpu_us_per_delivery'])} µs "
                      f"per delivery; max lag {report['open_loop_max_lag_ms']:.1f} ms, "
                      f"{report['open_loop_late']:,} sends > {loadgen.LATE_NS / 1e6:g} ms late"),
        ("other cores", f"{fmt(report['other_cores'], '.2f')} (the rest of the machine)"),
        ("server log", f"{len(problems)} error/warning lines in {server.log_path.relative_to(ROOT)}"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in figures)
    for name, value in figures:
        print(f"{name.ljust(width)}  {value}")
    for line in problems[:5]:
        print(f"  log: {line}")
    if (report["other_cores"] or 0) > BUSY_CORES:
        print(f"note: other work used {report['other_cores']:.2f} cores during the window: latency is noisy")

    checks = {
        "0 lost": report["lost"] == 0,
        "0 duplicates": report["duplicates"] == 0,
        "0 faults (misdelivered, error frames, failed or dropped connections)": not faults,
        f"RSS growth < {args.max_rss_growth_mb:g} MB": growth_mb < args.max_rss_growth_mb,
        f"generator kept up (max lag ≤ {MAX_GENERATOR_LAG_MS:g} ms)": report["open_loop_max_lag_ms"]
        <= MAX_GENERATOR_LAG_MS,
        f"{args.server} still running": alive,
    }
    for name, ok in checks.items():
        print(f"check: {name}: {'yes' if ok else 'NO'}")
    failures = [name for name, ok in checks.items() if not ok]

    t0 = samples[0]["t"]
    series = [
        {"t_s": round(s["t"] - t0, 3), "rss_kb": s["rss_kb"], "redis_used_memory": s["redis_used_memory"],
         **{f"{part}_cpu_s": seconds for part, seconds in s["cpu"].items()}}
        for s in samples
    ]  # fmt: skip
    data = {"args": vars(args), "report": report, "memory": memory, "samples": series, "checks": checks,
            "log": str(server.log_path), "log_problems": len(problems), "log_problem_samples": problems[:20],
            "error_samples": report["error_samples"]}  # fmt: skip
    return finish(f"soak-{stamp}.json", data, failures)


if __name__ == "__main__":
    sys.exit(main())
