"""ApiKey: only hashes stored, authenticate, revoke."""

import hashlib
import re
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection
from django.utils import timezone

from relay.contrib.http_api.models import ApiKey, hash_key

pytestmark = pytest.mark.django_db

authenticate = async_to_sync(ApiKey.authenticate)


def test_generate_returns_a_prefixed_random_key():
    key, plain = ApiKey.generate("billing")
    assert re.fullmatch(r"rk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", plain)
    assert plain.split("_")[1] == key.prefix
    assert ApiKey.generate("other")[1] != plain


def test_generate_stores_only_the_sha256_hash():
    key, plain = ApiKey.generate("billing")
    assert key.key_hash == hashlib.sha256(plain.encode()).hexdigest() == hash_key(plain)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiKey._meta.db_table}")
        (row,) = cursor.fetchall()
    secret = plain.rsplit("_", 1)[1]
    stored = " ".join(str(value) for value in row)
    assert plain not in stored
    assert secret not in stored
    assert secret[:16] not in stored


def test_names_are_unique():
    ApiKey.generate("billing")
    with pytest.raises(IntegrityError):
        ApiKey.generate("billing")


def test_authenticate_returns_the_key_and_records_its_use():
    key, plain = ApiKey.generate("billing")
    assert key.last_used_at is None
    before = timezone.now()
    assert authenticate(plain) == key
    key.refresh_from_db()
    assert before <= key.last_used_at <= timezone.now()


def test_authenticate_picks_the_right_key_among_many():
    keys = [ApiKey.generate(f"service-{n}") for n in range(3)]
    for key, plain in keys:
        assert authenticate(plain) == key


@pytest.mark.parametrize(
    "make_attempt",
    [
        pytest.param(lambda plain: "", id="empty"),
        pytest.param(lambda plain: "garbage", id="garbage"),
        pytest.param(lambda plain: "rk_", id="prefix-only"),
        pytest.param(lambda plain: "rk__", id="empty-parts"),
        pytest.param(lambda plain: plain + "x", id="longer"),
        pytest.param(lambda plain: plain[:-1], id="shorter"),
        pytest.param(lambda plain: plain.upper(), id="upper-case"),
        pytest.param(lambda plain: "xk" + plain[2:], id="other-scheme-prefix"),
        pytest.param(lambda plain: plain.rsplit("_", 1)[0] + "_" + "A" * 43, id="right-prefix-wrong-secret"),
        pytest.param(lambda plain: "rk_000000000000_" + plain.rsplit("_", 1)[1], id="wrong-prefix-right-secret"),
        pytest.param(lambda plain: hash_key(plain), id="the-stored-hash"),
    ],
)
def test_authenticate_refuses(make_attempt):
    key, plain = ApiKey.generate("billing")
    assert authenticate(make_attempt(plain)) is None
    key.refresh_from_db()
    assert key.last_used_at is None


def test_revoke():
    key, plain = ApiKey.generate("billing")
    assert key.active is True
    key.revoke()
    key.refresh_from_db()
    assert key.active is False
    assert key.revoked_at is not None
    assert authenticate(plain) is None
    assert ApiKey.objects.count() == 1  # the record stays


def test_revoke_twice_keeps_the_first_time():
    key, _ = ApiKey.generate("billing")
    key.revoke()
    first = ApiKey.objects.get().revoked_at
    key.revoke()
    assert ApiKey.objects.get().revoked_at == first


def test_str_never_shows_the_key():
    key, plain = ApiKey.generate("billing")
    assert str(key) == f"billing (rk_{key.prefix}_…)"
    assert plain.rsplit("_", 1)[1] not in str(key)


@pytest.mark.django_db
def test_last_used_is_written_at_most_once_a_minute(monkeypatch):
    key, plain = ApiKey.generate("billing")
    assert async_to_sync(ApiKey.authenticate)(plain) == key
    first = ApiKey.objects.get().last_used_at
    assert async_to_sync(ApiKey.authenticate)(plain) == key
    assert ApiKey.objects.get().last_used_at == first  # a second later: no write
    later = timezone.now() + timedelta(minutes=2)
    monkeypatch.setattr("relay.contrib.http_api.models.timezone.now", lambda: later)
    assert async_to_sync(ApiKey.authenticate)(plain) == key
    assert ApiKey.objects.get().last_used_at == later


# Scopes (issue 12)


@pytest.mark.parametrize(
    ("patterns", "ids", "refused"),
    [
        ("", ["anyone", "42"], []),
        ("user-*", ["user-1", "user-", "admin", "xuser-1"], ["admin", "xuser-1"]),
        ("42 user-*, team-?", ["42", "420", "team-?", "team-a"], ["420", "team-a"]),  # only * is special
        ("*", ["a", "b"], []),
    ],
)
def test_a_keys_patterns_say_which_ids_it_reaches(patterns, ids, refused):
    key = ApiKey(name="k", client_ids=patterns)
    assert key.refused_ids(ids) == refused


def test_generate_refuses_a_pattern_that_is_not_one():
    with pytest.raises(ValidationError, match="Not a client-id pattern: b/c"):
        ApiKey.generate("k", client_ids="ok a b/c")
    assert not ApiKey.objects.exists()
