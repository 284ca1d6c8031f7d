"""RELAY_IDENTITY_BACKENDS: the built-ins alone and as the default chain, custom backends, refusals."""

import logging
import re
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core import signing
from prometheus_client import REGISTRY

from relay.checks import check_settings
from relay.conf import conf
from relay.exceptions import Refused
from relay.identity.backends import (
    Identity,
    IdentityBackend,
    QueryIdBackend,
    SessionBackend,
    TokenBackend,
    load_backends,
)
from relay.identity.handshake import header, query_params
from relay.identity.tokens import issue
from relay.server import application
from tests.identity.test_identity import assert_identity, bearer, session_db

V1 = ["relay.v1"]
TOKEN = "relay.identity.backends.TokenBackend"
SESSION = "relay.identity.backends.SessionBackend"
QUERY_ID = "relay.identity.backends.QueryIdBackend"
DEFAULT = [TOKEN, SESSION, QUERY_ID]
HERE = "tests.identity.test_backends."
TICKET = "tests.e2e.identity_backends.TicketBackend"  # the README's example


# Custom backends, as a site would write them


class ApiKeyBackend(IdentityBackend):
    """``X-Api-Key: key-<client id>`` connects as that client id; any other key is refused."""

    name = "api_key"

    async def authenticate(self, scope):
        value = header(scope, b"x-api-key")
        if value is None:
            return None
        key = value.decode("latin-1")
        if not key.startswith("key-"):
            raise Refused("bad_api_key", "API keys start with key-")
        return Identity(key.removeprefix("key-"), data={"plan": "pro", "key": key})


class DatabaseUserBackend:
    """``?user=<username>`` of an active user; sync and not a subclass: it runs in a thread, so the ORM works."""

    def authenticate(self, scope):
        usernames = query_params(scope).get("user")
        if not usernames:
            return None
        user = get_user_model().objects.filter(username=usernames[0], is_active=True).first()
        if user is None:
            raise Refused("unknown_user", f"no active user {usernames[0]!r}")
        return Identity(user.username, user=user, data={"pk": user.pk})


class UsernameSessionBackend(SessionBackend):
    """Session logins connect as the username (the README's example)."""

    def get_client_id(self, user):
        return user.username


class NoBotsSessionBackend(UsernameSessionBackend):
    """Users whose name starts with "bot" do not connect by session: the next backend decides."""

    def get_client_id(self, user):
        return None if user.username.startswith("bot") else super().get_client_id(user)


class NothingBackend(IdentityBackend):
    """Lets every handshake through to the next backend."""

    name = "nothing"

    async def authenticate(self, scope):
        return None


class CrashingBackend(IdentityBackend):
    """A bug: crashes on ``?crash=1``, decides nothing otherwise."""

    name = "crashing"

    async def authenticate(self, scope):
        if query_params(scope).get("crash"):
            raise ZeroDivisionError("division by zero in the site's backend")
        return None


class WrongResultBackend(IdentityBackend):
    """A bug: returns a bare client id instead of an Identity."""

    async def authenticate(self, scope):
        return "alice"


class InvalidIdBackend(IdentityBackend):
    """Returns an id the relay cannot route to, or a pk as an int with ``?int=1``."""

    async def authenticate(self, scope):
        return Identity(42) if query_params(scope).get("int") else Identity("not a client id")


# Helpers


def refused_reasons(caplog) -> list[str]:
    """The reasons of the refusal lines logged so far."""
    return [
        re.search(r" reason=(\S+)", record.getMessage()).group(1)
        for record in caplog.records
        if record.name == "relay.identity.handshake" and "event=refused" in record.getMessage()
    ]


def refusals_counted(reason: str) -> float:
    return REGISTRY.get_sample_value("relay_handshakes_refused_total", {"reason": reason}) or 0.0


