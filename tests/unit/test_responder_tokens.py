"""Responder JWTs: signed by the issuer, for this gateway, bound to a chain account, short-lived."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shardline.core import responder_tokens as rt

ADDR = "0x" + "ab" * 20
ISS, AUD = "brigade-idp", "shardline-gateway"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def make(key, **kw) -> str:
    args = {"issuer": ISS, "audience": AUD, "subject": "responder", "address": ADDR}
    return rt.issue(key, **{**args, **kw})


def test_a_token_names_its_responder_and_account(key):
    claims = rt.verify(key.public_key(), make(key), issuer=ISS, audience=AUD)
    assert claims.subject == "responder" and claims.address == ADDR
    assert claims.expires_at > time.time()


def test_the_address_is_compared_in_lower_case(key):
    token = make(key, address=ADDR.upper().replace("0X", "0x"))
    assert rt.verify(key.public_key(), token, issuer=ISS, audience=AUD).address == ADDR


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"issuer": "someone-else"}, "(?i)issuer"),
        ({"audience": "another-gateway"}, "(?i)audience"),
        ({"now": time.time() - 7200, "ttl_s": 60}, "expired"),
    ],
)
def test_a_token_for_elsewhere_or_expired_is_refused(key, change, reason):
    with pytest.raises(rt.TokenError, match=reason):
        rt.verify(key.public_key(), make(key, **change), issuer=ISS, audience=AUD)


def test_a_token_of_another_issuer_key_is_refused(key):
    other = Ed25519PrivateKey.generate()
    with pytest.raises(rt.TokenError, match="not valid"):
        rt.verify(key.public_key(), make(other), issuer=ISS, audience=AUD)


def test_a_tampered_token_is_refused(key):
    head, _body, sig = make(key).split(".")
    forged = jwt.encode(
        {"iss": ISS, "aud": AUD, "sub": "visitor", "addr": ADDR, "iat": 1, "exp": 2**40},
        "a guessed secret of thirty-two bytes",
        algorithm="HS256",
    ).split(".")[1]
    with pytest.raises(rt.TokenError):
        rt.verify(key.public_key(), f"{head}.{forged}.{sig}", issuer=ISS, audience=AUD)


def test_an_hs256_token_cannot_pass_as_eddsa(key):
    # the algorithm-confusion attack: a MAC keyed with the public key
    token = jwt.encode(
        {"iss": ISS, "aud": AUD, "sub": "responder", "addr": ADDR, "iat": 1, "exp": 2**40},
        b"the issuer public key, as raw bytes",
        algorithm="HS256",
    )
    with pytest.raises(rt.TokenError):
        rt.verify(key.public_key(), token, issuer=ISS, audience=AUD)


def test_a_long_lived_token_is_not_issued_or_accepted(key):
    with pytest.raises(rt.TokenError, match="lives between"):
        make(key, ttl_s=rt.MAX_TTL_S + 1)
    now = int(time.time())
    raw = jwt.encode(
        {"iss": ISS, "aud": AUD, "sub": "r", "addr": ADDR, "iat": now, "exp": now + 10 * 86400},
        key,
        algorithm="EdDSA",
    )
    with pytest.raises(rt.TokenError, match="longer than"):
        rt.verify(key.public_key(), raw, issuer=ISS, audience=AUD)


def test_an_address_claim_that_is_not_an_address_is_refused(key):
    with pytest.raises(rt.TokenError, match="addr"):
        rt.verify(key.public_key(), make(key, address="me"), issuer=ISS, audience=AUD)
