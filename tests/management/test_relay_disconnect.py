"""``manage.py relay_disconnect``: closing clients everywhere, and refusing what cannot work.

The command against a real Redis and real servers is in tests/e2e/test_disconnect.py.
"""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


def relay_disconnect(*args: str) -> str:
    stdout = io.StringIO()
    call_command("relay_disconnect", *args, stdout=stdout)
    return stdout.getvalue()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["a b"], "is not a client id"),
        (["alice", "--code", "1001"], "is not a close code"),
        (["alice", "--reason", "x" * 124], "at most 123 bytes"),
    ],
)
def test_bad_arguments_are_clear_errors(args, problem):
    with pytest.raises(CommandError, match=problem):
        relay_disconnect(*args)


def test_in_memory_layer_is_refused_clearly():
    with pytest.raises(CommandError, match="in-memory .* cannot reach"):
        relay_disconnect("alice")


def test_no_client_id_is_an_error():
    with pytest.raises(CommandError, match="client_ids"):
        relay_disconnect()
