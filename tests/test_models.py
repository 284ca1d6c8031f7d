"""ApiKey (only hashes stored, authenticate, revoke) and AuditEntry (recording and retention)."""

import hashlib
import re
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission
from django.db import IntegrityError, connection
from django.utils import timezone

from relay.models import ApiKey, AuditEntry, hash_key

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


def test_record_creates_an_entry():
    entry = AuditEntry.record(AuditEntry.Source.ADMIN, "admin", ["bob", "2"], 1, 14)
    assert AuditEntry.objects.get() == entry
    fields = (entry.source, entry.actor, entry.targets, entry.online, entry.size)
    assert fields == ("admin", "admin", ["bob", "2"], 1, 14)
    assert str(entry) == "Django admin push by admin to 2 target(s)"


def test_record_truncates_a_long_actor():
    entry = AuditEntry.record(AuditEntry.Source.API, "api key " + "x" * 200, ["bob"], 0, 1)
    entry.refresh_from_db()
    assert entry.actor == ("api key " + "x" * 200)[:150]


def age(entry: AuditEntry, days: float) -> None:
    AuditEntry.objects.filter(pk=entry.pk).update(created_at=timezone.now() - timedelta(days=days))


@pytest.mark.parametrize(("retention", "ages", "kept"), [(90, [1, 89, 91, 365], [1, 89]), (7, [6.9, 7.1, 30], [6.9])])
def test_record_prunes_entries_older_than_the_retention(settings, retention, ages, kept):
    settings.RELAY_AUDIT_RETENTION_DAYS = retention
    entries = {days: AuditEntry.record(AuditEntry.Source.COMMAND, f"aged {days}", ["bob"], 0, 1) for days in ages}
    for days, entry in entries.items():
        age(entry, days)
    new = AuditEntry.record(AuditEntry.Source.COMMAND, "new", ["bob"], 0, 1)
    assert sorted(AuditEntry.objects.values_list("actor", flat=True)) == sorted(["new", *(f"aged {d}" for d in kept)])
    assert AuditEntry.objects.first() == new  # newest first


def test_send_message_permission_exists():
    permission = Permission.objects.get(codename="send_message", content_type__app_label="relay")
    assert permission.name == "Can send messages to clients from the admin"


@pytest.mark.django_db
def test_last_used_is_written_at_most_once_a_minute(monkeypatch):
    key, plain = ApiKey.generate("billing")
    assert async_to_sync(ApiKey.authenticate)(plain) == key
    first = ApiKey.objects.get().last_used_at
    assert async_to_sync(ApiKey.authenticate)(plain) == key
    assert ApiKey.objects.get().last_used_at == first  # a second later: no write
    later = timezone.now() + timedelta(minutes=2)
    monkeypatch.setattr("relay.models.timezone.now", lambda: later)
    assert async_to_sync(ApiKey.authenticate)(plain) == key
    assert ApiKey.objects.get().last_used_at == later
