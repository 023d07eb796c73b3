"""JWT bearer tokens for an org's contacts API: an ``admin`` may load and see contacts; a
``user`` may only run matches and read their results, for its own org.

Tokens are HS256, signed with a per-org secret derived from the org's own key (it never leaves
the node); ``shardline contacts token`` issues them. Claims: ``sub``, ``org``, ``role``, ``iat``,
``exp``, ``iss``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import jwt

ROLES = ("admin", "user")
ISSUER = "shardline-contacts"


class TokenError(ValueError):
    pass


def jwt_secret(signing_seed: bytes) -> bytes:
    return hmac.new(signing_seed, b"shardline contacts api jwt v1", hashlib.sha256).digest()


@dataclass(frozen=True)
class Principal:
    subject: str
    org: str
    role: str


def issue(secret: bytes, org: str, role: str, subject: str, ttl_s: float = 8 * 3600) -> str:
    if role not in ROLES:
        raise TokenError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    now = int(time.time())
    claims = {
        "sub": subject,
        "org": org,
        "role": role,
        "iat": now,
        "exp": now + int(ttl_s),
        "iss": ISSUER,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(secret: bytes, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=ISSUER,
            options={"require": ["exp", "sub", "org", "role"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("the token has expired: ask the org's admin for a new one") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"the token is not valid here: {exc}") from None
    if claims["role"] not in ROLES:
        raise TokenError(f"unknown role {claims['role']!r}")
    return Principal(claims["sub"], claims["org"], claims["role"])
