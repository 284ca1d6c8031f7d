"""The end of a session closes the sockets it opened (4401), and only those (relay.logout; issue 12).

A logout, another user's login into the session, a password change; whatever identity
backend connected the socket. In process, with the in-memory layer: this process's
connections are closed. Across processes, through Redis: ``tests/e2e/test_security.py``.
"""

import logging
from importlib import import_module

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.test import Client

import relay
from relay import logout as relay_logout
from relay.identity.backends import Identity, IdentityBackend, SessionBackend
from relay.identity.tokens import issue
from relay.protocol import CLOSE_LOGGED_OUT

pytestmark = pytest.mark.django_db(transaction=True)  # the handshake reads the session in another thread

LOGGED_OUT = {"type": "websocket.close", "code": CLOSE_LOGGED_OUT, "reason": "logged out"}
PASSWORD, NEW_PASSWORD = "an-old-Passphrase-4711", "a-new-Passphrase-0815"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def session_cookie(client: Client) -> tuple[bytes, bytes]:
    name = django_settings.SESSION_COOKIE_NAME
    return (b"cookie", f"{name}={client.cookies[name].value}".encode())


async def test_logout_closes_the_sockets_of_that_session_only(open_socket, logged_in, client, django_user_model):
    """``client`` is the browser ``logged_in`` logged in: it logs out."""
    user, cookie = logged_in
    other_browser = Client()
    await sync_to_async(other_browser.force_login)(user)
    tab, second_tab = (await open_socket("/ws", headers=[cookie]))[1], (await open_socket("/ws", headers=[cookie]))[1]
    elsewhere = (await open_socket("/ws", headers=[session_cookie(other_browser)]))[1]
    by_token = (await open_socket(f"/ws?token={issue(str(user.pk))}"))[1]
    someone_else = await sync_to_async(django_user_model.objects.create_user)("someone-else")
    their_browser = Client()
    await sync_to_async(their_browser.force_login)(someone_else)
    theirs = (await open_socket("/ws", headers=[session_cookie(their_browser)]))[1]

    await sync_to_async(client.logout)()

    assert await tab.receive_output() == LOGGED_OUT
    assert await second_tab.receive_output() == LOGGED_OUT
    for still_open in (elsewhere, by_token, theirs):
        assert await still_open.receive_nothing(timeout=0.05)
    await sync_to_async(their_browser.logout)()
    assert await theirs.receive_output() == LOGGED_OUT
    assert await elsewhere.receive_nothing(timeout=0.05)


async def test_logout_reaches_sockets_of_the_username_when_the_session_backend_says_so(
    open_socket, settings, logged_in, client
):
    """A site that connects session users by username: the logout finds them by that id."""
    settings.RELAY_IDENTITY_BACKENDS = ["tests.identity.test_backends.UsernameSessionBackend"]
    user, cookie = logged_in
    accepted, socket = await open_socket("/ws", headers=[cookie])
    assert accepted
    await sync_to_async(client.logout)()
    assert await socket.receive_output() == LOGGED_OUT


def cycle_session_key(browser: Client) -> None:
    """What update_session_auth_hash (or a site's own code) does: the session, under a new key."""
    session = browser.session
    session.cycle_key()
    session.save()
    browser.cookies[django_settings.SESSION_COOKIE_NAME] = session.session_key


async def test_a_logout_closes_the_sockets_of_a_key_the_session_had_before(open_socket, logged_in, client):
    """The finding: after a cycled session key (a password change), the 4401 went to the new key only."""
    user, cookie = logged_in
    tab = (await open_socket("/ws", headers=[cookie]))[1]
    await sync_to_async(cycle_session_key)(client)
    newer_tab = (await open_socket("/ws", headers=[session_cookie(client)]))[1]

    await sync_to_async(client.logout)()

    assert await tab.receive_output() == LOGGED_OUT  # its session is gone
    assert await newer_tab.receive_output() == LOGGED_OUT


