"""AuditEntry: recording pushes, retention, the send permission, and the operator_push signal."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from relay import signals
from relay.contrib.admin.models import AuditEntry

pytestmark = pytest.mark.django_db


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
    permission = Permission.objects.get(codename="send_message", content_type__app_label="relay_admin")
    assert permission.name == "Can send messages to clients from the admin"


def test_an_operator_push_signal_is_recorded():
    signals.operator_push.send(sender=None, source="api", actor="api key billing", targets=["a", "b"], online=1, size=7)
    entry = AuditEntry.objects.get()
    assert (entry.source, entry.actor, entry.targets, entry.online, entry.size) == (
        "api",
        "api key billing",
        ["a", "b"],
        1,
        7,
    )
