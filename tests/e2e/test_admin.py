"""The admin's "Send a message" and "Who is online" pages against a running daphne.

The admin requests run in a management shell with the server's environment (its database
and Redis), through Django's test client logged in as a user created there; what they
push is checked on real WebSocket clients of the running server. Running the requests in
that separate process keeps pytest-django's test database out of it: the server, the
shell and the audit log all use one database.
"""

import asyncio
import html
import json
import re
import uuid

from .conftest import SUBPROTOCOL_V1, assert_all_silent, run_manage_sync
from .test_http_api import audit_entries

SEND_PATH = "/admin/relay_admin/auditentry/send/"
ONLINE_PATH = "/admin/relay_admin/auditentry/online/"

# Reads a JSON spec on the command line: the user to create and log in, the requests to make.
ADMIN_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()  # response.context, and the test client's host allowed
spec = json.loads({spec!r})
user = get_user_model().objects.create_user(username=spec["username"], **spec["flags"])
if spec["permission"]:
    user.user_permissions.add(Permission.objects.get(content_type__app_label="relay_admin", codename="send_message"))
client = Client()
client.force_login(user)
results = []
for method, path, data in spec["requests"]:
    response = client.post(path, data) if method == "POST" else client.get(path)
    form = response.context.get("form") if response.context else None
    results.append({{
        "status": response.status_code,
        "location": response.get("Location"),
        "messages": [str(m) for m in get_messages(response.wsgi_request)],
        "form_errors": form.errors.get_json_data() if form is not None else None,
        "html": response.content.decode(),
    }})
