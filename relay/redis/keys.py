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


def sessions_channel(prefix: str) -> str:
    """The pub/sub channel every process listens to for Django sessions that ended (logouts), whatever ids it holds."""
    return f"{prefix}:sessions"


def stream_key(prefix: str, client_id: str) -> str:
    """The hash holding the position of ``client_id``'s stream: its epoch and its last offset."""
    return f"{prefix}:stream:{client_id}"


def history_key(prefix: str, client_id: str) -> str:
    """The list of the last entries of ``client_id``'s stream, oldest first."""
    return f"{prefix}:history:{client_id}"
