"""The names of the relay's Redis keys and channels, shared by its writers and readers."""


def nodes_key(prefix: str) -> str:
    """The sorted set of node -> last heartbeat (unix seconds)."""
    return f"{prefix}:presence:nodes"


def node_key(prefix: str, node: str) -> str:
    """The hash of client id -> open connections in ``node``."""
    return f"{prefix}:presence:node:{node}"


def bus_channel(prefix: str, client_id: str) -> str:
    """The pub/sub channel carrying what is sent to ``client_id``, to the processes holding it."""
    return f"{prefix}:bus:{client_id}"
