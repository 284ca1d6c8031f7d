"""Who is connecting: the client id of a WebSocket handshake, or a refusal.

First match wins: a signed token (``?token=`` or ``Authorization: Bearer``), then the
Django session of a logged-in user (``str(user.pk)``), then ``?id=`` where the open
mode is on. A token that is present but invalid is a refusal, not a fall-through.
"""

from importlib import import_module
from typing import TYPE_CHECKING

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, WebSocketScope
from channels.auth import get_user
from django.conf import settings
from django.http.cookie import parse_cookie

from relay.conf import conf
from relay.exceptions import InvalidToken, Refused
from relay.identity.handshake import bearer_credentials, header, query_params, refuse_handshake
from relay.identity.tokens import client_id_from_token
from relay.protocol import normalize_client_id

if TYPE_CHECKING:
    from relay.identity.handshake import RelayApplication, RelayScope


def bearer_token(scope: WebSocketScope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any.

    Other schemes are not ours to judge: a browser behind a Basic-auth proxy resends
    those credentials on the WebSocket handshake too.
    """
    value = header(scope, b"authorization")
    token = bearer_credentials(value.decode("latin-1")) if value is not None else None
    if token == "":
        raise Refused("invalid_token", "empty Bearer token")
    return token


def single_param(params: dict[str, list[str]], name: str) -> str | None:
    """The one value of a query parameter; more than one is ambiguous, so refused."""
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise Refused("ambiguous", f"more than one ?{name}=")
    return values[0]


async def session_user_id(scope: "RelayScope") -> str | None:
    """``str(user.pk)`` of the logged-in user whose session cookie the handshake carries.

    Loads the session the way Channels' ``AuthMiddlewareStack`` does, but only when
    there is a session cookie (no database query otherwise) and without wrapping
    ``send`` for the whole life of the connection.
    """
    cookie = header(scope, b"cookie")
    cookies = parse_cookie(cookie.decode("latin-1")) if cookie else {}
    session_key = cookies.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return None
    scope["session"] = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    # types-channels allows only its lazy wrapper in scope["user"]; Channels' own login() stores the user.
    scope["user"] = user = await get_user(scope)  # type: ignore[typeddict-item]
    if not user.is_authenticated:
        return None
    client_id = normalize_client_id(str(user.pk))
    if client_id is None:  # e.g. a primary key that is an e-mail address
        raise Refused("invalid_id", "the user's primary key is not a valid client id")
    return client_id


async def resolve_client_id(scope: "RelayScope") -> str:
    """The client id of a handshake, by token, session or ``?id=``; raises Refused."""
    params = query_params(scope)
    token = single_param(params, "token")
    if token is None:
        token = bearer_token(scope)
    if token is not None:  # even an empty one: a client that sent a token meant to use it
        try:
            return client_id_from_token(token)
        except InvalidToken as exc:
            raise Refused("invalid_token", str(exc)) from None
    user_id = await session_user_id(scope)
    if user_id is not None:
        return user_id
    raw_id = single_param(params, "id")
    if raw_id is None:
        raise Refused("no_identity")
    if not conf.RELAY_ALLOW_QUERY_ID:
        raise Refused("query_id_disabled", "?id= is not accepted here (RELAY_ALLOW_QUERY_ID is off)")
    client_id = normalize_client_id(raw_id)
    if client_id is None:
        raise Refused("invalid_id", f"{raw_id[:80]!r} is not a client id")
    return client_id


class ClientIdentityMiddleware:
    """Put the client id in ``scope["relay_client_id"]``; refuse the handshake (403) without one."""

    def __init__(self, inner: "RelayApplication") -> None:
        self.inner = inner

    async def __call__(self, scope: "RelayScope", receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        scope = scope.copy()
        try:
            scope["relay_client_id"] = await resolve_client_id(scope)
        except Refused as refusal:
            return await refuse_handshake(scope, receive, send, refusal.reason, refusal.detail)
        return await self.inner(scope, receive, send)