async def scope_seen_by_the_consumer(path: str, headers=None) -> tuple[bool, dict]:
    """Handshake through the relay's application, with a consumer that records its scope and accepts."""
    seen: dict = {}

    class RecordingConsumer:
        async def __call__(self, scope, receive, send):
            seen.update(scope)
            while (await receive())["type"] != "websocket.disconnect":
                await send({"type": "websocket.accept"})

    with mock.patch.object(application, "RelayConsumer", RecordingConsumer):
        communicator = WebsocketCommunicator(application.RelayWebSocketApplication(), path, headers=headers)
        accepted, _ = await communicator.connect()
        await communicator.disconnect()
    return accepted, seen


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.INFO, "relay.identity")
    return caplog


# The setting


def test_the_default_is_the_three_built_ins_in_todays_order(settings):
    del settings.RELAY_IDENTITY_BACKENDS
    assert conf.RELAY_IDENTITY_BACKENDS == DEFAULT
    assert [type(backend) for backend in load_backends()] == [TokenBackend, SessionBackend, QueryIdBackend]
    assert [backend.name for backend in load_backends()] == ["token", "session", "query_id"]


def test_backends_are_cached_per_tuple_of_paths(settings):
    settings.RELAY_IDENTITY_BACKENDS = [TOKEN, QUERY_ID]
    first = load_backends()
    settings.RELAY_IDENTITY_BACKENDS = (TOKEN, QUERY_ID)
    assert load_backends() is first
    settings.RELAY_IDENTITY_BACKENDS = [QUERY_ID]
    assert [type(backend) for backend in load_backends()] == [QueryIdBackend]


async def test_a_changed_setting_takes_effect_on_the_next_handshake(open_socket, settings):
    settings.RELAY_IDENTITY_BACKENDS = [QUERY_ID]
    accepted, _ = await open_socket(f"/ws?token={issue('bob')}")
    assert accepted is False
    settings.RELAY_IDENTITY_BACKENDS = [TOKEN]
    accepted, communicator = await open_socket(f"/ws?token={issue('bob')}", subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "bob")


def test_custom_backends_pass_the_checks(settings):
    settings.RELAY_IDENTITY_BACKENDS = [HERE + "ApiKeyBackend", HERE + "DatabaseUserBackend", *DEFAULT]
    assert check_settings() == []


def test_a_wrong_entry_is_named_with_a_hint(settings):
    settings.RELAY_IDENTITY_BACKENDS = [TOKEN, "relay.server.policies.AllowAll"]
    (error,) = check_settings()
    assert error.id == "relay.E020"
    assert error.msg == (
        "RELAY_IDENTITY_BACKENDS entry 'relay.server.policies.AllowAll' is not an identity backend: "
        "it is not a class with an authenticate(scope) method."
    )
    assert "relay.identity.backends.IdentityBackend" in error.hint


# Each built-in alone


async def test_token_backend_alone(open_socket, settings, log):
    settings.RELAY_IDENTITY_BACKENDS = [TOKEN]
    accepted, by_query = await open_socket(f"/ws?token={issue('bob')}", subprotocols=V1)
    assert accepted
    accepted, by_header = await open_socket("/ws", headers=[bearer(issue("carol"))], subprotocols=V1)
    assert accepted
    await assert_identity(by_query, "bob")
    await assert_identity(by_header, "carol")
    accepted, _ = await open_socket("/ws?id=alice")
    assert accepted is False
    assert refused_reasons(log) == ["no_identity"]


async def test_token_identity_names_its_backend():
    accepted, scope = await scope_seen_by_the_consumer(f"/ws?token={issue('bob')}")
    assert accepted
    assert scope["relay_identity"] == Identity("bob", backend="token")
    assert scope["relay_identity"].client_id == "bob"


@session_db
async def test_session_backend_alone(open_socket, settings, logged_in, log):
    settings.RELAY_IDENTITY_BACKENDS = [SESSION]
    user, cookie = logged_in
    accepted, communicator = await open_socket("/ws?id=alice", headers=[cookie], subprotocols=V1)
    assert accepted
    await assert_identity(communicator, str(user.pk))
    for path in ("/ws?id=alice", f"/ws?token={issue('bob')}"):
        accepted, _ = await open_socket(path)
        assert accepted is False
    assert refused_reasons(log) == ["no_identity", "no_identity"]


