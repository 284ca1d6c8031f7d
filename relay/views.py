"""The relay's own HTTP endpoints: ``/relay/healthz`` for load balancers, ``/relay/metrics`` for Prometheus."""

import asyncio
import hmac
import ipaddress
import logging

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse

from relay import metrics
from relay.api import default_layer
from relay.conf import conf
from relay.exceptions import LAYER_ERRORS
from relay.identity.handshake import bearer_credentials
from relay.identity.peers import resolve_client
from relay.logs import field
from relay.server.hub import Hub, get_hub, running_hub

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT = 2.0


def error(status: int, code: str, detail: str, **headers: str) -> JsonResponse:
    """A JSON error response ``{"error": {"code": ..., "detail": ...}}``; ``_`` in header names becomes ``-``."""
    response = JsonResponse({"error": {"code": code, "detail": detail}}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


async def layer_round_trip() -> None:
    """Send a message to a fresh channel and receive it back through the channel layer."""
    layer = default_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "relay.health"})
    await layer.receive(channel)
    # channels-redis' pub/sub layer forgets a channel when a receive on it is cancelled
    # (that is how consumers leave); do the same so health checks leave nothing behind.
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    receiving.cancel()
    await asyncio.gather(receiving, return_exceptions=True)


def hub_to_check(request: HttpRequest) -> Hub | None:
    """This process's hub, started here if no WebSocket has come yet; None outside an ASGI server.

    The hub, and with it the relay's Redis links, starts at the first WebSocket: a fresh
    process whose links cannot work would pass the check until then. Under ASGI the view
    runs in the server's event loop, the one the sockets will use; under WSGI (no sockets)
    each request has a loop of its own, and a hub started there would serve nothing.
    """
    return get_hub() if isinstance(request, ASGIRequest) else running_hub()


async def health_problem(hub: Hub | None) -> tuple[str, str] | None:
    """Why this process should not get traffic now: a short category and the full reason; None if healthy.

    Categories: ``draining`` (SIGTERM: it is closing its sockets), ``channel_layer`` (a
    message did not round-trip the layer), ``redis`` (the relay's own Redis connections are down).
    """
    if hub is not None and hub.draining:
        return "draining", "the process is shutting down (SIGTERM)"
    if hub is not None:  # a fresh hub's links are still being made: "not connected yet" is no verdict
        await hub.wait_started(HEALTH_TIMEOUT)
    try:
        await asyncio.wait_for(layer_round_trip(), HEALTH_TIMEOUT)
    except LAYER_ERRORS as exc:
        reason = "the channel layer did not answer in time" if isinstance(exc, asyncio.TimeoutError) else str(exc)
        return "channel_layer", f"channel layer: {reason}"
    problem = hub.problem() if hub is not None else None
    if problem:
        return "redis", f"bus: {problem}"
    return None


async def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the channel layer round-trips and the relay's bus is up; 503 with a short reason.

    Anyone may ask, so the answer never holds an address, a port or a server's error
    text (``{"status": "unavailable", "reason": "redis"}``): the full reason is logged
    (when it changes), and given as ``detail`` to a request with the metrics token.
    """
    problem = await health_problem(hub_to_check(request))
    health_log.record(problem)
    if problem is None:
        return JsonResponse({"status": "ok"})
    category, detail = problem
    body = {"status": "unavailable", "reason": category}
    if has_metrics_token(request):
        body["detail"] = detail
    response = JsonResponse(body, status=503)
    # Django logs every 5xx ("Service Unavailable: /relay/healthz"), at every probe of the
    # load balancer; the reason is logged once per change above. It skips a response so marked.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


class HealthLog:
    """Logs the health check's findings when they change, not at every probe (a load balancer probes every second)."""

    def __init__(self) -> None:
        #: The problem logged last; None: healthy (or nothing logged yet).
        self.last: tuple[str, str] | None = None

    def record(self, problem: tuple[str, str] | None) -> None:
        """Log ``problem`` (category, detail) unless it is the one logged last; None: healthy (again)."""
        if problem == self.last:
            return
        if problem is None:
            logger.warning("event=healthy")
        else:
            logger.warning("event=unhealthy reason=%s detail=%s", problem[0], field(problem[1]))
        self.last = problem


#: This process's health log: one per process, as the load balancer sees one per process.
health_log = HealthLog()


def has_metrics_token(request: HttpRequest) -> bool:
    """Whether the request carries ``Authorization: Bearer <RELAY_METRICS_TOKEN>``."""
    token = conf.RELAY_METRICS_TOKEN
    if not token:
        return False
    given = bearer_credentials(request.headers.get("Authorization", ""))
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: resolved by ``relay_http_application`` already, or here.

    Here means without that middleware in front of Django: REMOTE_ADDR is then the
    socket's peer, unless daphne runs with ``--proxy-headers`` (which the README says to
    drop), and X-Forwarded-For counts only from RELAY_TRUSTED_PROXIES (relay.identity.peers).
    """
    scope = getattr(request, "scope", {})
    if "relay_peer" in scope:  # PeerMiddleware ran
        client = scope.get("client")
    else:
        remote = request.META.get("REMOTE_ADDR")
        forwarded = request.headers.get("X-Forwarded-For")
        client = resolve_client((remote, 0) if remote else None, forwarded, conf.RELAY_TRUSTED_PROXIES)
    return str(client[0]) if client else None


def metrics_allowed(request: HttpRequest) -> bool:
    """Whether the request may read metrics: the bearer token, or an allowed address."""
    if has_metrics_token(request):
        return True
    try:
        address = ipaddress.ip_address(client_ip(request) or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(allowed, strict=False) for allowed in conf.RELAY_METRICS_ALLOWED_IPS)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for the allow-listed addresses or the metrics token."""
    if not metrics_allowed(request):
        return error(403, "forbidden", "Metrics are not public.")
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
