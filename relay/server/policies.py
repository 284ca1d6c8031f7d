"""Who may send to whom: the send policy (``RELAY_SEND_POLICY``).

A policy is a callable ``(sender, target) -> bool``, or a class whose instances are;
the setting is its dotted path. A refused target gets the error ``forbidden`` and the
frame's other targets still get the message.
"""

from collections.abc import Callable
from functools import lru_cache

from django.utils.module_loading import import_string

from relay.conf import conf

SendPolicy = Callable[[str, str], bool]


class AllowAll:
    """The default: any client may send to any client."""

    def __call__(self, sender: str, target: str) -> bool:
        return True


class SameIdOnly:
    """Clients may only send to their own id (their other devices and tabs)."""

    def __call__(self, sender: str, target: str) -> bool:
        return sender == target


@lru_cache(maxsize=8)
def load_policy(path: str) -> SendPolicy | None:
    """The policy at ``path``; None for AllowAll, so the relay can skip asking it."""
    policy = import_string(path)
    if isinstance(policy, type):
        policy = policy()
    return None if isinstance(policy, AllowAll) else policy


def send_policy() -> SendPolicy | None:
    """The configured policy (read at access time; cached per dotted path)."""
    return load_policy(conf.RELAY_SEND_POLICY)
