"""Who is connecting: the client id of a WebSocket handshake (SPEC §2), or a refusal.

First match wins: a signed token (``?token=`` or ``Authorization: Bearer``), then the
Django session of a logged-in user (``str(user.pk)``), then ``?id=`` where the open
mode is on. A token that is present but invalid is a refusal, not a fall-through.
"""

from channels.auth import get_user
from django.conf import settings

from .conf import conf
from .handshake import header, query_params, refuse_handshake
from .protocol import normalize_client_id
from .tokens import InvalidToken, client_id_from_token


class Refused(Exception):
    """No identity for this handshake; the message says why (for the log)."""


def bearer_token(scope: dict) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    value = header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused("Authorization header is not 'Bearer <token>'")
    return token.strip()


def single_param(params: dict[str, list[str]], name: str) -> str | None:
    """The one value of a query parameter; more than one is ambiguous, so refused."""
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise Refused(f"more than one ?{name}=")
    return values[0]


def has_session_cookie(scope: dict) -> bool:
    """Whether the handshake carries Django's session cookie (skips a DB query when not)."""
    return settings.SESSION_COOKIE_NAME in scope.get("cookies", {})


async def resolve_client_id(scope: dict) -> str:
    """The client id of a handshake, by token, session or ``?id=``; raises Refused."""
    params = query_params(scope)
    token = single_param(params, "token") or bearer_token(scope)
    if token is not None:
        try:
            return client_id_from_token(token)
        except InvalidToken as exc:
            raise Refused(f"invalid token: {exc}") from None
    if has_session_cookie(scope):
        user = await get_user(scope)
        scope["user"] = user
        if user.is_authenticated:
            return str(user.pk)
    raw_id = single_param(params, "id")
    if raw_id is None:
        raise Refused("no identity")
    if not conf.RELAY_ALLOW_QUERY_ID:
        raise Refused("?id= is not accepted here (RELAY_ALLOW_QUERY_ID is off)")
    client_id = normalize_client_id(raw_id)
    if client_id is None:
        raise Refused("invalid client id in ?id=")
    return client_id


class ClientIdentityMiddleware:
    """Put the client id in ``scope["relay_client_id"]``; refuse the handshake (403) without one.

    Needs ``scope["cookies"]`` and ``scope["session"]`` from Channels'
    ``SessionMiddlewareStack`` around it for session logins.
    """

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        try:
            scope["relay_client_id"] = await resolve_client_id(scope)
        except Refused as refusal:
            return await refuse_handshake(scope, receive, send, str(refusal))
        return await self.inner(scope, receive, send)
