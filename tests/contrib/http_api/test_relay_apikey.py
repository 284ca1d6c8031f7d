"""``manage.py relay_apikey create|revoke|list``: keys printed once, never listed."""

import io
import re

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import CommandError

from relay.contrib.http_api.models import ApiKey

pytestmark = pytest.mark.django_db

authenticate = async_to_sync(ApiKey.authenticate)


def relay_apikey(*args: str) -> str:
    stdout = io.StringIO()
    call_command("relay_apikey", *args, stdout=stdout)
    return stdout.getvalue()


def test_create_prints_only_a_key_that_authenticates():
    output = relay_apikey("create", "billing")
    assert re.fullmatch(r"rk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}\n", output)
    plain = output.strip()
    key = ApiKey.objects.get()
    assert key.name == "billing"
    assert authenticate(plain) == key


def test_create_strips_the_name():
    relay_apikey("create", "  billing  ")
    assert ApiKey.objects.get().name == "billing"


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_create_refuses_a_bad_name(name):
    with pytest.raises(CommandError, match="A key name is 1-100 characters."):
        relay_apikey("create", name)
    assert ApiKey.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_create_refuses_a_duplicate_name():
    first = relay_apikey("create", "billing").strip()
    with pytest.raises(CommandError, match="A key named 'billing' exists already."):
        relay_apikey("create", "billing")
    assert ApiKey.objects.count() == 1
    assert authenticate(first) == ApiKey.objects.get()


def test_revoke():
    plain = relay_apikey("create", "billing").strip()
    relay_apikey("create", "other")
    assert relay_apikey("revoke", "billing") == "Revoked billing.\n"
    assert authenticate(plain) is None
    assert {key.name: key.active for key in ApiKey.objects.all()} == {"billing": False, "other": True}


def test_revoke_unknown():
    with pytest.raises(CommandError, match="No key named 'nobody'."):
        relay_apikey("revoke", "nobody")


def test_revoke_twice():
    relay_apikey("create", "billing")
    relay_apikey("revoke", "billing")
    with pytest.raises(CommandError, match="The key 'billing' was revoked already, at "):
        relay_apikey("revoke", "billing")


def test_list_never_prints_keys():
    plains = [relay_apikey("create", name).strip() for name in ("billing", "alerts")]
    relay_apikey("revoke", "alerts")
    output = relay_apikey("list")
    alerts, billing = ApiKey.objects.order_by("name")
    revoked = f"revoked {alerts.revoked_at:%Y-%m-%d %H:%M}"
    assert (
        output == f"alerts\t{alerts.prefix}\t{revoked}\tsend; any id\nbilling\t{billing.prefix}\tactive\tsend; any id\n"
    )
    for plain in plains:
        assert plain.split("_", 2)[2] not in output  # the secret part (it may hold "_" itself)
    for key in (alerts, billing):
        assert key.key_hash not in output


def test_list_with_no_keys():
    assert relay_apikey("list") == ""


def test_an_action_is_required():
    with pytest.raises(CommandError):
        relay_apikey()


# Scopes (issue 12)


def test_create_makes_a_send_only_key_for_any_id_by_default():
    relay_apikey("create", "billing")
    key = ApiKey.objects.get()
    assert (key.can_send, key.can_read_presence, key.patterns) == (True, False, [])


def test_create_with_scopes_and_id_patterns():
    relay_apikey("create", "dashboard", "--scope", "presence", "--ids", "user-*,42", "--ids", "team-*")
    key = ApiKey.objects.get()
    assert (key.can_send, key.can_read_presence, key.patterns) == (False, True, ["user-*", "42", "team-*"])
    relay_apikey("create", "both", "--scope", "send", "--scope", "presence")
    assert ApiKey.objects.get(name="both").scope == "send, presence; any id"
    assert "dashboard\t" in relay_apikey("list") and "\tpresence; ids user-* 42 team-*\n" in relay_apikey("list")


@pytest.mark.parametrize(("options", "problem"), [(["--scope", "admin"], "invalid choice"), (["--ids", "a/b"], None)])
def test_create_refuses_a_bad_scope_or_pattern(options, problem):
    with pytest.raises((CommandError, SystemExit)) as refused:
        relay_apikey("create", "bad", *options)
    if problem is None:
        assert "Not a client-id pattern: a/b" in str(refused.value)
    assert not ApiKey.objects.exists()
