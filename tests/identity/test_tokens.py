"""relay.tokens: HS256 client tokens, issued here or minted by any JWT library, and every forgery refused."""

import base64
import hashlib
import hmac
import json
import time
from types import SimpleNamespace

import jwt
import pytest

from relay.identity.tokens import InvalidToken, client_id_from_token, issue

SECRET = "tests-only-secret-key-0123456789-0123456789-0123456789"  # tests/settings.py's SECRET_KEY
OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256-0123456789"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict, claims: dict, sign=None) -> str:
    """A JWT assembled by hand; ``sign(signing_input) -> bytes`` makes its signature (none: empty)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = b64url(sign(signing_input.encode())) if sign else ""
    return f"{signing_input}.{signature}"


def minted(claims: dict, secret: str = SECRET, algorithm: str = "HS256") -> str:
    """A token minted by plain PyJWT, as a backend in another language would."""
    return jwt.encode(claims, secret, algorithm=algorithm)


def in_(seconds: int) -> int:
    return int(time.time()) + seconds


def test_settings_secret_is_the_one_assumed_here(settings):
    assert settings.SECRET_KEY == SECRET


@pytest.mark.parametrize(
    ("client_id", "subject"), [("bob", "bob"), (2, "2"), ("A-z_0.9", "A-z_0.9"), ("x" * 64, "x" * 64)]
)
def test_issue_round_trips(client_id, subject):
    assert client_id_from_token(issue(client_id)) == subject


def test_issue_is_plain_hs256_with_sub_iat_and_exp():
    before = int(time.time())
    token = issue("bob", ttl=120)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert sorted(claims) == ["exp", "iat", "sub"]
    assert claims["sub"] == "bob"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 120


def test_token_minted_by_plain_pyjwt_works():
    assert client_id_from_token(minted({"sub": "bob", "exp": in_(60)})) == "bob"


def test_unknown_claims_are_ignored():
    assert client_id_from_token(minted({"sub": "bob", "exp": in_(60), "name": "Bob", "jti": "j1"})) == "bob"


def test_integer_sub_means_its_decimal_id():
    """SPEC §2: integers in JSON are client ids too (``2`` and ``"2"`` are one client)."""
    assert client_id_from_token(minted({"sub": 2, "exp": in_(60)})) == "2"


def test_token_secret_overrides_secret_key(settings):
    settings.RELAY_TOKEN_SECRET = OTHER_SECRET
    assert client_id_from_token(minted({"sub": "bob", "exp": in_(60)}, OTHER_SECRET)) == "bob"
    with pytest.raises(InvalidToken):
        client_id_from_token(minted({"sub": "bob", "exp": in_(60)}, SECRET))
    assert jwt.decode(issue("bob"), OTHER_SECRET, algorithms=["HS256"])["sub"] == "bob"


def test_empty_token_secret_falls_back_to_secret_key(settings):
    settings.RELAY_TOKEN_SECRET = ""
    assert client_id_from_token(minted({"sub": "bob", "exp": in_(60)}, SECRET)) == "bob"


def tampered_payload() -> str:
    header, _, signature = minted({"sub": "bob", "exp": in_(60)}).split(".")
    payload = b64url(json.dumps({"sub": "admin", "exp": in_(60)}).encode())
    return f"{header}.{payload}.{signature}"


def hmac_signer(digest, secret: str = SECRET):
    return lambda data: hmac.new(secret.encode(), data, digest).digest()


def signed_as(alg: str, digest) -> str:
    """A token claiming ``alg`` in its header, signed with ``digest`` and the relay's own secret."""
    return hand_made({"alg": alg, "typ": "JWT"}, {"sub": "bob", "exp": in_(60)}, hmac_signer(digest))


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda: hand_made({"alg": "none", "typ": "JWT"}, {"sub": "bob", "exp": in_(60)}), id="alg-none"),
        pytest.param(lambda: hand_made({"alg": "None"}, {"sub": "bob", "exp": in_(60)}), id="alg-None"),
        pytest.param(lambda: signed_as("HS384", hashlib.sha384), id="hs384-same-secret"),
        pytest.param(lambda: signed_as("HS512", hashlib.sha512), id="hs512-same-secret"),
        pytest.param(lambda: signed_as("HS256", hashlib.sha512), id="hs256-header-hs512-signature"),
        pytest.param(lambda: minted({"sub": "bob", "exp": in_(60)}, OTHER_SECRET), id="wrong-secret"),
        pytest.param(lambda: minted({"sub": "bob", "exp": in_(60)})[:-4] + "AAAA", id="wrong-signature"),
        pytest.param(lambda: minted({"sub": "bob", "exp": in_(60)}).rsplit(".", 1)[0] + ".", id="signature-stripped"),
        pytest.param(tampered_payload, id="tampered-payload"),
        pytest.param(lambda: minted({"sub": "bob", "exp": in_(-11 - 5)}), id="expired-beyond-leeway"),
        pytest.param(lambda: minted({"sub": "bob"}), id="missing-exp"),
        pytest.param(lambda: minted({"sub": "bob", "exp": "tomorrow"}), id="exp-not-a-number"),
        pytest.param(lambda: minted({"exp": in_(60)}), id="missing-sub"),
        pytest.param(lambda: minted({"sub": "", "exp": in_(60)}), id="empty-sub"),
        pytest.param(lambda: minted({"sub": "bob smith", "exp": in_(60)}), id="sub-with-space"),
        pytest.param(lambda: minted({"sub": "x" * 65, "exp": in_(60)}), id="sub-65-chars"),
        pytest.param(lambda: minted({"sub": "a/b", "exp": in_(60)}), id="sub-with-slash"),
        pytest.param(lambda: minted({"sub": "é", "exp": in_(60)}), id="sub-non-ascii"),
        pytest.param(lambda: minted({"sub": True, "exp": in_(60)}), id="sub-bool"),
        pytest.param(lambda: minted({"sub": 1.5, "exp": in_(60)}), id="sub-float"),
        pytest.param(lambda: minted({"sub": ["bob"], "exp": in_(60)}), id="sub-list"),
        pytest.param(lambda: minted({"sub": "bob", "exp": in_(60), "nbf": in_(3600)}), id="not-yet-valid"),
        pytest.param(lambda: "", id="empty"),
        pytest.param(lambda: "garbage", id="garbage"),
        pytest.param(lambda: "a.b.c", id="three-garbage-parts"),
    ],
)
def test_refused(make_token):
    with pytest.raises(InvalidToken):
        client_id_from_token(make_token())


