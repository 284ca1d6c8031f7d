"""Signed client tokens: HS256 JWTs whose ``sub`` is the client id.

Any JWT library can mint them with the shared secret, so a backend in any language
can let its users connect: ``{"sub": "<client id>", "exp": <unix time>}``, HS256.
``RELAY_TOKEN_SECRETS`` rotates the secret: the first signs, every one verifies. Where
``RELAY_TOKEN_AUDIENCE`` or ``RELAY_TOKEN_ISSUER`` is set, tokens must carry that
``aud`` or ``iss`` (a token minted for another service is not one for the relay).
"""

import time
from typing import Any

import jwt

from relay.conf import conf
from relay.exceptions import InvalidToken
from relay.protocol import normalize_client_id

ALGORITHM = "HS256"


def issue(client_id: str | int, ttl: int = 3600) -> str:
    """A token letting its bearer connect as ``client_id`` for ``ttl`` seconds.

    Signed with the first of RELAY_TOKEN_SECRETS, with the ``aud`` and ``iss`` the relay checks, if any.
    """
    subject = normalize_client_id(client_id)
    if subject is None:
        raise ValueError(f"{client_id!r} is not a client id (1-64 characters of A-Z a-z 0-9 _ . -).")
    if ttl <= 0:
        raise ValueError("ttl must be a positive number of seconds.")
    now = int(time.time())
    claims: dict[str, str | int] = {"sub": subject, "iat": now, "exp": now + int(ttl)}
    audience, issuer = conf.RELAY_TOKEN_AUDIENCE, conf.RELAY_TOKEN_ISSUER
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, conf.RELAY_TOKEN_SECRETS[0], algorithm=ALGORITHM)


def verified_claims(token: str) -> dict[str, Any]:
    """The claims of a token signed with one of RELAY_TOKEN_SECRETS and valid now; PyJWTError if none."""
    audience, issuer = conf.RELAY_TOKEN_AUDIENCE, conf.RELAY_TOKEN_ISSUER
    required = ["exp", "sub", *(["aud"] if audience is not None else []), *(["iss"] if issuer is not None else [])]
    secrets = conf.RELAY_TOKEN_SECRETS
    for index, secret in enumerate(secrets):
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],  # never "none", never a key-confusion algorithm
                # PyJWT insists on a string sub; an integer means its decimal id, as in targets.
                # An aud is checked where the relay has one; without, a token may carry any.
                options={"require": required, "verify_sub": False, "verify_aud": audience is not None},
                audience=audience,
                issuer=issuer,
                leeway=conf.RELAY_TOKEN_LEEWAY,
            )
            return claims
        except jwt.InvalidSignatureError:
            if index == len(secrets) - 1:
                raise
            # Signed with another secret of the rotation, maybe: the next one decides.
    raise jwt.InvalidSignatureError("no token secret is configured")


def client_id_from_token(token: str) -> str:
    """The client id a token proves; raises InvalidToken if it proves none."""
    try:
        claims = verified_claims(token)
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc) or type(exc).__name__) from None
    client_id = normalize_client_id(claims["sub"])
    if client_id is None:
        raise InvalidToken("sub is not a valid client id")
    return client_id
