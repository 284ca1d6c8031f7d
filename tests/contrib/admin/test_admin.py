"""The relay in the Django admin: sending, who is online, API keys (shown once) and the audit log."""

import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.test import Client

from relay.contrib.admin.models import AuditEntry
from relay.contrib.http_api.models import ApiKey, hash_key

SEND = "/admin/relay_admin/auditentry/send/"
ONLINE = "/admin/relay_admin/auditentry/online/"
KEYS = "/admin/relay_http_api/apikey/"
V1 = ["relay.v1"]


def event(payload) -> dict:
    return {"type": "relay.deliver", "from": None, "payload_json": json.dumps(payload, separators=(",", ":"))}


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """pytest-django's ``admin_user`` has a password; hashing it the slow way costs 0.2 s a test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def sender_client(django_user_model) -> Client:
    """A staff user (not a superuser) with ``relay_admin.send_message``, logged in."""
    user = django_user_model.objects.create_user("sender", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="send_message", content_type__app_label="relay_admin"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_client(django_user_model) -> Client:
    """A staff user without any permission, logged in."""
    client = Client()
    client.force_login(django_user_model.objects.create_user("plain-staff", is_staff=True))
    return client


@pytest.fixture
def user_client(django_user_model) -> Client:
    """A logged-in user who is not staff."""
    client = Client()
    client.force_login(django_user_model.objects.create_user("customer"))
    return client


@pytest.fixture(params=[("admin_client", "admin"), ("sender_client", "sender")], ids=["superuser", "permitted-staff"])
def may_send(request) -> tuple[Client, str]:
    """``(client, username)``: a superuser, then a staff user with only ``relay_admin.send_message``."""
    fixture, username = request.param
    return request.getfixturevalue(fixture), username


@pytest.fixture(params=["admin_client", "sender_client"], ids=["superuser", "sender"])
def any_staff(request) -> Client:
    """A superuser, then a staff user with only ``relay_admin.send_message``."""
    return request.getfixturevalue(request.param)


# Sending a message


@pytest.mark.django_db(transaction=True)
async def test_send_reaches_connections_and_is_recorded(connect, may_send):
    client, username = may_send
    bob = await connect("bob")
    bob_v1 = await connect("bob", V1)
    carol = await connect("carol")
    response = await sync_to_async(client.post)(
        SEND, {"targets": "bob, nobody 2,bob", "payload": '{"text": "Maintenance at 18:00"}'}, follow=True
    )
    assert response.status_code == 200
    assert response.redirect_chain == [(SEND, 302)]
    assert messages_of(response) == ["Sent to bob (online), nobody (not online), 2 (not online)."]
    assert await bob.receive_from() == '{"text":"Maintenance at 18:00"}'
    assert json.loads(await bob_v1.receive_from()) == {
        "type": "message",
        "from": None,
        "payload": {"text": "Maintenance at 18:00"},
    }
    for communicator in (bob, bob_v1, carol):
        assert await communicator.receive_nothing(timeout=0.01)
    entry = await AuditEntry.objects.aget()
    assert (entry.source, entry.actor, entry.targets, entry.online, entry.size) == (
        "admin",
        username,
        ["bob", "nobody", "2"],
        1,
        len('{"text":"Maintenance at 18:00"}'),
    )


@pytest.mark.django_db
@pytest.mark.parametrize("payload", ["null", "3", '"text"', "[1, 2]"])
def test_send_any_json_value(admin_client, recording_layer, payload):
    response = admin_client.post(SEND, {"targets": "bob", "payload": payload})
    assert response.status_code == 302
    assert recording_layer.sent == [("relay.bob", event(json.loads(payload)))]


@pytest.mark.django_db
def test_send_page_shows_the_form(sender_client):
    response = sender_client.get(SEND)
    assert response.status_code == 200
    assert response.context["title"] == "Send a message"
    assert list(response.context["form"].fields) == ["targets", "payload"]
    assert b'name="targets"' in response.content
    assert b'name="payload"' in response.content


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "errors"),
    [
        pytest.param({"targets": "bob", "payload": "{"}, {"payload": "Not valid JSON: "}, id="truncated-json"),
        pytest.param({"targets": "bob", "payload": "hello"}, {"payload": "Not valid JSON: "}, id="bare-word"),
        pytest.param({"targets": "bob", "payload": "NaN"}, {"payload": "Not valid JSON: "}, id="nan"),
        pytest.param({"targets": "bob", "payload": ""}, {"payload": "This field is required."}, id="no-payload"),
        pytest.param(
            {"targets": "bob a/b", "payload": "1"},
            {"targets": '"a/b" is not a client id (1-64 characters of A-Z a-z 0-9 _ . -).'},
            id="invalid-target",
        ),
        pytest.param(
            {"targets": "x" * 65, "payload": "1"},
            {"targets": f'"{"x" * 65}" is not a client id (1-64 characters of A-Z a-z 0-9 _ . -).'},
            id="target-too-long",
        ),
        pytest.param(
            {"targets": ", ,", "payload": "1"}, {"targets": '"targets" must not be empty.'}, id="only-separators"
        ),
        pytest.param({"targets": "", "payload": "1"}, {"targets": "This field is required."}, id="no-targets"),
        pytest.param(
            {"targets": "a/b", "payload": "{"},
            {"targets": '"a/b" is not a client id', "payload": "Not valid JSON: "},
            id="both",
        ),
    ],
)
def test_invalid_form_shows_errors_and_sends_nothing(sender_client, recording_layer, data, errors):
    response = sender_client.post(SEND, data)
    assert response.status_code == 200
    form_errors = response.context["form"].errors
    assert sorted(form_errors) == sorted(errors)
    for field, start in errors.items():
        (message,) = form_errors[field]
        assert message.startswith(start)
    assert b'class="errorlist' in response.content
    assert recording_layer.sent == []
    assert AuditEntry.objects.count() == 0
    assert messages_of(response) == []


@pytest.mark.django_db
def test_send_when_the_channel_layer_is_unavailable(admin_client, monkeypatch):
    def unreachable(targets, payload):
        raise ConnectionRefusedError("Connection refused")

    monkeypatch.setattr("relay.api.send", unreachable)
    response = admin_client.post(SEND, {"targets": "bob", "payload": "1"})
    assert response.status_code == 200
    assert messages_of(response) == ["Not sent: the relay cannot reach Redis (Connection refused)."]
    assert AuditEntry.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_staff_without_the_permission_gets_403(staff_client, recording_layer, method):
    response = getattr(staff_client, method)(SEND, {"targets": "bob", "payload": "1"})
    assert response.status_code == 403
    assert recording_layer.sent == []
    assert AuditEntry.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("path", [SEND, ONLINE])
@pytest.mark.parametrize("who", ["user_client", "anonymous"])
def test_non_staff_is_sent_to_the_login_page(request, recording_layer, path, who):
    client = request.getfixturevalue(who) if who != "anonymous" else Client()
    response = client.post(path, {"targets": "bob", "payload": "1"})
    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={path}"
    assert recording_layer.sent == []


# Who is online


@pytest.mark.django_db(transaction=True)
async def test_online_lists_ids_with_connection_counts(connect, any_staff):
    client = any_staff
    await connect("bob")
    await connect("alice")
    await connect("bob")
    response = await sync_to_async(client.get)(ONLINE)
    assert response.status_code == 200
    assert response.context["counts"] == [("alice", 1), ("bob", 2)]
    assert response.context["total"] == 3
    content = response.content.decode()
    assert "2 client ids online, 3 connections." in content
    assert "<tr><td>alice</td><td>1</td></tr>" in content
    assert "<tr><td>bob</td><td>2</td></tr>" in content


@pytest.mark.django_db
def test_online_needs_a_relay_permission(staff_client):
    assert staff_client.get(ONLINE).status_code == 403  # client ids are users' keys: not for every staff


@pytest.mark.django_db(transaction=True)
async def test_online_forgets_closed_connections(connect, admin_client):
    bob = await connect("bob")
    await bob.disconnect()
    response = await sync_to_async(admin_client.get)(ONLINE)
    assert response.context["counts"] == []
    assert "Nobody is connected." in response.content.decode()
    assert "0 client ids online, 0 connections." in response.content.decode()


@pytest.mark.django_db
def test_online_when_presence_is_unavailable(admin_client, monkeypatch):
    def unreachable(client_ids=None):
        raise ConnectionRefusedError("Connection refused")

    monkeypatch.setattr("relay.presence.connections", unreachable)
    response = admin_client.get(ONLINE)
    assert response.status_code == 200
    assert response.context["error"] == "Presence is unavailable: Connection refused"


@pytest.mark.django_db
def test_audit_log_links_to_the_pages_and_cannot_be_added_to(admin_client):
    AuditEntry.record(AuditEntry.Source.API, "api key billing", ["bob", "carol"], 1, 3)
    response = admin_client.get("/admin/relay_admin/auditentry/")
    assert response.status_code == 200
    content = response.content.decode()
    assert f'href="{SEND}"' in content
    assert f'href="{ONLINE}"' in content
    assert "api key billing" in content
    assert "bob, carol" in content
    assert admin_client.get("/admin/relay_admin/auditentry/add/").status_code == 403


# API keys


@pytest.mark.django_db
def test_add_key_shows_the_plain_key_once_and_stores_its_hash(admin_client):
    response = admin_client.post(f"{KEYS}add/", {"name": "billing"})
    assert response.status_code == 200
    assert [name for name, _ in response.cookies.items() if name == "messages"] == []  # never in a cookie
    plain = response.context["plain_key"]
    assert f'<code id="api-key">{plain}</code>' in response.content.decode()
    key = ApiKey.objects.get()
    assert (key.name, key.key_hash, key.prefix) == ("billing", hash_key(plain), plain.split("_")[1])
    assert async_to_sync(ApiKey.authenticate)(plain) == key

    for page in (KEYS, f"{KEYS}{key.pk}/change/"):
        content = admin_client.get(page).content.decode()
        assert plain not in content
        assert key.key_hash not in content


@pytest.mark.django_db
def test_add_key_history_names_the_stored_key(admin_client):
    admin_client.post(f"{KEYS}add/", {"name": "billing"})
    key = ApiKey.objects.get()
    assert LogEntry.objects.get().object_repr == str(key)
    assert key.prefix in str(key)


@pytest.mark.django_db
def test_add_key_with_a_taken_name_shows_an_error(admin_client):
    ApiKey.generate("billing")
    response = admin_client.post(f"{KEYS}add/", {"name": "billing"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"name": ["API key with this Name already exists."]}
    assert ApiKey.objects.count() == 1


@pytest.mark.django_db
def test_revoke_action(admin_client):
    keys = {name: ApiKey.generate(name)[0] for name in ("a", "b", "c")}
    response = admin_client.post(
        KEYS, {"action": "revoke_keys", "_selected_action": [keys["a"].pk, keys["c"].pk]}, follow=True
    )
    assert response.status_code == 200
    assert "Revoked 2 key(s)." in messages_of(response)
    assert {key.name: key.active for key in ApiKey.objects.all()} == {"a": False, "b": True, "c": False}


@pytest.mark.django_db
def test_revoking_needs_the_change_permission(django_user_model):
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_apikey", content_type__app_label="relay_http_api")
    )
    client = Client()
    client.force_login(viewer)
    key, _ = ApiKey.generate("billing")
    client.post(KEYS, {"action": "revoke_keys", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.active


# Who may create keys, what a key may do, and the audit log's integrity (issue 12)


def staff_with(django_user_model, username: str, *permissions: tuple[str, str]) -> Client:
    """A staff user with exactly these ``(app_label, codename)`` permissions, logged in."""
    user = django_user_model.objects.create_user(username, is_staff=True)
    for app_label, codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label=app_label))
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_creating_a_key_needs_the_send_permission_as_well(django_user_model):
    """The finding: staff with only add_apikey created a key and pushed, bypassing relay_admin.send_message."""
    key_clerk = staff_with(
        django_user_model, "key-clerk", ("relay_http_api", "add_apikey"), ("relay_http_api", "view_apikey")
    )
    assert key_clerk.get(f"{KEYS}add/").status_code == 403
    assert key_clerk.post(f"{KEYS}add/", {"name": "sneaky", "can_send": "on"}).status_code == 403
    assert not ApiKey.objects.exists()

    sender = staff_with(
        django_user_model, "key-sender", ("relay_http_api", "add_apikey"), ("relay_admin", "send_message")
    )
    response = sender.post(f"{KEYS}add/", {"name": "allowed", "can_send": "on"})
    assert response.status_code == 200 and response.context["plain_key"]
    assert ApiKey.objects.get().name == "allowed"


@pytest.mark.django_db
def test_add_key_sets_its_scope_once(admin_client):
    response = admin_client.post(
        f"{KEYS}add/", {"name": "presence-only", "can_read_presence": "on", "client_ids": "user-* 42"}
    )
    assert response.status_code == 200
    key = ApiKey.objects.get()
    assert (key.can_send, key.can_read_presence, key.patterns) == (False, True, ["user-*", "42"])
    assert key.scope == "presence; ids user-* 42"
    # Fixed from then on: widening a key's reach takes a new key.
    admin_client.post(f"{KEYS}{key.pk}/change/", {"name": "presence-only", "can_send": "on", "client_ids": ""})
    key.refresh_from_db()
    assert (key.can_send, key.patterns) == (False, ["user-*", "42"])
    assert "presence; ids user-* 42" in admin_client.get(KEYS).content.decode()


@pytest.mark.django_db
def test_add_key_refuses_a_bad_client_id_pattern(admin_client):
    response = admin_client.post(f"{KEYS}add/", {"name": "bad", "can_send": "on", "client_ids": "user-* a/b"})
    assert response.status_code == 200
    assert "Not a client-id pattern: a/b" in str(response.context["adminform"].form.errors["client_ids"])
    assert not ApiKey.objects.exists()


@pytest.mark.django_db
def test_only_a_superuser_may_delete_audit_entries(django_user_model, admin_client):
    """The finding: staff with delete_auditentry deleted rows of the "read-only" audit log."""
    entry = AuditEntry.record(AuditEntry.Source.API, "api key billing", ["bob"], 1, 3)
    pruner = staff_with(
        django_user_model, "pruner", ("relay_admin", "delete_auditentry"), ("relay_admin", "view_auditentry")
    )
    assert pruner.post(f"/admin/relay_admin/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    pruner.post("/admin/relay_admin/auditentry/", {"action": "delete_selected", "_selected_action": [entry.pk]})
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
    assert pruner.post(f"/admin/relay_admin/auditentry/{entry.pk}/change/", {"actor": "x"}).status_code == 403

    admin_client.post(f"/admin/relay_admin/auditentry/{entry.pk}/delete/", {"post": "yes"})
    assert not AuditEntry.objects.filter(pk=entry.pk).exists()
