"""A site's own identity backend: the README's example ("Identity backends"), used by the tests.

The end-to-end tests run it first in ``tests/e2e/identity_settings.py``; the in-process
tests (``tests/identity/test_backends.py``) put it in ``RELAY_IDENTITY_BACKENDS`` too.
"""

from django.contrib.auth import get_user_model
from django.core import signing

from relay.exceptions import Refused
from relay.identity.backends import Identity, IdentityBackend, SessionBackend
from relay.identity.handshake import query_params


class TicketBackend(IdentityBackend):
    """``?ticket=`` from ``signing.dumps(user.username, salt="relay.ticket")``: that active user, for 60 s."""

    name = "ticket"

    def authenticate(self, scope):  # sync, so it runs in a thread where the ORM works
        tickets = query_params(scope).get("ticket")
        if not tickets:
            return None  # not ours: the next backend decides
        try:
            username = signing.loads(tickets[0], salt="relay.ticket", max_age=60)
        except signing.BadSignature as exc:  # forged, or expired (SignatureExpired)
            raise Refused("bad_ticket", str(exc)) from None
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise Refused("unknown_user", f"no active user {username!r}")
        return Identity(user.username, user=user, data={"staff": user.is_staff})


class AccountSessionBackend(IdentityBackend):
    """With ``?as=account``: the session's logged-in user, as ``account-<username>``, naming the session.

    A site's own backend that authenticates by the session (README: it "may set" ``session_key``
    too): logging that session out must close its sockets, whatever their client id.
    """

    name = "account"

    async def authenticate(self, scope):
        if query_params(scope).get("as") != ["account"]:
            return None
        identity = await SessionBackend().authenticate(scope)
        if identity is None:
            raise Refused("not_logged_in", "?as=account needs a logged-in session")
        user = identity.user
        return Identity(f"account-{user.username}", user=user, session_key=identity.session_key)
