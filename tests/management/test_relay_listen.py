"""``manage.py relay_listen``: what it refuses before connecting (tests/e2e/test_client.py runs it for real)."""

import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a b"], "'a b' is not a client id"),
        (["alice", "--count", "0"], "--count must be at least 1."),
        (["alice", "--since", "nope"], "--since: 'nope' is not <epoch>:<offset>."),
    ],
)
def test_bad_arguments_are_clear_errors(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("relay_listen", *args)


def test_without_websockets_it_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "relay.client", None)  # as if websockets were not installed
    with pytest.raises(CommandError, match=r"pip install 'django-relay\[client\]'"):
        call_command("relay_listen", "alice")
