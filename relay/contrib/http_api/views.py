"""The HTTP API, for services that are not Django.

``POST /relay/api/send`` with ``Authorization: Bearer <api key>`` and a body like a
WebSocket frame; ``GET /relay/api/presence?ids=1,2``. Every answer is JSON, errors as
``{"error": {"code": ..., "detail": ...}}`` with the WebSocket error codes. A key's scope
says which of the two it may use, and for which client ids (403 ``forbidden`` past it).
"""

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from relay import api, presence, protocol, signals
from relay.conf import conf
from relay.contrib.http_api.models import ApiKey
from relay.exceptions import LAYER_ERRORS
from relay.identity.handshake import bearer_credentials
from relay.views import error

logger = logging.getLogger(__name__)


def method_not_allowed(allowed: str) -> JsonResponse:
    """405, naming the method that is allowed."""
    return error(405, "method_not_allowed", f"Use {allowed}.", Allow=allowed)


async def authenticate(request: HttpRequest) -> ApiKey | None:
    """The API key of an ``Authorization: Bearer <key>`` header (never a session cookie).

    ``relay.contrib.http_api.asgi.ApiRequestGuard`` authenticated it already for a
    request with a body, before the body was read: that key is taken as it is.
    """
    checked = getattr(request, "scope", {}).get("relay_api_key")
    if isinstance(checked, ApiKey):
        return checked
    key = bearer_credentials(request.headers.get("Authorization", ""))
    return await ApiKey.authenticate(key) if key else None


def not_in_scope(key: ApiKey, action: str) -> JsonResponse:
    """403: the key's scope does not allow ``action`` ("send", "read presence")."""
    return error(403, protocol.FORBIDDEN, f"This key may not {action} (its scope: {key.scope}).")


def ids_out_of_scope(key: ApiKey, action: str, client_ids: list[str]) -> JsonResponse | None:
    """403 when the key's scope does not reach some of ``client_ids`` (naming them); else None."""
    refused = key.refused_ids(client_ids)
    if not refused:
        return None
    listed = ", ".join(refused[:10]) + (f" and {len(refused) - 10} more" if len(refused) > 10 else "")
    return error(403, protocol.FORBIDDEN, f"This key may not {action} for {listed} (its scope: {key.scope}).")


def unauthorized() -> JsonResponse:
    """401 for a missing, malformed, unknown or revoked key."""
    return error(
        401,
        "unauthorized",
        "Send a valid API key as 'Authorization: Bearer <key>'.",
        WWW_Authenticate='Bearer realm="relay"',
    )


def unavailable(exc: Exception) -> JsonResponse:
    """503 when Redis (the channel layer or presence) cannot be reached."""
    logger.warning("api: channel layer unavailable: %s", exc)
    return error(503, protocol.UNAVAILABLE, "The relay cannot reach its channel layer now; try again later.")


@csrf_exempt  # authenticated by a bearer key, never by cookies, so there is nothing to forge
async def send(request: HttpRequest) -> JsonResponse:
    """Push a payload to clients: 202 with its offsets (and how many targets were online, for a presence key)."""
    if request.method != "POST":
        return method_not_allowed("POST")
    key = await authenticate(request)
    if key is None:
        return unauthorized()
    if not key.can_send:
        return not_in_scope(key, "send")
    limit = conf.RELAY_MAX_MESSAGE_BYTES
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return error(400, protocol.INVALID_MESSAGE, "Content-Length is not a number.")
    try:
        too_large = declared > limit or len(request.body) > limit
    except RequestDataTooBig:
        too_large = True
    if too_large:
        return error(413, protocol.MESSAGE_TOO_LARGE, f"The body may be at most {limit} bytes.")
    try:
        message = protocol.parse_frame(
            request.body.decode("utf-8"), max_targets=conf.RELAY_MAX_TARGETS, max_bytes=limit
        )
    except UnicodeDecodeError:
        return error(400, protocol.INVALID_JSON, "The body is not UTF-8 text.")
    except protocol.ProtocolError as exc:
        return error(400, exc.code, exc.detail)
    if not isinstance(message, protocol.Frame):
        return error(
            400, protocol.INVALID_MESSAGE, "Calls and pings are for WebSocket clients; send {targets, payload}."
        )
    targets = list(message.targets)
    refusal = ids_out_of_scope(key, "send", targets)
    if refusal is not None:
        return refusal
    try:
        sent = await api.push(message.targets, message.payload_json)
    except LAYER_ERRORS as exc:
        return unavailable(exc)
    await signals.operator_push.asend(
        sender=ApiKey,
        source="api",
        actor=f"api key {key.name}",
        targets=targets,
        online=len(sent.online),
        size=len(message.payload_json),
    )
    answer: dict[str, object] = {"targets": len(targets)}
    if key.can_read_presence:  # else a binary search over sends to 1..100 would tell who is online
        answer["online"] = len(sent.online)
    answer["offsets"] = sent.offsets
    return JsonResponse(answer, status=202)


@csrf_exempt
async def presence_view(request: HttpRequest) -> JsonResponse:
    """Which of ``?ids=1,2,3`` are online: ``{"online": [...], "connections": {id: n}}``."""
    if request.method != "GET":
        return method_not_allowed("GET")
    key = await authenticate(request)
    if key is None:
        return unauthorized()
    if not key.can_read_presence:
        return not_in_scope(key, "read presence")
    raw = [part.strip() for part in request.GET.get("ids", "").split(",") if part.strip()]
    if not raw:
        return error(400, protocol.INVALID_MESSAGE, "Name the client ids: ?ids=1,2,3.")
    try:
        ids = protocol.parse_targets(raw, max_targets=conf.RELAY_MAX_TARGETS)
    except protocol.ProtocolError as exc:
        return error(400, exc.code, exc.detail)
    refusal = ids_out_of_scope(key, "read presence", list(ids))
    if refusal is not None:
        return refusal
    try:
        counts = await presence.aconnections(ids)
    except LAYER_ERRORS as exc:
        return unavailable(exc)
    return JsonResponse({"online": [i for i in ids if i in counts], "connections": counts})


@csrf_exempt  # else a POST to an unknown path gets Django's CSRF page (HTML), not this JSON
async def not_found(request: HttpRequest) -> JsonResponse:
    """404 in JSON for any other path under the API, whatever the method."""
    return error(404, "not_found", "No such endpoint: see the README's 'HTTP API'.")
