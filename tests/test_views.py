"""/relay/healthz and /relay/metrics: what anyone may learn, and who may read metrics (issue 12)."""

import logging
import socket

import pytest
from django.test import AsyncClient, Client

from relay import views
from relay.server.hub import running_hub

TOKEN = "metrics-token-0123456789"
REDIS_ERROR = "Error 111 connecting to 10.0.0.5:6379. Connection refused."
AUTH_ERROR = "AUTH failed for redis://10.0.0.5:6379: WRONGPASS invalid username-password pair or user is disabled."


class FakeHub:
    def __init__(self, problem: str | None = None, draining: bool = False) -> None:
        self._problem = problem
        self.draining = draining

    async def wait_started(self, timeout: float) -> None:
        pass

    def problem(self) -> str | None:
        return self._problem


@pytest.fixture
def token(settings):
    settings.RELAY_METRICS_TOKEN = TOKEN


@pytest.fixture(autouse=True)
def fresh_health_log(monkeypatch):
    """Each test starts as a fresh process: nothing logged about its health yet."""
    monkeypatch.setattr(views, "health_log", views.HealthLog())


async def test_healthz_is_ok():
    response = await AsyncClient().get("/relay/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def layer_down():
    raise ConnectionError(REDIS_ERROR)


@pytest.mark.parametrize(
    ("hub", "layer", "reason", "detail"),
    [
        (None, layer_down, "channel_layer", f"channel layer: {REDIS_ERROR}"),
        (FakeHub(AUTH_ERROR), None, "redis", f"bus: {AUTH_ERROR}"),
        (FakeHub(draining=True), None, "draining", "the process is shutting down (SIGTERM)"),
    ],
)
async def test_healthz_tells_anyone_only_a_category_never_an_address_or_a_servers_error(
    monkeypatch, token, caplog, hub, layer, reason, detail
):
    monkeypatch.setattr(views, "hub_to_check", lambda request: hub)
    if layer is not None:
        monkeypatch.setattr(views, "layer_round_trip", layer)

    public = await AsyncClient().get("/relay/healthz")

    assert (public.status_code, public.json()) == (503, {"status": "unavailable", "reason": reason})
    for secret in ("10.0.0.5", "6379", "WRONGPASS", "refused"):
        assert secret not in public.content.decode()
    # The full reason: in the log, and for the metrics token.
    assert any(
        f"event=unhealthy reason={reason}" in r.getMessage() and "detail=" in r.getMessage() for r in caplog.records
    )
    with_token = await AsyncClient().get("/relay/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert with_token.json() == {"status": "unavailable", "reason": reason, "detail": detail}
    wrong = await AsyncClient().get("/relay/healthz", headers={"Authorization": "Bearer not-the-token-0000"})
    assert wrong.json() == {"status": "unavailable", "reason": reason}


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_fresh_process_starts_its_hub_at_the_health_check_and_reports_its_redis(settings):
    """The finding: before the first WebSocket there was no hub, so Redis links that cannot work went unchecked."""
    settings.RELAY_REDIS_URL = f"redis://127.0.0.1:{unused_port()}/0"  # nothing listens: refused at once
    assert running_hub() is None  # no WebSocket came
    try:
        response = await AsyncClient().get("/relay/healthz")
        assert (response.status_code, response.json()) == (503, {"status": "unavailable", "reason": "redis"})
        assert running_hub() is not None  # and the sockets to come will find it started
    finally:
        if (hub := running_hub()) is not None:
            hub.close()


class ChangingHub(FakeHub):
    def set_problem(self, problem: str | None) -> None:
        self._problem = problem


async def test_an_unhealthy_process_logs_its_reason_once_per_change_not_at_every_probe(monkeypatch, caplog):
    """The finding: three lines at every probe (event=unhealthy, and Django's "Service Unavailable" twice)."""
    hub = ChangingHub(AUTH_ERROR)
    monkeypatch.setattr(views, "hub_to_check", lambda request: hub)

    async def probes(count: int) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for _ in range(count):
                await AsyncClient().get("/relay/healthz")
        return [f"{r.name} {r.getMessage().split(' detail=')[0]}" for r in caplog.records]

    assert await probes(3) == ["relay.views event=unhealthy reason=redis"]
    hub.set_problem(REDIS_ERROR)  # another reason: logged once again
    assert await probes(3) == ["relay.views event=unhealthy reason=redis"]
    hub.set_problem(None)
    assert await probes(3) == ["relay.views event=healthy"]
    hub.draining = True
    assert await probes(2) == ["relay.views event=unhealthy reason=draining"]


@pytest.mark.parametrize(
    ("remote", "forwarded_for", "trusted", "status"),
    [
        ("127.0.0.1", None, [], 200),
        ("127.0.0.3", None, [], 403),
        # The finding: 127.0.0.3 claiming to be 127.0.0.1 read the metrics.
        ("127.0.0.3", "127.0.0.1", [], 403),
        ("127.0.0.3", "127.0.0.1", ["127.0.0.1"], 403),
        # A trusted proxy names the client: its address is what counts.
        ("127.0.0.3", "127.0.0.1", ["127.0.0.3"], 200),
        ("127.0.0.3", "203.0.113.9", ["127.0.0.3"], 403),
    ],
)
def test_metrics_believe_x_forwarded_for_only_from_a_trusted_proxy(settings, remote, forwarded_for, trusted, status):
    settings.RELAY_TRUSTED_PROXIES = trusted
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = Client(REMOTE_ADDR=remote).get("/relay/metrics", headers=headers)
    assert response.status_code == status