async def test_a_password_change_closes_the_sockets_of_the_sessions_it_ended(open_socket, django_user_model):
    """The admin's password change cycles this browser's session key and invalidates the other sessions."""
    create = django_user_model.objects.create_user
    user = await sync_to_async(create)("staff", password=PASSWORD, is_staff=True)
    this_browser, other_browser = Client(), Client()
    for browser in (this_browser, other_browser):
        await sync_to_async(browser.force_login)(user)
    tab = (await open_socket("/ws", headers=[session_cookie(this_browser)]))[1]
    elsewhere = (await open_socket("/ws", headers=[session_cookie(other_browser)]))[1]
    by_token = (await open_socket(f"/ws?token={issue(str(user.pk))}"))[1]

    change = {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    response = await sync_to_async(this_browser.post)("/admin/password_change/", change)

    assert response.status_code == 302, response.content[:2000]
    assert await tab.receive_output() == LOGGED_OUT  # its key was cycled away
    assert await elsewhere.receive_output() == LOGGED_OUT  # Django logs that session out (its password hash)
    assert await by_token.receive_nothing(timeout=0.05)
    accepted, new_tab = await open_socket("/ws", headers=[session_cookie(this_browser)])  # still logged in here
    assert accepted and await new_tab.receive_nothing(timeout=0.05)
    await sync_to_async(this_browser.logout)()
    assert await new_tab.receive_output() == LOGGED_OUT


async def test_another_users_login_on_the_same_browser_closes_the_sockets_of_the_first(open_socket, django_user_model):
    """The finding: B logging in on A's browser flushes A's session without ``user_logged_out``."""
    create = django_user_model.objects.create_user
    alice = await sync_to_async(create)("alice", password=PASSWORD, is_staff=True)
    await sync_to_async(create)("bob", password=PASSWORD, is_staff=True)
    browser = Client()
    await sync_to_async(browser.force_login)(alice)
    alices_tab = (await open_socket("/ws", headers=[session_cookie(browser)]))[1]

    login = {"username": "bob", "password": PASSWORD}
    response = await sync_to_async(browser.post)("/admin/login/?next=/admin/", login)

    assert response.status_code == 302, response.content[:2000]
    assert await alices_tab.receive_output() == LOGGED_OUT
    accepted, bobs_tab = await open_socket("/ws", headers=[session_cookie(browser)])
    assert accepted and await bobs_tab.receive_nothing(timeout=0.05)


class AccountSessionBackend(IdentityBackend):
    """A site's own backend that authenticates by the session, as ``account-<pk>``, naming the session."""

    async def authenticate(self, scope):
        identity = await SessionBackend().authenticate(scope)
        if identity is None:
            return None
        return Identity(f"account-{identity.user.pk}", user=identity.user, session_key=identity.session_key)


async def test_a_logout_closes_the_sockets_of_a_sites_own_backend_that_names_the_session(
    open_socket, settings, logged_in, client
):
    """The finding: only SessionBackend's client ids were asked to close, though the README lets any backend say."""
    settings.RELAY_IDENTITY_BACKENDS = ["tests.test_logout.AccountSessionBackend"]
    _, cookie = logged_in
    accepted, socket = await open_socket("/ws", headers=[cookie])
    assert accepted
    await sync_to_async(client.logout)()
    assert await socket.receive_output() == LOGGED_OUT


async def test_a_logout_that_cannot_reach_redis_still_logs_out(logged_in, client, monkeypatch, caplog):
    async def unreachable(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to 10.0.0.5:6379. Connection refused.")

    monkeypatch.setattr(relay_logout, "end_here", unreachable)
    _, cookie = logged_in
    session_key = cookie[1].decode().split("=", 1)[1]
    with caplog.at_level(logging.WARNING, "relay"):
        await sync_to_async(client.logout)()
    session_store = import_module(django_settings.SESSION_ENGINE).SessionStore
    assert not await session_store().aexists(session_key)  # logged out all the same
    assert [r.getMessage().split()[0] for r in caplog.records] == ["event=logout_disconnect_failed"]


def test_a_logout_without_a_user_or_a_session_does_nothing(monkeypatch):
    monkeypatch.setattr(relay_logout, "end_sessions", lambda *a, **k: pytest.fail("nothing to close"))
    relay_logout.close_sockets_on_logout(None, request=None, user=None)


def test_disconnect_refuses_a_session_key_a_bus_message_cannot_carry():
    with pytest.raises(ValueError, match="not a session key"):
        relay.disconnect("alice", session_key="a\nb")
    with pytest.raises(ValueError, match="not a session key"):
        relay.disconnect("alice", session_key="")


def test_a_logout_does_not_depend_on_the_identity_backends(settings, caplog):
    """A broken RELAY_IDENTITY_BACKENDS (relay.E020) must not break the site's logout: sessions name the sockets."""
    settings.RELAY_IDENTITY_BACKENDS = ["no_such_module.Backend"]
    request = type("Request", (), {"session": type("Session", (), {"session_key": "k"})()})()
    with caplog.at_level(logging.WARNING, "relay"):
        relay_logout.close_sockets_on_logout(None, request=request, user=object())
    assert caplog.records == []