@session_db
async def test_session_identity_carries_the_user_and_the_scope_keeps_session_and_user(logged_in):
    user, cookie = logged_in
    accepted, scope = await scope_seen_by_the_consumer("/ws", headers=[cookie])
    assert accepted
    identity = scope["relay_identity"]
    assert (identity.client_id, identity.user.pk, identity.backend, dict(identity.data)) == (
        str(user.pk),
        user.pk,
        "session",
        {},
    )
    assert scope["user"] == user
    assert scope["session"].session_key == cookie[1].decode().split("=", 1)[1]


async def test_query_id_backend_alone(open_socket, settings, log):
    settings.RELAY_IDENTITY_BACKENDS = [QUERY_ID]
    accepted, communicator = await open_socket("/ws?id=alice", subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "alice")
    accepted, _ = await open_socket(f"/ws?token={issue('bob')}")
    assert accepted is False
    settings.RELAY_ALLOW_QUERY_ID = False
    accepted, _ = await open_socket("/ws?id=alice")
    assert accepted is False
    assert refused_reasons(log) == ["no_identity", "query_id_disabled"]


async def test_query_id_identity_names_its_backend():
    accepted, scope = await scope_seen_by_the_consumer("/ws?id=alice")
    assert accepted
    assert scope["relay_identity"] == Identity("alice", backend="query_id")


# The default chain: today's refusal reasons


@pytest.mark.parametrize(
    ("path", "headers", "reason"),
    [
        pytest.param("/ws?token=garbage&id=alice", [], "invalid_token", id="bad-token"),
        pytest.param("/ws?id=alice", [(b"authorization", b"Bearer ")], "invalid_token", id="empty-bearer"),
        pytest.param("/ws?token=&id=alice", [], "invalid_token", id="empty-query-token"),
        pytest.param("/ws?token=a&token=b", [], "ambiguous", id="two-tokens"),
        pytest.param("/ws?id=alice&id=bob", [], "ambiguous", id="two-ids"),
        pytest.param("/ws?id=a%20b", [], "invalid_id", id="invalid-id"),
        pytest.param("/ws", [], "no_identity", id="nothing"),
        pytest.param("/ws", [(b"authorization", b"Basic dXNlcjpwYXNz")], "no_identity", id="basic-auth-only"),
    ],
)
async def test_default_chain_refuses_with_todays_reasons(open_socket, log, path, headers, reason):
    accepted, _ = await open_socket(path, headers=headers)
    assert accepted is False
    assert refused_reasons(log) == [reason]


async def test_query_id_disabled_is_todays_reason(open_socket, settings, log):
    settings.RELAY_ALLOW_QUERY_ID = False
    accepted, _ = await open_socket("/ws?id=alice")
    assert accepted is False
    assert refused_reasons(log) == ["query_id_disabled"]


# Custom backends


async def test_custom_backend_first_decides_before_the_built_ins(open_socket, settings):
    settings.RELAY_IDENTITY_BACKENDS = [HERE + "ApiKeyBackend", *DEFAULT]
    headers = [(b"x-api-key", b"key-carol"), bearer(issue("bob"))]
    accepted, communicator = await open_socket("/ws?id=alice", headers=headers, subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "carol")
    accepted, by_token = await open_socket("/ws?id=alice", headers=[bearer(issue("bob"))], subprotocols=V1)
    assert accepted
    await assert_identity(by_token, "bob")


async def test_data_attached_by_a_backend_reaches_the_scope(settings):
    settings.RELAY_IDENTITY_BACKENDS = [HERE + "ApiKeyBackend", *DEFAULT]
    accepted, scope = await scope_seen_by_the_consumer("/ws", headers=[(b"x-api-key", b"key-carol")])
    assert accepted
    # ApiKeyBackend left Identity.backend empty: identify() fills in the backend's name.
    assert scope["relay_identity"] == Identity("carol", data={"plan": "pro", "key": "key-carol"}, backend="api_key")
    assert scope["relay_identity"].client_id == "carol"


