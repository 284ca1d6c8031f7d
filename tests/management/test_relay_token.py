"""``manage.py relay_token <client_id> [--ttl SECONDS]``: prints a token and nothing else."""

import io
import re
import time

import jwt
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from relay.identity.tokens import client_id_from_token


def relay_token(*args: str) -> str:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("relay_token", *args, stdout=stdout, stderr=stderr)
    assert stderr.getvalue() == ""
    return stdout.getvalue()


def claims_of(token: str, secret: str) -> dict:
    return jwt.decode(token, secret, algorithms=["HS256"])


@pytest.mark.parametrize("client_id", ["bob", "42", "A-z_0.9", "x" * 64])
def test_prints_only_a_token_for_the_id(settings, client_id):
    output = relay_token(client_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n", output)
    token = output.strip()
    assert client_id_from_token(token) == client_id
    claims = claims_of(token, settings.SECRET_KEY)
    assert claims["sub"] == client_id
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize("ttl", ["1", "60", "86400"])
def test_ttl(settings, ttl):
    before = int(time.time())
    claims = claims_of(relay_token("bob", "--ttl", ttl).strip(), settings.SECRET_KEY)
    assert claims["exp"] - claims["iat"] == int(ttl)
    assert before <= claims["iat"] <= int(time.time())


def test_signed_with_the_token_secret(settings):
    settings.RELAY_TOKEN_SECRET = "a-separate-token-secret-0123456789-0123456789"
    token = relay_token("bob").strip()
    assert claims_of(token, settings.RELAY_TOKEN_SECRET)["sub"] == "bob"
    with pytest.raises(jwt.InvalidSignatureError):
        claims_of(token, settings.SECRET_KEY)


@pytest.mark.parametrize("client_id", ["", "bob smith", "x" * 65, "a/b", "é"])
def test_bad_id(client_id):
    with pytest.raises(CommandError, match="is not a client id"):
        relay_token(client_id)


@pytest.mark.parametrize("ttl", ["0", "-5"])
def test_non_positive_ttl(ttl):
    with pytest.raises(CommandError, match="ttl must be a positive number of seconds"):
        relay_token("bob", "--ttl", ttl)


def test_ttl_must_be_an_integer():
    with pytest.raises(CommandError):
        relay_token("bob", "--ttl", "soon")
