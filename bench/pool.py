"""Idle connections held in worker processes: what a handshake costs and what a connection holds.

A ``Pool`` spreads ``clients`` ids over worker processes (each can hold no more sockets than
its RLIMIT_NOFILE) and over loopback source addresses. ``connect()`` opens them all,
``max_pending`` handshakes at a time across the pool, and ``close()`` closes them all with
the closing handshake; each returns counts, the handshake latencies, the wall time, and
the workers' CPU. Between the two the connections are idle: they answer the server's pings
and nothing else (a text frame is counted as unexpected). ``run.py``'s handshake, idle and
scale modes are built on it.
"""

import asyncio
import math
import time
from urllib.parse import urlsplit

from bench.loadgen import (
    WebSocket,
    cpu_seconds,
    join,
    latency_summary,
    open_socket,
    raise_nofile,
    run_loop,
    source_address,
    spawn,
)

#: Descriptors a worker keeps for itself (its pipes, the interpreter's files) besides its sockets.
WORKER_RESERVED_FDS = 200
COUNTERS = ("connected", "failed_connects", "closed", "text_frames", "protocol_errors", "server_closes",
            "unexpected_closes")  # fmt: skip


class IdleConnection(WebSocket):
    """A connection that only answers pings."""

    def on_text(self, payload: bytes) -> None:
        self.stats["text_frames"] += 1


class PoolWorker:
    """One process's share of the pool's connections."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.stats = dict.fromkeys(COUNTERS, 0)
        self.connections: dict[int, IdleConnection] = {}

    async def connect(self) -> dict:
        """Open every connection not open yet; the handshake latencies of those that opened."""
        spec = self.spec
        url = urlsplit(spec["url"])
        limit = asyncio.Semaphore(spec["max_pending"])
        latencies: list[int] = []
        cpu = cpu_seconds()

        async def connect(cid: int) -> None:
            path = f"{url.path}?id={cid}"
            async with limit:
                started = time.monotonic_ns()
                connection = await open_socket(
                    lambda: IdleConnection(self.stats, url.hostname, url.port, path),
                    url.hostname, url.port, source_address(cid, spec["sources"]), spec["connect_timeout"],
                )  # fmt: skip
            if connection is None:
                self.stats["failed_connects"] += 1
                return
            latencies.append(time.monotonic_ns() - started)
            self.connections[cid] = connection
            self.stats["connected"] += 1

        await asyncio.gather(*(connect(cid) for cid in spec["ids"] if cid not in self.connections))
        return {**self.status(), "latencies_ns": latencies, "cpu_s": cpu_seconds() - cpu}

    async def close(self) -> dict:
        """Close every connection with 1000 and wait for the server to close each."""
        cpu = cpu_seconds()
        connections = list(self.connections.values())
        self.connections.clear()
        for connection in connections:
            connection.close()
        await asyncio.gather(*(c.wait_closed(self.spec["close_wait"]) for c in connections))
        self.stats["closed"] += len(connections)
        return {**self.status(), "latencies_ns": [], "cpu_s": cpu_seconds() - cpu}

    def status(self) -> dict:
        """The counters, and how many connections are still open."""
        return {**self.stats, "open": sum(c.transport is not None for c in self.connections.values())}


def _worker_main(pipe, spec: dict) -> None:
    """A pool worker: run the commands the parent sends (connect, close, status) until ``exit``."""

    async def main() -> None:
        raise_nofile()
        worker = PoolWorker(spec)
        loop = asyncio.get_running_loop()
        while (command := await loop.run_in_executor(None, pipe.recv)) != "exit":
            result = getattr(worker, command)()
            pipe.send(await result if asyncio.iscoroutine(result) else result)

    run_loop(main)


class Pool:
    """``clients`` idle connections to ``url`` (ids from ``id_base``), spread over workers and source addresses."""

    def __init__(
        self,
        url: str,
        clients: int,
        id_base: int = 0,
        workers: int | None = None,
        sources: int = 0,
        max_pending: int = 100,
        connect_timeout: float = 30.0,
        close_wait: float = 30.0,
    ) -> None:
        per_worker = raise_nofile() - WORKER_RESERVED_FDS
        self.workers = max(workers or 2, math.ceil(clients / per_worker))
        ids = list(range(id_base, id_base + clients))
        specs = [
            {
                "url": url,
                "ids": ids[i :: self.workers],
                "sources": sources,
                "connect_timeout": connect_timeout,
                "close_wait": close_wait,
                "max_pending": max(1, max_pending // self.workers),
            }  # fmt: skip
            for i in range(self.workers)
        ]
        self.procs, self.pipes = spawn(_worker_main, specs)

    def command(self, name: str) -> dict:
        """Run ``name`` in every worker; the counters summed, latencies merged, wall time and CPU."""
        started = time.monotonic()
        for pipe in self.pipes:
            pipe.send(name)
        reports = [pipe.recv() for pipe in self.pipes]
        merged = {name: sum(r[name] for r in reports) for name in (*COUNTERS, "open")}
        latencies = [ns for r in reports for ns in r.get("latencies_ns", ())]
        merged.update(
            elapsed_s=time.monotonic() - started,
            handshakes=len(latencies),
            handshake_latency_us=latency_summary(latencies),
            latencies_ns=latencies,
            client_cpu_s=sum(r.get("cpu_s", 0.0) for r in reports),
        )
        return merged

    def connect(self) -> dict:
        """Open every connection (those not open yet)."""
        return self.command("connect")

    def close(self) -> dict:
        """Close every connection."""
        return self.command("close")

    def status(self) -> dict:
        """Counters and open connections, now."""
        return self.command("status")

    def stop(self) -> None:
        """End the workers (their connections are dropped with them)."""
        for pipe in self.pipes:
            try:
                pipe.send("exit")
            except OSError:
                pass
        join(self.procs)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
