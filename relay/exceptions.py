"""The errors shared across the relay's modules, in one place."""

from typing import Any

import redis


class ProtocolError(ValueError):
    """A client frame or push the relay refuses, with the error code and text the client gets."""

    def __init__(self, code: str, detail: str, ref: Any = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.ref = ref


class Reject(Exception):
    """Raised by a message handler or a call: the sender gets an error frame, nothing is relayed.

    ``code`` is a short word the client can switch on (``"quota_exceeded"``: 1-64
    characters of a-z 0-9 _); ``detail`` is for people. The connection stays open.
    """

    def __init__(self, code: str = "rejected", detail: str = "") -> None:
        from relay.protocol import validate_error_code  # protocol imports this module

        super().__init__(detail or code)
        self.code = validate_error_code(code)
        self.detail = detail or code


class Refused(Exception):
    """No identity for a handshake: ``reason`` is a short word, ``detail`` says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


class InvalidToken(Exception):
    """A token that does not prove a client id, with the reason (for logs, not clients)."""


#: What the channel layer or the relay's Redis clients raise when Redis cannot be reached.
LAYER_ERRORS: tuple[type[Exception], ...] = (OSError, TimeoutError, redis.RedisError)
