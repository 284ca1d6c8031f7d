"""ASGI middleware: an HTTP API request with a body is refused before Django reads the body.

Django's ASGI handler reads a request's whole body (to a temporary file past 2.5 MB)
before any view runs, so the view's own checks come too late for a body of 300 MB.
This runs in front of Django (``relay.routing.relay_http_application``) and, for a
request under the API's path that has a body:

- refuses a declared ``Content-Length`` over ``RELAY_MAX_MESSAGE_BYTES`` (413) and a
  missing, unknown or revoked key (401) without reading a byte of it;
- reads a chunked body only up to the limit (413 past it);
- hands the body it read, and the key, to Django.

Under a server that streams bodies to the application (uvicorn, hypercorn) that is
all a client gets to send. Daphne is not one: Twisted receives the whole body (to a
temporary file) and daphne queues it in memory before any application code runs.
Only the proxy's ``client_max_body_size`` prevents that (README, "Deploy").
"""

from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable
from django.http import HttpResponse
from django.urls import NoReverseMatch, reverse

from relay import protocol
from relay.conf import conf
from relay.contrib.http_api.models import ApiKey
from relay.contrib.http_api.views import unauthorized
from relay.identity.handshake import bearer_credentials
from relay.views import error


def api_prefix() -> str | None:
    """The path the HTTP API's URLs start with (``/relay/api/``); None where it is not routed."""
    try:
        return reverse("relay:api-send").rsplit("/", 1)[0] + "/"
    except NoReverseMatch:
        return None


def under_api(path: str, prefix: str) -> bool:
    """Whether ``path`` is the API's: under ``prefix`` (``/relay/api/``), or the prefix without its slash."""
    return path.startswith(prefix) or path == prefix.rstrip("/")


def request_headers(scope: Any) -> dict[bytes, bytes]:
    """The request's headers by lower-case name (the last of repeated ones)."""
    return {name.lower(): value for name, value in scope.get("headers", ())}


def declared_length(headers: dict[bytes, bytes]) -> int | None:
    """The body's declared Content-Length; None when it has none (chunked) or a bad one."""
    try:
        return int(headers[b"content-length"])
    except (KeyError, ValueError):
        return None


def has_body(headers: dict[bytes, bytes]) -> bool:
    """Whether the request carries a body (HTTP/1.1: a Content-Length above 0, or a Transfer-Encoding)."""
    return bool(declared_length(headers)) or b"transfer-encoding" in headers


async def send_response(send: ASGISendCallable, response: HttpResponse) -> None:
    """Answer with a Django response, without Django."""
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
    headers.append((b"content-length", str(len(response.content)).encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers, "trailers": False})
    await send({"type": "http.response.body", "body": response.content, "more_body": False})


def too_large(limit: int) -> HttpResponse:
    """413, as the view answers it."""
    return error(413, protocol.MESSAGE_TOO_LARGE, f"The body may be at most {limit} bytes.")


class BodyTooLarge(Exception):
    """The body went past the limit while it was read."""


class ClientGone(Exception):
    """The client disconnected before its body was complete."""


async def read_body(receive: ASGIReceiveCallable, limit: int) -> bytes:
    """The request's body, read only as far as ``limit``; BodyTooLarge past it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replaying(body: bytes, receive: ASGIReceiveCallable) -> ASGIReceiveCallable:
    """A ``receive`` that gives the body read already, then what the server sends next (a disconnect)."""
    pending = [body]

    async def receive_again() -> ASGIReceiveEvent:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return receive_again


class ApiRequestGuard:
    """Refuse an HTTP API request with a body too large or without a valid key before reading the body."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        headers = request_headers(scope) if scope["type"] == "http" else {}
        prefix = api_prefix() if has_body(headers) else None
        path = scope.get("path", "").removeprefix(scope.get("root_path", "").rstrip("/"))
        if prefix is None or not under_api(path, prefix):
            await self.inner(scope, receive, send)
            return
        limit = conf.RELAY_MAX_MESSAGE_BYTES
        declared = declared_length(headers)
        if declared is not None and declared > limit:
            return await send_response(send, too_large(limit))
        plain = bearer_credentials(headers.get(b"authorization", b"").decode("latin-1"))
        key = await ApiKey.authenticate(plain) if plain else None
        if key is None:
            return await send_response(send, unauthorized())
        try:
            body = await read_body(receive, limit)
        except BodyTooLarge:
            return await send_response(send, too_large(limit))
        except ClientGone:
            return
        # The view takes the key from here rather than looking it up again.
        await self.inner({**scope, "relay_api_key": key}, replaying(body, receive), send)