def test_hs512_minted_by_pyjwt_with_the_same_secret_is_refused(settings):
    settings.RELAY_TOKEN_SECRET = "s" * 64  # long enough that PyJWT mints HS512 without a warning
    for algorithm in ("HS384", "HS512"):
        with pytest.raises(InvalidToken):
            client_id_from_token(minted({"sub": "bob", "exp": in_(60)}, "s" * 64, algorithm))
    assert client_id_from_token(minted({"sub": "bob", "exp": in_(60)}, "s" * 64)) == "bob"


@pytest.mark.parametrize(
    ("leeway", "expired_ago", "accepted"), [(10, 5, True), (10, 20, False), (0, 5, False), (60, 50, True)]
)
def test_expiry_leeway(settings, leeway, expired_ago, accepted):
    settings.RELAY_TOKEN_LEEWAY = leeway
    token = minted({"sub": "bob", "exp": in_(-expired_ago)})
    if accepted:
        assert client_id_from_token(token) == "bob"
    else:
        with pytest.raises(InvalidToken):
            client_id_from_token(token)


@pytest.mark.parametrize("client_id", ["", "bob smith", "x" * 65, "a/b", None, True, 1.5, ["bob"]])
def test_issue_refuses_bad_ids(client_id):
    with pytest.raises(ValueError, match="is not a client id"):
        issue(client_id)


@pytest.mark.parametrize("ttl", [0, -1, -3600])
def test_issue_refuses_non_positive_ttl(ttl):
    with pytest.raises(ValueError, match="ttl must be a positive number of seconds"):
        issue("bob", ttl=ttl)


