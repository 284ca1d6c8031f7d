"""Identity backends: who a WebSocket handshake connects as (``RELAY_IDENTITY_BACKENDS``).

Each backend looks at the handshake's scope and returns an :class:`Identity`, returns
None to let the next one decide, or raises :class:`~relay.exceptions.Refused` to refuse
the handshake (HTTP 403). The first Identity wins. The default chain is a signed token
(``?token=`` or ``Authorization: Bearer``), then the Django session of a logged-in user
(``str(user.pk)``), then ``?id=`` where the open mode is on.
"""

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import import_module
from typing import TYPE_CHECKING, Any

from asgiref.typing import WebSocketScope
from channels.auth import get_user
from channels.db import database_sync_to_async
from django.conf import settings
from django.http.cookie import parse_cookie
from django.utils.module_loading import import_string

from relay import logs
from relay.conf import conf
from relay.exceptions import InvalidToken, Refused
from relay.identity.handshake import bearer_credentials, client_address, header, query_params
from relay.identity.tokens import client_id_from_token
from relay.protocol import normalize_client_id

if TYPE_CHECKING:
    from relay.identity.handshake import RelayScope

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is: the decision of the backend that recognised the handshake."""

    #: The client id the connection receives for and sends as.
    client_id: str
    #: The Django user, for session logins (and backends that have one); else None.
    user: Any = None
    #: Whatever the backend attaches; handlers and signals see it as ``client.data``.
    data: Mapping[str, Any] = field(default_factory=dict)
    #: Short name of the backend that decided ("token", "session", "query_id", ...).
    #: Left empty, :func:`identify` fills in the backend's ``name``.
    backend: str = ""
    #: The key of the Django session that proved the identity (session logins), else None:
    #: when that session logs out, its connections are closed (4401).
    session_key: str | None = None


class IdentityBackend:
    """Base class of the classes named in ``RELAY_IDENTITY_BACKENDS``.

    One instance serves every handshake of the process: keep no per-connection state
    on ``self``. ``authenticate`` may be a plain (sync) method instead of a coroutine:
    it then runs in a thread through ``channels.db.database_sync_to_async``, where the
    ORM works.
    """

    #: Short name for logs and ``Identity.backend``; the class name when empty.
    name: str = ""

    async def authenticate(self, scope: "RelayScope") -> Identity | None:
        """The Identity of the handshake, or None to let the next backend decide.

        Raise ``Refused(reason, detail)`` to refuse the handshake: ``reason`` is a short
        fixed word (a metrics label), ``detail`` says more, for the log.
        """
        raise NotImplementedError(f"{type(self).__qualname__} must define authenticate(scope)")


def single_param(params: dict[str, list[str]], name: str) -> str | None:
    """The one value of a query parameter; more than one is ambiguous, so refused."""
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise Refused("ambiguous", f"more than one ?{name}=")
    return values[0]


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


class TokenBackend(IdentityBackend):
    """A signed token in ``?token=`` or ``Authorization: Bearer``; a bad one refuses, never falls through."""

    name = "token"

    async def authenticate(self, scope: "RelayScope") -> Identity | None:
        """The token's ``sub``; None without a token."""
        token = single_param(query_params(scope), "token")
        if token is None:
            token = bearer_token(scope)
        if token is None:
            return None
        # Even an empty ?token=: a client that sent a token meant to use it.
        try:
            return Identity(client_id_from_token(token), backend=self.name)
        except InvalidToken as exc:
            raise Refused("invalid_token", str(exc)) from None


class SessionBackend(IdentityBackend):
    """The logged-in user of the Django session cookie, as ``get_client_id(user)``.

    Loads the session the way Channels' ``AuthMiddlewareStack`` does, but only when
    there is a session cookie (no database query otherwise) and without wrapping
    ``send`` for the whole life of the connection. Sets ``scope["session"]`` and
    ``scope["user"]`` when there is a cookie.
    """

    name = "session"

    async def authenticate(self, scope: "RelayScope") -> Identity | None:
        """The logged-in user's Identity; None without a session cookie or a logged-in user."""
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
        raw_id = self.get_client_id(user)
        if raw_id is None:
            return None
        client_id = normalize_client_id(raw_id)
        if client_id is None:  # e.g. a primary key or a username that is an e-mail address
            raise Refused("invalid_id", "the session user's client id (get_client_id) is not a valid client id")
        return Identity(client_id, user=user, backend=self.name, session_key=session_key)

    def get_client_id(self, user: Any) -> str | None:
        """The client id of a logged-in user: ``str(user.pk)``; None lets the next backend decide.

        Override it to connect users as something else, e.g. ``user.username``. It runs
        on the event loop: read the user's fields, do not query the database.
        """
        return str(user.pk)


