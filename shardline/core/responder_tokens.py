"""Responder tokens: a JWT from the brigade's identity provider, bound to a chain account.

A gateway accepts, besides an API key, a short-lived JWT signed by an issuer it trusts (EdDSA,
Ed25519: the gateway holds only the issuer's public key). The token names the responder (``sub``)
and the chain account it acts for (``addr``); the gateway serves it only when that account is the
one it holds for that responder, so a token cannot borrow another responder's authorisation on
chain. Claims required: ``iss``, ``aud``, ``sub``, ``addr``, ``iat``, ``exp``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "EdDSA"
MAX_TTL_S = 24 * 3600
LEEWAY_S = 30  # clock skew between the issuer and the gateway


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class ResponderClaims:
    subject: str
    address: str
    expires_at: int


def looks_like_jwt(presented: str) -> bool:
    return presented.count(".") == 2


def issue(
    key: Ed25519PrivateKey,
    *,
    issuer: str,
    audience: str,
    subject: str,
    address: str,
    ttl_s: float = 3600,
    now: float | None = None,
) -> str:
    if not 0 < ttl_s <= MAX_TTL_S:
        raise TokenError(f"a responder token lives between 1 s and {MAX_TTL_S} s, not {ttl_s:g} s")
    t = int(time.time() if now is None else now)
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "addr": address.lower(),
        "iat": t,
        "exp": t + int(ttl_s),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify(
    public_key: Ed25519PublicKey, token: str, *, issuer: str, audience: str
) -> ResponderClaims:
    try:
        claims = jwt.decode(
            token,
            public_key,
            algorithms=[ALGORITHM],
            issuer=issuer,
            audience=audience,
            leeway=LEEWAY_S,
            options={"require": ["iss", "aud", "sub", "addr", "iat", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("the responder token has expired: sign in again for a new one") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"the responder token is not valid at this gateway: {exc}") from None
    if claims["exp"] - claims["iat"] > MAX_TTL_S:
        raise TokenError(f"the responder token lives longer than {MAX_TTL_S} s: refused")
    addr = claims["addr"]
    if not isinstance(addr, str) or len(addr) != 42 or not addr.startswith("0x"):
        raise TokenError("the responder token's addr claim is not a chain address")
    return ResponderClaims(str(claims["sub"]), addr.lower(), int(claims["exp"]))
