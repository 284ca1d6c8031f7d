"""Signed client tokens: HS256 JWTs whose ``sub`` is the client id.

Any JWT library can mint them with the shared secret, so a backend in any language
can let its users connect: ``{"sub": "<client id>", "exp": <unix time>}``, HS256.
"""

import time

import jwt

from relay.conf import conf
from relay.exceptions import InvalidToken
from relay.protocol import normalize_client_id

ALGORITHM = "HS256"


def issue(client_id: str | int, ttl: int = 3600) -> str:
    """A token letting its bearer connect as ``client_id`` for ``ttl`` seconds."""
    subject = normalize_client_id(client_id)
    if subject is None:
        raise ValueError(f"{client_id!r} is not a client id (1-64 characters of A-Z a-z 0-9 _ . -).")
    if ttl <= 0:
        raise ValueError("ttl must be a positive number of seconds.")
    now = int(time.time())
    return jwt.encode({"sub": subject, "iat": now, "exp": now + int(ttl)}, conf.RELAY_TOKEN_SECRET, algorithm=ALGORITHM)


def client_id_from_token(token: str) -> str:
    """The client id a token proves; raises InvalidToken if it proves none."""
    try:
        claims = jwt.decode(
            token,
            conf.RELAY_TOKEN_SECRET,
            algorithms=[ALGORITHM],  # never "none", never a key-confusion algorithm
            # PyJWT insists on a string sub; an integer means its decimal id, as in targets.
            options={"require": ["exp", "sub"], "verify_sub": False},
            leeway=conf.RELAY_TOKEN_LEEWAY,
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc) or type(exc).__name__) from None
    client_id = normalize_client_id(claims["sub"])
    if client_id is None:
        raise InvalidToken("sub is not a valid client id")
    return client_id
