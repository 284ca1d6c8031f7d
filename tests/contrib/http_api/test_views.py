"""The HTTP API: POST /relay/api/send and GET /relay/api/presence, every answer JSON."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from relay import protocol
from relay.contrib.admin.models import AuditEntry
from relay.contrib.http_api.models import ApiKey
from tests.conftest import BAD_FRAMES, frame

SEND = "/relay/api/send"
PRESENCE = "/relay/api/presence"
V1 = ["relay.v1"]

UNAUTHORIZED = {"error": {"code": "unauthorized", "detail": "Send a valid API key as 'Authorization: Bearer <key>'."}}


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """pytest-django's ``admin_user`` has a password; hashing it the slow way costs 0.2 s a test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api_key(db) -> str:
    """The plain form of an active API key named ``billing``, that may send and read presence."""
    return ApiKey.generate("billing", can_read_presence=True)[1]


def auth(plain: str) -> dict[str, str]:
    return {"authorization": f"Bearer {plain}"}


def post(client, body: str | bytes, plain: str | None = None):
    return client.post(SEND, body, content_type="application/json", headers=auth(plain) if plain else {})


def assert_json_error(response, status: int, code: str, detail: str | None = None) -> dict:
    """The response is a JSON error (never HTML) with this status and code; returns its body."""
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    assert sorted(body["error"]) == ["code", "detail"]
    assert body["error"]["code"] == code
    if detail is not None:
        assert body["error"]["detail"] == detail
    return body


# Sending


@pytest.mark.django_db(transaction=True)
async def test_send_delivers_to_connections_and_says_who_was_online(connect, api_key):
    bob = await connect("bob")
    bob_v1 = await connect("bob", V1)
    two = await connect("2")
    carol = await connect("carol")
    body = '{"targets": ["bob", "nobody", 2, "bob"], "payload": {"a": [1, null]}, "extra": "ignored"}'
    response = await post(AsyncClient(), body, api_key)
    assert response.status_code == 202
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"targets": 3, "online": 2, "offsets": {}}
    assert await bob.receive_from() == '{"a":[1,null]}'
    assert json.loads(await bob_v1.receive_from()) == {"type": "message", "from": None, "payload": {"a": [1, None]}}
    assert await two.receive_from() == '{"a":[1,null]}'
    for communicator in (bob, bob_v1, two, carol):
        assert await communicator.receive_nothing(timeout=0.01)


@pytest.mark.django_db(transaction=True)
async def test_send_records_an_audit_entry_and_uses_the_key(connect, api_key):
    await connect("bob")
    response = await post(AsyncClient(), frame(["bob", "carol"], {"text": "é"}), api_key)
    assert response.status_code == 202
    entry = await AuditEntry.objects.aget()
    fields = (entry.source, entry.targets, entry.online, entry.size)
    assert fields == ("api", ["bob", "carol"], 1, len('{"text":"\\u00e9"}'))
    assert "billing" in entry.actor
    assert entry.actor == "api key billing"
    key = await ApiKey.objects.aget(name="billing")
    assert key.last_used_at is not None


@pytest.mark.django_db
def test_send_with_nobody_online(api_key):
    response = post(Client(), frame(["bob"], None), api_key)
    assert response.status_code == 202
    assert response.json() == {"targets": 1, "online": 0, "offsets": {}}
    assert AuditEntry.objects.get().targets == ["bob"]


@pytest.mark.django_db
def test_send_when_the_channel_layer_is_unavailable(api_key, monkeypatch):
    async def unreachable(ids, payload_json):
        raise ConnectionRefusedError("Connection refused")

    monkeypatch.setattr("relay.api.push", unreachable)
    response = post(Client(), frame(["bob"], 1), api_key)
    assert_json_error(response, 503, "unavailable", "The relay cannot reach its channel layer now; try again later.")
    assert AuditEntry.objects.count() == 0


