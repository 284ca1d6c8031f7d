"""The relay's own HTTP endpoints: ``/relay/healthz`` for load balancers, ``/relay/metrics`` for Prometheus."""

import asyncio
import hmac
import ipaddress

from django.http import HttpRequest, HttpResponse, JsonResponse

from relay import metrics
from relay.api import default_layer
from relay.conf import conf
from relay.exceptions import LAYER_ERRORS
from relay.identity.handshake import bearer_credentials
from relay.server.hub import running_hub

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


async def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the channel layer round-trips and the relay's bus is up; 503 with the reason."""
    try:
        await asyncio.wait_for(layer_round_trip(), HEALTH_TIMEOUT)
    except LAYER_ERRORS as exc:
        reason = "the channel layer did not answer in time" if isinstance(exc, asyncio.TimeoutError) else str(exc)
        return JsonResponse({"status": "unavailable", "reason": f"channel layer: {reason}"}, status=503)
    hub = running_hub()  # none yet: no connection has come, nothing to report
    problem = hub.problem() if hub is not None else None
    if problem:
        return JsonResponse({"status": "unavailable", "reason": f"bus: {problem}"}, status=503)
    return JsonResponse({"status": "ok"})


def metrics_allowed(request: HttpRequest) -> bool:
    """Whether the request may read metrics: the bearer token, or an allowed address."""
    token = conf.RELAY_METRICS_TOKEN
    if token:
        given = bearer_credentials(request.headers.get("Authorization", ""))
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(allowed, strict=False) for allowed in conf.RELAY_METRICS_ALLOWED_IPS)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for the allow-listed addresses or the metrics token."""
    if not metrics_allowed(request):
        return error(403, "forbidden", "Metrics are not public.")
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
