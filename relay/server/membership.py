"""Keeping a connection in its channel-layer group (``relay.<id>``), through Redis outages.

The group is how server pushes (``relay.send``, plain Channels ``group_send``) reach a
connection. If the layer cannot be reached at the handshake, the connection is
accepted anyway (client-to-client frames do not need the layer) and joins the group
in the background as soon as the layer is back.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import BaseChannelLayer

from relay.exceptions import LAYER_ERRORS

logger = logging.getLogger(__name__)

JOIN_TIMEOUT = 2.0
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)


class GroupMembership:
    """One connection's channel-layer channel, its group, and the task handling its events."""

    def __init__(
        self,
        layer: BaseChannelLayer,
        group: str,
        handle: Callable[[dict[str, Any]], Awaitable[None]],
        redis_up: asyncio.Event | None = None,
    ) -> None:
        self.layer = layer
        self.group = group
        self.handle = handle
        # Attempts are made only while the relay's own Redis link is up: each failed
        # attempt leaves an orphan queue in channels-redis' pub/sub layer.
        self.redis_up = redis_up
        self.channel_name: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def join(self, wait: bool = True) -> None:
        """Join the group now if the layer answers quickly, else keep trying in the background.

        ``wait``: Redis is still being connected to (the first handshakes after a start),
        so wait a moment for it; with Redis known to be away, go to the background at once.
        """
        try:
            if self.redis_up is not None and not self.redis_up.is_set():
                if not wait:
                    raise ConnectionError("Redis is away")
                await asyncio.wait_for(self.redis_up.wait(), JOIN_TIMEOUT)
            await asyncio.wait_for(self._attach(), JOIN_TIMEOUT)
        except LAYER_ERRORS as exc:
            logger.warning("event=layer_unavailable group=%s error=%r; joining when it is back", self.group, exc)
            self._task = asyncio.get_running_loop().create_task(self._attach_then_listen(retry=True))
        else:
            self._task = asyncio.get_running_loop().create_task(self._attach_then_listen(retry=False))

    async def _attach(self) -> None:
        if self.channel_name is None:
            self.channel_name = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel_name)

    async def _attach_then_listen(self, retry: bool) -> None:
        attempt = 0
        while retry:
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            if self.redis_up is not None:
                await self.redis_up.wait()
            attempt += 1
            try:
                await asyncio.wait_for(self._attach(), JOIN_TIMEOUT)
                retry = False
                logger.info("event=layer_joined group=%s", self.group)
            except LAYER_ERRORS:
                continue
        assert self.channel_name is not None  # _attach() succeeded, here or in join()
        while True:
            await self.handle(await self.layer.receive(self.channel_name))

    async def leave(self) -> None:
        """Stop handling events and leave the group (best effort if the layer is down)."""
        if self._task is not None:
            self._task.cancel()
        if self.channel_name is not None:
            try:
                await asyncio.wait_for(self.layer.group_discard(self.group, self.channel_name), JOIN_TIMEOUT)
            except LAYER_ERRORS as exc:
                logger.warning("event=layer_unavailable group=%s error=%r while leaving", self.group, exc)