@pytest.mark.parametrize(("issued_ago", "accepted"), [(28, True), (32, False)])
def test_issued_token_expires_after_its_ttl(settings, monkeypatch, issued_ago, accepted):
    settings.RELAY_TOKEN_LEEWAY = 0
    issued_at = time.time() - issued_ago
    monkeypatch.setattr("relay.identity.tokens.time", SimpleNamespace(time=lambda: issued_at))
    token = issue("bob", ttl=30)
    if accepted:
        assert client_id_from_token(token) == "bob"
    else:
        with pytest.raises(InvalidToken):
            client_id_from_token(token)


# --- rotation, audience, issuer (issue 12) -------------------------------------------------

NEW_SECRET = "the-new-secret-of-a-rotation-long-enough-for-hs256-0123456789"


def test_token_secrets_rotate_the_first_signs_every_one_verifies(settings):
    """Rotating without cutting every client: add the new secret first, drop the old one later."""
    settings.RELAY_TOKEN_SECRETS = [NEW_SECRET, OTHER_SECRET]
    assert jwt.decode(issue("bob"), NEW_SECRET, algorithms=["HS256"])["sub"] == "bob"
    assert client_id_from_token(minted({"sub": "old", "exp": in_(60)}, OTHER_SECRET)) == "old"
    assert client_id_from_token(minted({"sub": "new", "exp": in_(60)}, NEW_SECRET)) == "new"
    with pytest.raises(InvalidToken, match="Signature verification failed"):
        client_id_from_token(minted({"sub": "bob", "exp": in_(60)}, SECRET))  # SECRET_KEY is not one of them
    settings.RELAY_TOKEN_SECRETS = [NEW_SECRET]  # the old one dropped: its tokens stop working
    with pytest.raises(InvalidToken):
        client_id_from_token(minted({"sub": "old", "exp": in_(60)}, OTHER_SECRET))


def test_an_expired_token_of_an_old_secret_is_refused_as_expired(settings):
    settings.RELAY_TOKEN_SECRETS = [NEW_SECRET, OTHER_SECRET]
    with pytest.raises(InvalidToken, match="Signature has expired"):
        client_id_from_token(minted({"sub": "old", "exp": in_(-60)}, OTHER_SECRET))


def test_token_secrets_default_to_the_token_secret(settings):
    settings.RELAY_TOKEN_SECRET = OTHER_SECRET
    assert client_id_from_token(minted({"sub": "bob", "exp": in_(60)}, OTHER_SECRET)) == "bob"


@pytest.mark.parametrize(
    ("claims", "accepted"),
    [
        ({"aud": "relay"}, True),
        ({"aud": ["billing", "relay"]}, True),
        ({"aud": "billing"}, False),  # a token minted for another service
        ({}, False),  # the relay has an audience: a token without one is not for it
    ],
)
def test_audience_is_checked_where_set(settings, claims, accepted):
    settings.RELAY_TOKEN_AUDIENCE = "relay"
    token = minted({"sub": "bob", "exp": in_(60), **claims})
    if accepted:
        assert client_id_from_token(token) == "bob"
    else:
        with pytest.raises(InvalidToken):
            client_id_from_token(token)


def test_without_an_audience_setting_a_token_may_carry_any(settings):
    assert client_id_from_token(minted({"sub": "bob", "exp": in_(60), "aud": "whatever"})) == "bob"


@pytest.mark.parametrize(("claims", "accepted"), [({"iss": "accounts"}, True), ({"iss": "other"}, False), ({}, False)])
def test_issuer_is_checked_where_set(settings, claims, accepted):
    settings.RELAY_TOKEN_ISSUER = "accounts"
    token = minted({"sub": "bob", "exp": in_(60), **claims})
    if accepted:
        assert client_id_from_token(token) == "bob"
    else:
        with pytest.raises(InvalidToken):
            client_id_from_token(token)


def test_issue_carries_the_audience_and_issuer_it_checks(settings):
    settings.RELAY_TOKEN_AUDIENCE = "relay"
    settings.RELAY_TOKEN_ISSUER = "accounts"
    token = issue("bob")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="relay", issuer="accounts")
    assert (claims["aud"], claims["iss"]) == ("relay", "accounts")
    assert client_id_from_token(token) == "bob"
