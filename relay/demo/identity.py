"""Who may use the demo, and the ids its clients get."""

import re

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from relay.conf import conf

#: Every demo client id starts with this: the demo's call tells about these ids only.
DEMO_PREFIX = "demo-"
NAME_PATTERN = re.compile(r"[a-z0-9]{1,20}")
DEFAULT_NAMES = ("alice", "bob")
MAX_NAMES = 4


def check_access(request: HttpRequest) -> None:
    """Http404 when the demo is off; PermissionDenied for non-staff users when DEBUG is off."""
    if not conf.RELAY_DEMO:
        raise Http404("The relay demo is off (RELAY_DEMO).")
    user = getattr(request, "user", None)
    if not settings.DEBUG and not (user is not None and user.is_staff):
        # It hands out tokens for demo ids, which may send to any client the send policy allows.
        raise PermissionDenied("With DEBUG off, the relay demo is for staff: log in to the admin first.")


def demo_names(raw: str | None) -> list[str]:
    """The names of the demo's clients from ``?names=alice,bob`` (the default), validated."""
    if not raw:
        return list(DEFAULT_NAMES)
    names = list(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))
    if not names or len(names) > MAX_NAMES or not all(NAME_PATTERN.fullmatch(name) for name in names):
        raise Http404(f"names: 1 to {MAX_NAMES} names of a-z 0-9, comma-separated.")
    return names
