"""Who may send to whom: the send policy (``RELAY_SEND_POLICY``).

A policy is a callable ``(sender, target) -> bool``, or a class whose instances are;
the setting is its dotted path. It may be async. A sync policy runs in a worker
thread (``relay.threads``), once per frame for all its targets, so it may use the ORM.
A refused target gets the error ``forbidden`` and the frame's other targets still get
the message.
"""

from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache

from channels.db import database_sync_to_async
from django.utils.module_loading import import_string

from relay.conf import conf
from relay.threads import is_async

SendPolicy = Callable[[str, str], bool] | Callable[[str, str], Awaitable[bool]]


class AllowAll:
    """The default: any client may send to any client."""

    def __call__(self, sender: str, target: str) -> bool:
        return True


class SameIdOnly:
    """Clients may only send to their own id (their other devices and tabs)."""

    async def __call__(self, sender: str, target: str) -> bool:  # async: no thread needed
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


async def refused_targets(policy: SendPolicy, sender: str, targets: Sequence[str]) -> list[str]:
    """The targets of a frame that ``policy`` refuses, in order."""
    if is_async(policy):
        return [target for target in targets if not await policy(sender, target)]  # type: ignore[misc]

    def refused() -> list[str]:
        return [target for target in targets if not policy(sender, target)]

    return await database_sync_to_async(refused)()
