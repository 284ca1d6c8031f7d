"""Prometheus metrics of the relay, served at ``/relay/metrics``.

With ``PROMETHEUS_MULTIPROC_DIR`` set (an empty directory, the same for every daphne
process on a host, emptied before they start), prometheus-client keeps the values in
files there and the endpoint adds up every process; without it, one process's own.
"""

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONNECTIONS_OPEN = Gauge("relay_connections_open", "WebSocket connections open now.", multiprocess_mode="livesum")
CONNECTS = Counter("relay_connects_total", "WebSocket connections accepted.")
DISCONNECTS = Counter("relay_disconnects_total", "WebSocket connections ended, by reason.", ["reason"])
HANDSHAKES_REFUSED = Counter("relay_handshakes_refused_total", "Handshakes refused with 403, by reason.", ["reason"])
FRAMES_RECEIVED = Counter("relay_frames_received_total", "Frames received from clients.")
DELIVERIES = Counter("relay_deliveries_total", "Frames handed to client sockets (one per connection reached).")
ERRORS = Counter("relay_errors_total", "Error frames sent to clients, by code.", ["code"])
SITE_CODE_ERRORS = Counter(
    "relay_site_code_errors_total",
    "Exceptions raised by the site's code in the relay: message handlers, calls, send policy, signal receivers.",
    ["kind"],
)
DELIVERY_LATENCY = Histogram(
    "relay_delivery_latency_seconds",
    "From a frame's arrival in this process to its hand-off to the local sockets.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

#: WebSocket close codes -> the disconnect reasons counted above (None, no code: "other").
CLOSE_REASONS: dict[int | None, str] = {
    1000: "normal",
    1001: "going_away",
    1006: "abnormal",
    1008: "policy",
    1009: "too_big",
    1011: "internal_error",
    1013: "slow_client",
}


def disconnect_reason(code: int | None) -> str:
    """The metrics label for a WebSocket close code."""
    return CLOSE_REASONS.get(code, "other")


def forget_dead_processes() -> None:
    """Drop the live-gauge files of processes that are gone (killed ones never clean up)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:
            pass  # alive, another user's


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus text format, added up over processes where configured."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        forget_dead_processes()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