# Who may send: 401


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-header"),
        pytest.param("", id="empty-header"),
        pytest.param("Bearer", id="bearer-without-key"),
        pytest.param("Bearer ", id="bearer-blank-key"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
        pytest.param("{key}", id="key-without-scheme"),
        pytest.param("Token {key}", id="other-scheme"),
        pytest.param("Bearer rk_000000000000_unknown", id="unknown-key"),
        pytest.param("Bearer {key}x", id="key-with-extra-char"),
        pytest.param("Bearer {key_prefix}_wrongsecret", id="right-prefix-wrong-secret"),
        pytest.param("Bearer not-a-key", id="garbage"),
    ],
)
@pytest.mark.parametrize("method", ["send", "presence"])
def test_unauthorized(api_key, authorization, method):
    headers = {}
    if authorization is not None:
        key_prefix = api_key.rsplit("_", 1)[0]
        headers["authorization"] = authorization.format(key=api_key, key_prefix=key_prefix)
    client = Client()
    if method == "send":
        response = client.post(SEND, frame(["bob"], 1), content_type="application/json", headers=headers)
    else:
        response = client.get(PRESENCE, {"ids": "bob"}, headers=headers)
    assert_json_error(response, 401, "unauthorized")
    assert response.json() == UNAUTHORIZED
    assert response["WWW-Authenticate"] == 'Bearer realm="relay"'
    assert AuditEntry.objects.count() == 0


@pytest.mark.django_db
def test_revoked_key_is_unauthorized(api_key):
    ApiKey.objects.get(name="billing").revoke()
    response = post(Client(), frame(["bob"], 1), api_key)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert response["WWW-Authenticate"] == 'Bearer realm="relay"'


@pytest.mark.django_db
def test_bearer_scheme_is_case_insensitive(api_key):
    headers = {"authorization": f"bearer {api_key}"}
    response = Client().post(SEND, frame(["bob"], 1), content_type="application/json", headers=headers)
    assert response.status_code == 202


# What may be sent: 400 and 413, with the WebSocket's error codes

#: The bad frames whose HTTP answer is a 400: size is a 413 over HTTP, and there are no binary bodies.
BAD_BODIES = [
    param for param in BAD_FRAMES if param.values[1] not in (protocol.MESSAGE_TOO_LARGE, protocol.BINARY_NOT_SUPPORTED)
]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "code"), BAD_BODIES)
def test_bad_body_is_400_with_the_websocket_error(api_key, recording_layer, body, code):
    with pytest.raises(protocol.ProtocolError) as websocket_error:
        protocol.parse_frame(body, max_targets=100, max_bytes=64 * 1024)
    assert websocket_error.value.code == code
    response = post(Client(), body, api_key)
    assert_json_error(response, 400, code, websocket_error.value.detail)
    assert recording_layer.sent == []
    assert AuditEntry.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("body", [b"\xff\xfe", b'{"targets": ["bob"], "payload": "\xe9"}'])
def test_non_utf8_body_is_400(api_key, recording_layer, body):
    response = post(Client(), body, api_key)
    assert_json_error(response, 400, protocol.INVALID_JSON, "The body is not UTF-8 text.")
    assert recording_layer.sent == []


@pytest.mark.django_db
def test_max_targets_is_read_from_settings(api_key, settings):
    settings.RELAY_MAX_TARGETS = 2
    response = post(Client(), frame(["a", "b", "c"], 1), api_key)
    assert_json_error(response, 400, protocol.TOO_MANY_TARGETS, "3 targets; at most 2 are allowed.")
    assert post(Client(), frame(["a", "b", "a"], 1), api_key).status_code == 202


def sized_body(size: int, char: str = "x") -> str:
    """A valid body of exactly ``size`` UTF-8 bytes."""
    empty = frame(["bob"], "")
    count = (size - len(empty.encode())) // len(char.encode())
    body = frame(["bob"], char * count)
    assert len(body.encode()) == size
    return body


@pytest.mark.django_db
@pytest.mark.parametrize(("size", "status"), [(100, 202), (101, 413)])
def test_size_limit_is_in_bytes(api_key, settings, size, status):
    settings.RELAY_MAX_MESSAGE_BYTES = 100
    response = post(Client(), sized_body(size), api_key)
    assert response.status_code == status
    if status == 413:
        assert_json_error(response, 413, protocol.MESSAGE_TOO_LARGE, "The body may be at most 100 bytes.")