async def test_refusal_of_a_custom_backend_is_logged_counted_and_a_403(open_socket, settings, log):
    settings.RELAY_IDENTITY_BACKENDS = [HERE + "ApiKeyBackend", *DEFAULT]
    before = refusals_counted("bad_api_key")
    accepted, _ = await open_socket("/ws?id=alice", headers=[(b"x-api-key", b"guess")])
    assert accepted is False  # a close before accept: daphne answers HTTP 403
    assert refused_reasons(log) == ["bad_api_key"]
    assert 'detail="API keys start with key-"' in log.records[-1].getMessage()
    assert refusals_counted("bad_api_key") == before + 1


async def test_refusal_of_a_later_backend_after_an_earlier_one_passed(open_socket, settings, log):
    settings.RELAY_IDENTITY_BACKENDS = [HERE + "NothingBackend", HERE + "ApiKeyBackend", QUERY_ID]
    accepted, _ = await open_socket("/ws?id=alice", headers=[(b"x-api-key", b"guess")])
    assert accepted is False
    assert refused_reasons(log) == ["bad_api_key"]


@session_db
async def test_sync_backend_uses_the_orm(open_socket, settings, log):
    settings.RELAY_IDENTITY_BACKENDS = [HERE + "DatabaseUserBackend", *DEFAULT]
    await sync_to_async(get_user_model().objects.create_user)("dora")
    await sync_to_async(get_user_model().objects.create_user)("gone", is_active=False)
    accepted, communicator = await open_socket("/ws?user=dora&id=alice", subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "dora")
    for path in ("/ws?user=gone&id=alice", "/ws?user=nobody&id=alice"):
        accepted, _ = await open_socket(path)
        assert accepted is False
    assert refused_reasons(log) == ["unknown_user", "unknown_user"]


@session_db
async def test_sync_backend_identity_gets_the_class_name_as_backend(settings):
    settings.RELAY_IDENTITY_BACKENDS = [HERE + "DatabaseUserBackend"]
    user = await sync_to_async(get_user_model().objects.create_user)("dora")
    accepted, scope = await scope_seen_by_the_consumer("/ws?user=dora")
    assert accepted
    identity = scope["relay_identity"]
    assert (identity.client_id, identity.user, identity.data, identity.backend) == (
        "dora",
        user,
        {"pk": user.pk},
        "DatabaseUserBackend",
    )


def ticket(username: str) -> str:
    return signing.dumps(username, salt="relay.ticket")


@session_db
async def test_readme_ticket_backend_connects_an_active_user_with_data(open_socket, settings):
    settings.RELAY_IDENTITY_BACKENDS = [TICKET, *DEFAULT]
    user = await sync_to_async(get_user_model().objects.create_user)("dora", is_staff=True)
    accepted, communicator = await open_socket(f"/ws?ticket={ticket('dora')}&id=alice", subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "dora")
    accepted, scope = await scope_seen_by_the_consumer(f"/ws?ticket={ticket('dora')}")
    assert accepted
    assert scope["relay_identity"] == Identity("dora", user=user, data={"staff": True}, backend="ticket")


@session_db
async def test_readme_ticket_backend_refusals(open_socket, settings, log):
    settings.RELAY_IDENTITY_BACKENDS = [TICKET, *DEFAULT]
    await sync_to_async(get_user_model().objects.create_user)("gone", is_active=False)
    forged = signing.dumps("dora", key="k" * 50, salt="relay.ticket")
    for query in (f"ticket={ticket('nobody')}", f"ticket={ticket('gone')}", f"ticket={forged}", "ticket=garbage"):
        accepted, _ = await open_socket(f"/ws?{query}&id=alice")
        assert accepted is False
    assert refused_reasons(log) == ["unknown_user", "unknown_user", "bad_ticket", "bad_ticket"]


@session_db
async def test_session_subclass_maps_users_by_username(open_socket, settings, logged_in):
    settings.RELAY_IDENTITY_BACKENDS = [TOKEN, HERE + "UsernameSessionBackend", QUERY_ID]
    user, cookie = logged_in
    accepted, communicator = await open_socket("/ws?id=alice", headers=[cookie], subprotocols=V1)
    assert accepted
    await assert_identity(communicator, user.username)


