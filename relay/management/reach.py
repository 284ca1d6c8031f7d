"""What the relay's commands need to reach clients served by other processes."""

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.core.management.base import CommandError


def ensure_shared_layer() -> None:
    """Refuse (CommandError) when the channel layer lives inside each process and cannot reach the servers."""
    if isinstance(get_channel_layer(), InMemoryChannelLayer):
        raise CommandError(
            "The channel layer is in-memory (channels.layers.InMemoryChannelLayer): it lives inside each "
            "server process, so this command cannot reach their clients. Give CHANNEL_LAYERS a Redis layer "
            "(channels_redis) used by the servers and by this command (in the relay's own site: set REDIS_URL), "
            "or do this from code that runs inside the server."
        )
