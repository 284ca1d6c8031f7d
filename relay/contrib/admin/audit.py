"""Recording the pushes that people and services make (``relay.signals.operator_push``)."""

from typing import Any

from relay.contrib.admin.models import AuditEntry


def record_push(
    sender: Any, *, source: str, actor: str, targets: list[str], online: int, size: int, **kwargs: Any
) -> None:
    """Write one audit entry for a push."""
    AuditEntry.record(source, actor, targets, online, size)