print(json.dumps(results))
"""


async def as_user(server, *requests, staff=False, superuser=False, permission=False) -> tuple[str, list[dict]]:
    """Create a user, log in, make ``requests`` (``(method, path, data)``); its name and the answers.

    With DEBUG on, Django logs each 403 as "Forbidden (Permission denied)" with the
    PermissionDenied's traceback (django.request); any other traceback is a failure.
    """
    username = f"e2e-admin-{uuid.uuid4().hex[:10]}"
    spec = {
        "username": username,
        "flags": {"is_staff": staff, "is_superuser": superuser},
        "permission": permission,
        "requests": list(requests),
    }
    result = await asyncio.to_thread(
        run_manage_sync, server, "shell", "-v", "0", "-c", ADMIN_SCRIPT.format(spec=json.dumps(spec))
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Traceback") == result.stderr.count("Forbidden (Permission denied)"), result.stderr
    return username, json.loads(result.stdout.strip().splitlines()[-1])


def online_rows(page: str) -> dict[str, int]:
    """Client id -> connections, from the rows of the "Who is online" table."""
    return {
        html.unescape(client_id): int(count)
        for client_id, count in re.findall(r"<tr><td>([^<]*)</td><td>(\d+)</td></tr>", page)
    }


async def test_staff_with_the_permission_sends_to_clients(server, connect, uid):
    raw, enveloped = await connect(server, uid("raw")), await connect(server, uid("v1"), subprotocol=SUBPROTOCOL_V1)
    bystander = await connect(server, uid("bystander"))
    offline = uid("offline")
    payload = {"text": "Maintenance at 18:00", "n": [1, 2]}
    targets = f"{raw.client_id}, {enveloped.client_id}  {offline},{raw.client_id}"

    username, [answer] = await as_user(
        server, ("POST", SEND_PATH, {"targets": targets, "payload": json.dumps(payload)}), staff=True, permission=True
    )

    assert answer["status"] == 302
    assert answer["location"] == SEND_PATH
    assert answer["messages"] == [
        f"Sent to {raw.client_id} (online, offset 1), {enveloped.client_id} (online, offset 1), "
        f"{offline} (not online, offset 1)."
    ]
    assert await raw.recv_json() == payload
    assert await enveloped.recv_json() == {"type": "message", "from": None, "payload": payload}
    await assert_all_silent([raw, enveloped, bystander])
    assert audit_entries(server, username) == [
        {
            "source": "admin",
            "actor": username,
            "targets": [raw.client_id, enveloped.client_id, offline],
            "online": 2,
            "size": len(json.dumps(payload, separators=(",", ":"))),
        }
    ]


async def test_superuser_sends_too(server, connect, uid):
    client = await connect(server, uid("target"))

    username, [form, answer] = await as_user(
        server,
        ("GET", SEND_PATH, {}),
        ("POST", SEND_PATH, {"targets": client.client_id, "payload": '"hello"'}),
        staff=True,
        superuser=True,
    )

    assert form["status"] == 200
    assert 'name="targets"' in form["html"] and 'name="payload"' in form["html"]
    assert answer["status"] == 302
    assert answer["messages"] == [f"Sent to {client.client_id} (online, offset 1)."]
    assert await client.recv_json() == "hello"
    assert len(audit_entries(server, username)) == 1


async def test_user_who_is_not_staff_is_sent_to_the_login_page(server, connect, uid):
    client = await connect(server, uid("target"))

    username, answers = await as_user(
        server,
        ("POST", SEND_PATH, {"targets": client.client_id, "payload": '"no"'}),
        ("GET", ONLINE_PATH, {}),
        permission=True,  # the permission alone does not open the admin
    )

    assert [(a["status"], a["location"]) for a in answers] == [
        (302, f"/admin/login/?next={SEND_PATH}"),
        (302, f"/admin/login/?next={ONLINE_PATH}"),
    ]
    await client.assert_silent(0.5)
    assert audit_entries(server, username) == []


async def test_staff_without_the_permission_gets_403(server, connect, uid):
    client = await connect(server, uid("target"))

    username, answers = await as_user(
        server,
        ("GET", SEND_PATH, {}),
        ("POST", SEND_PATH, {"targets": client.client_id, "payload": '"no"'}),
        staff=True,
    )

    assert [answer["status"] for answer in answers] == [403, 403]
    await client.assert_silent(0.5)
    assert audit_entries(server, username) == []


async def test_invalid_form_shows_the_errors_and_sends_nothing(server, connect, uid):
    client = await connect(server, uid("target"))

    username, answers = await as_user(
        server,
        ("POST", SEND_PATH, {"targets": client.client_id, "payload": "{not json"}),
        ("POST", SEND_PATH, {"targets": f"{client.client_id} bad/id", "payload": '"x"'}),
        ("POST", SEND_PATH, {"targets": "", "payload": "NaN"}),
        staff=True,
        permission=True,
    )

    assert [answer["status"] for answer in answers] == [200, 200, 200]
    assert [answer["messages"] for answer in answers] == [[], [], []]
    not_json, bad_target, both = (answer["form_errors"] for answer in answers)
    assert list(not_json) == ["payload"]
    assert not_json["payload"][0]["code"] == "invalid_json"
    assert not_json["payload"][0]["message"].startswith("Not valid JSON")
    assert html.escape(not_json["payload"][0]["message"]) in answers[0]["html"]  # shown on the page
    assert bad_target == {
        "targets": [
            {"message": '"bad/id" is not a client id (1-64 characters of A-Z a-z 0-9 _ . -).', "code": "invalid_target"}
        ]
    }
    assert sorted(both) == ["payload", "targets"]
    assert both["targets"][0]["code"] == "required"
    assert both["payload"][0]["code"] == "invalid_json"
    await client.assert_silent(0.5)
    assert audit_entries(server, username) == []


async def test_online_page_lists_ids_with_their_connection_counts(server, connect, uid):
    two, one = uid("two"), uid("one")
    await connect(server, two)
    await connect(server, two, subprotocol=SUBPROTOCOL_V1)
    await connect(server, one)
    gone = await connect(server, uid("gone"))
    await gone.close()
    await asyncio.sleep(0.2)  # a disconnect is written to presence asynchronously

    _, [answer] = await as_user(server, ("GET", ONLINE_PATH, {}), staff=True, permission=True)

    assert answer["status"] == 200
    rows = online_rows(answer["html"])
    assert rows[two] == 2
    assert rows[one] == 1
    assert gone.client_id not in rows
    assert re.search(r"\d+ client ids? online, \d+ connections?\.", answer["html"])