@pytest.mark.django_db
def test_size_limit_counts_utf8_bytes(api_key, settings, recording_layer):
    settings.RELAY_MAX_MESSAGE_BYTES = 100
    body = frame(["bob"], "é" * 40)  # under 100 characters, over 100 bytes
    assert len(body) < 100 < len(body.encode())
    assert_json_error(post(Client(), body, api_key), 413, protocol.MESSAGE_TOO_LARGE)
    assert recording_layer.sent == []


@pytest.mark.django_db
def test_default_size_limit(api_key, recording_layer):
    assert post(Client(), sized_body(64 * 1024), api_key).status_code == 202
    response = post(Client(), sized_body(64 * 1024 + 1), api_key)
    assert_json_error(response, 413, protocol.MESSAGE_TOO_LARGE, "The body may be at most 65536 bytes.")
    assert len(recording_layer.sent) == 1


@pytest.mark.django_db
def test_body_over_django_upload_limit_is_413(api_key, recording_layer):
    response = post(Client(), sized_body(3 * 1024 * 1024), api_key)
    assert_json_error(response, 413, protocol.MESSAGE_TOO_LARGE)
    assert recording_layer.sent == []


# Methods and paths


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_send_allows_only_post(method):
    response = getattr(Client(), method)(SEND)
    assert_json_error(response, 405, "method_not_allowed", "Use POST.")
    assert response["Allow"] == "POST"


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_presence_allows_only_get(method):
    response = getattr(Client(), method)(PRESENCE)
    assert_json_error(response, 405, "method_not_allowed", "Use GET.")
    assert response["Allow"] == "GET"


