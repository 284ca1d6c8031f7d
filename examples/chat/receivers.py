"""Who came in: a ``client_connected`` receiver."""

import logging
from typing import Any

from relay import Connection

logger = logging.getLogger(__name__)


def log_arrival(sender: Any, connection: Connection, **kwargs: Any) -> None:
    """Log each connection that opens."""
    logger.info("chat: %s came in (connection %s)", connection.client_id, connection.connection_id[:8])
