"""Logging helpers: a filter for deployments (used by relayproject's LOGGING), and safe log fields."""

import json
import logging
import re


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


#: Characters a log field's value may hold unquoted: nothing that ends the field or starts another.
_BARE_VALUE = re.compile(r"[A-Za-z0-9_.:/@\[\]+-]+")


def field(value: object) -> str:
    """A value for a ``key=value`` log line, safe whatever a client put in it.

    Plain values (client ids, addresses, fixed words) are written as they are; anything
    else, the empty string included, as a double-quoted JSON string, so that no space,
    quote, ``=`` or newline a client sends can end the field and forge another
    (`` event=connect client=victim``). Parsers read it back with ``json.loads``.
    """
    text = value if isinstance(value, str) else str(value)
    return text if _BARE_VALUE.fullmatch(text) else json.dumps(text)