@pytest.mark.parametrize("path", ["/relay/api/x", "/relay/api/", "/relay/api/send/extra", "/relay/api/send/"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_unknown_api_path_is_404_json(path, method):
    response = getattr(Client(), method)(path)
    assert_json_error(response, 404, "not_found", "No such endpoint: see the README's 'HTTP API'.")


# Presence


@pytest.mark.django_db(transaction=True)
async def test_presence(connect, api_key):
    await connect("alice")
    await connect("alice")
    await connect("2")
    await connect("carol")
    response = await AsyncClient().get(PRESENCE, {"ids": "alice, nobody,2,alice"}, headers=auth(api_key))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"online": ["alice", "2"], "connections": {"alice": 2, "2": 1}}


@pytest.mark.django_db
def test_presence_of_nobody(api_key):
    response = Client().get(PRESENCE, {"ids": "alice,bob"}, headers=auth(api_key))
    assert response.status_code == 200
    assert response.json() == {"online": [], "connections": {}}


@pytest.mark.django_db
@pytest.mark.parametrize("query", [{}, {"ids": ""}, {"ids": " , ,"}, {"other": "alice"}])
def test_presence_without_ids_is_400(api_key, query):
    response = Client().get(PRESENCE, query, headers=auth(api_key))
    assert_json_error(response, 400, protocol.INVALID_MESSAGE, "Name the client ids: ?ids=1,2,3.")


@pytest.mark.django_db
def test_presence_with_an_invalid_id_is_400(api_key):
    response = Client().get(PRESENCE, {"ids": "alice,a b"}, headers=auth(api_key))
    assert_json_error(response, 400, protocol.INVALID_TARGET)


@pytest.mark.django_db
def test_presence_with_too_many_ids_is_400(api_key, settings):
    settings.RELAY_MAX_TARGETS = 2
    response = Client().get(PRESENCE, {"ids": "a,b,c"}, headers=auth(api_key))
    assert_json_error(response, 400, protocol.TOO_MANY_TARGETS, "3 targets; at most 2 are allowed.")


# Cookies are never authentication for the API


@pytest.mark.django_db
def test_bearer_key_works_with_csrf_checks_enforced(api_key):
    response = post(Client(enforce_csrf_checks=True), frame(["bob"], 1), api_key)
    assert response.status_code == 202
    assert response.json() == {"targets": 1, "online": 0, "offsets": {}}


@pytest.mark.django_db
@pytest.mark.parametrize("enforce_csrf_checks", [True, False])
def test_staff_session_without_a_key_is_401(admin_user, enforce_csrf_checks):
    client = Client(enforce_csrf_checks=enforce_csrf_checks)
    client.force_login(admin_user)
    response = post(client, frame(["bob"], 1))
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    response = client.get(PRESENCE, {"ids": "bob"})
    assert response.status_code == 401
    assert AuditEntry.objects.count() == 0


# Scoped keys (issue 12)


@pytest.mark.django_db
def test_a_key_without_the_presence_scope_cannot_see_who_is_online(recording_layer):
    """The finding: any key enumerated who of ids 1..5000 was online."""
    _, plain = ApiKey.generate("billing")  # send only, the default
    response = Client().get(PRESENCE, {"ids": ",".join(str(i) for i in range(1, 101))}, headers=auth(plain))
    assert_json_error(response, 403, protocol.FORBIDDEN, "This key may not read presence (its scope: send; any id).")
    assert post(Client(), frame(["bob"], 1), plain).status_code == 202


@pytest.mark.django_db(transaction=True)
async def test_a_send_only_key_is_not_told_how_many_targets_were_online(connect):
    """The finding: ``online`` in a send's answer told a send-only key who is online (by bisection over sends)."""
    await connect("bob")
    _, plain = await sync_to_async(ApiKey.generate)("billing")  # send only, the default
    response = await post(AsyncClient(), frame(["bob", "carol"], 1), plain)
    assert response.status_code == 202
    assert response.json() == {"targets": 2, "offsets": {}}
    assert (await AuditEntry.objects.aget()).online == 1  # the audit log, for staff, still says


@pytest.mark.django_db
def test_a_presence_only_key_cannot_send(recording_layer):
    _, plain = ApiKey.generate("dashboard", can_send=False, can_read_presence=True)
    assert_json_error(post(Client(), frame(["bob"], 1), plain), 403, protocol.FORBIDDEN)
    assert recording_layer.sent == []
    assert AuditEntry.objects.count() == 0
    assert Client().get(PRESENCE, {"ids": "bob"}, headers=auth(plain)).status_code == 200


@pytest.mark.django_db
def test_a_key_restricted_to_patterns_reaches_those_ids_only(recording_layer):
    _, plain = ApiKey.generate("billing", can_read_presence=True, client_ids="user-* 42")
    assert post(Client(), frame(["user-1", 42, "user-x.y"], 1), plain).status_code == 202
    response = post(Client(), frame(["user-2", "admin", "43"], 1), plain)
    assert_json_error(
        response,
        403,
        protocol.FORBIDDEN,
        "This key may not send for admin, 43 (its scope: send, presence; ids user-* 42).",
    )
    assert [group for group, _ in recording_layer.sent] == ["relay.user-1", "relay.42", "relay.user-x.y"]
    assert Client().get(PRESENCE, {"ids": "user-9,42"}, headers=auth(plain)).status_code == 200
    assert_json_error(Client().get(PRESENCE, {"ids": "user-9,7"}, headers=auth(plain)), 403, protocol.FORBIDDEN)


# Every answer is JSON, whatever the method (issue 12)


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete", "options"])
@pytest.mark.parametrize("path", ["/relay/api/x", "/relay/api/send/extra", "/relay/api/", "/relay/api"])
def test_unknown_api_path_is_404_json_even_with_csrf_checks_enforced(method, path):
    """The findings: a POST there got Django's CSRF page (HTML); ``/relay/api`` an HTML redirect (APPEND_SLASH)."""
    response = getattr(Client(enforce_csrf_checks=True), method)(path)
    assert_json_error(response, 404, "not_found")


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "allowed"), [(SEND, "POST"), (PRESENCE, "GET")])
@pytest.mark.parametrize("method", ["put", "patch", "delete", "options", "head"])
def test_other_methods_on_known_paths_are_405_json_with_csrf_checks_enforced(path, allowed, method):
    response = getattr(Client(enforce_csrf_checks=True), method)(path)
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response["Allow"] == allowed
