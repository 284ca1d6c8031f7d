"""Calling the site's own code from the event loop.

Async functions are awaited. Sync ones run in a worker thread through Channels'
``database_sync_to_async``, so the ORM works and database connections past their age
are closed around the call, as Django closes them around a request. The thread hop is
what a sync function costs; write an ``async def`` where no database is involved.
"""

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from channels.db import database_sync_to_async

T = TypeVar("T")


def is_async(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` returns an awaitable: an ``async def``, or an object whose ``__call__`` is one."""
    return iscoroutinefunction(function) or iscoroutinefunction(type(function).__call__)


def as_async(function: Callable[..., T] | Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """``function`` itself if it is async, else a coroutine function running it in a worker thread."""
    if is_async(function):
        return cast(Callable[..., Awaitable[T]], function)
    return cast(Callable[..., Awaitable[T]], database_sync_to_async(function))