@session_db
async def test_session_subclass_returning_none_falls_through(open_socket, settings, logged_in):
    settings.RELAY_IDENTITY_BACKENDS = [TOKEN, HERE + "NoBotsSessionBackend", QUERY_ID]
    user, cookie = logged_in
    user.username = "bot-7"
    await sync_to_async(user.save)()
    accepted, communicator = await open_socket("/ws?id=alice", headers=[cookie], subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "alice")


@session_db
async def test_session_user_whose_client_id_is_invalid_is_refused(open_socket, settings, logged_in, log):
    settings.RELAY_IDENTITY_BACKENDS = [TOKEN, HERE + "UsernameSessionBackend", QUERY_ID]
    user, cookie = logged_in
    user.username = "dora@example.com"
    await sync_to_async(user.save)()
    accepted, _ = await open_socket("/ws?id=alice", headers=[cookie])
    assert accepted is False  # invalid_id, as for a primary key that is no client id; never a fall-through
    assert refused_reasons(log) == ["invalid_id"]


# Bugs in a site's backend


async def test_crashing_backend_is_an_identity_error_and_the_next_handshake_works(open_socket, settings, log):
    settings.RELAY_IDENTITY_BACKENDS = [HERE + "CrashingBackend", *DEFAULT]
    before = refusals_counted("identity_error")

    accepted, _ = await open_socket("/ws?crash=1&id=alice")

    assert accepted is False
    errors = [record for record in log.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage() == "event=identity_error backend=crashing peer=- path=/ws"
    assert errors[0].exc_info[0] is ZeroDivisionError  # the traceback, for the site's developers
    assert refused_reasons(log) == ["identity_error"]
    assert "crashing: ZeroDivisionError: division by zero in the site's backend" in log.records[-1].getMessage()
    assert refusals_counted("identity_error") == before + 1

    accepted, communicator = await open_socket("/ws?id=alice", subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "alice")


async def test_backend_returning_something_else_is_an_identity_error(open_socket, settings, log):
    settings.RELAY_IDENTITY_BACKENDS = [HERE + "WrongResultBackend"]
    accepted, _ = await open_socket("/ws?id=alice")
    assert accepted is False
    (error,) = [record for record in log.records if record.levelno >= logging.ERROR]
    assert "backend=WrongResultBackend" in error.getMessage()
    assert error.exc_info[0] is TypeError
    assert refused_reasons(log) == ["identity_error"]


async def test_backend_giving_an_invalid_client_id_is_refused(open_socket, settings, log):
    settings.RELAY_IDENTITY_BACKENDS = [HERE + "InvalidIdBackend"]
    accepted, _ = await open_socket("/ws")
    assert accepted is False
    assert refused_reasons(log) == ["invalid_id"]
    assert [record for record in log.records if record.levelno >= logging.ERROR] == []


async def test_backend_giving_an_int_client_id_connects_as_its_decimal_id(open_socket, settings):
    settings.RELAY_IDENTITY_BACKENDS = [HERE + "InvalidIdBackend"]
    accepted, communicator = await open_socket("/ws?int=1", subprotocols=V1)
    assert accepted
    await assert_identity(communicator, "42")


async def test_a_backend_that_cannot_be_loaded_is_an_identity_error(open_socket, settings, log):
    """daphne runs no system checks, so relay.E020 may go unseen: each handshake is refused, not crashed."""
    settings.RELAY_IDENTITY_BACKENDS = [HERE + "NoSuchBackend", QUERY_ID]
    accepted, _ = await open_socket("/ws?id=alice")
    assert accepted is False
    (error,) = [record for record in log.records if record.levelno >= logging.ERROR]
    assert error.getMessage() == "event=identity_error backend=RELAY_IDENTITY_BACKENDS peer=- path=/ws"
    assert error.exc_info[0] is ImportError
    assert refused_reasons(log) == ["identity_error"]