class QueryIdBackend(IdentityBackend):
    """``?id=<client id>``, only where ``RELAY_ALLOW_QUERY_ID`` is on (anyone can claim any id)."""

    name = "query_id"

    async def authenticate(self, scope: "RelayScope") -> Identity | None:
        """The client id of ``?id=``; None without one."""
        raw_id = single_param(query_params(scope), "id")
        if raw_id is None:
            return None
        if not conf.RELAY_ALLOW_QUERY_ID:
            raise Refused("query_id_disabled", "?id= is not accepted here (RELAY_ALLOW_QUERY_ID is off)")
        client_id = normalize_client_id(raw_id)
        if client_id is None:
            raise Refused("invalid_id", f"{raw_id[:80]!r} is not a client id")
        return Identity(client_id, backend=self.name)


@lru_cache(maxsize=8)
def _instantiate(paths: tuple[str, ...]) -> tuple[IdentityBackend, ...]:
    # Classes with an authenticate method but not IdentityBackend subclasses work too (relay.E020).
    return tuple(import_string(path)() for path in paths)


def load_backends() -> tuple[IdentityBackend, ...]:
    """The configured backends, in order (the setting is read at access time; cached per tuple of paths)."""
    return _instantiate(tuple(conf.RELAY_IDENTITY_BACKENDS))


def backend_name(backend: object) -> str:
    """A backend's ``name``, or its class name when it has none."""
    return getattr(backend, "name", "") or type(backend).__name__


async def identify(scope: "RelayScope") -> Identity:
    """The Identity of a handshake from the first backend that gives one; raises Refused.

    ``Refused("no_identity")`` when none does. A backend that raises anything else (or
    cannot be loaded) has a bug: it is logged with its traceback and the handshake is
    refused as ``identity_error``, not failed with a traceback in the client's face.
    """
    try:
        backends = load_backends()
    except Exception as exc:  # daphne runs no system checks: relay.E020 may never have been seen
        raise identity_error(scope, "RELAY_IDENTITY_BACKENDS", exc) from exc
    for backend in backends:
        name = backend_name(backend)
        try:
            if inspect.iscoroutinefunction(backend.authenticate):
                result: object = await backend.authenticate(scope)
            else:  # a sync authenticate: in a thread, where the ORM works
                result = await database_sync_to_async(backend.authenticate)(scope)
            if result is None:
                continue
            if not isinstance(result, Identity):
                raise TypeError(f"authenticate() returned {result!r}, not an Identity or None")
        except Refused:
            raise
        except Exception as exc:
            raise identity_error(scope, name, exc) from exc
        return checked(result, name)
    raise Refused("no_identity")


def identity_error(scope: "RelayScope", name: str, exc: Exception) -> Refused:
    """Log a backend's bug with its traceback (one ERROR line) and return the refusal to raise."""
    logger.error(
        "event=identity_error backend=%s peer=%s path=%s",
        name,
        client_address(scope),
        logs.field(scope.get("path", "")),
        exc_info=exc,
    )
    return Refused("identity_error", f"{name}: {type(exc).__name__}: {exc}")


def checked(identity: Identity, name: str) -> Identity:
    """``identity`` with its client id normalised (``42`` is ``"42"``) and the backend named."""
    client_id = normalize_client_id(identity.client_id)
    if client_id is None:
        raise Refused("invalid_id", f"{str(identity.client_id)[:80]!r} from the {name} backend is not a client id")
    if client_id == identity.client_id and identity.backend:
        return identity
    return replace(identity, client_id=client_id, backend=identity.backend or name)
