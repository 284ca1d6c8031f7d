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
