"""Logging helpers for deployments (used by relayproject's LOGGING)."""

import logging


class OneLineExceptions(logging.Filter):
    """Log an exception as one line instead of a traceback.

    channels-redis logs every failed retry while Redis is down with a full traceback
    ("Unexpected exception in receive task"), once a second; one line says as much.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True
