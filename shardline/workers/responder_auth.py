"""Who is asking the gateway: a responder's API key, or a JWT from a trusted identity provider.

Either way the answer is one of the gateway's configured responders, whose chain account the
Gatekeeper then checks. A JWT must name that responder (``sub``) and its account (``addr``).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import HTTPException

from shardline.config import GatewayConfig, Responder
from shardline.core import responder_tokens
from shardline.core.keys import ParticipantKeys

BEARER = {"WWW-Authenticate": "Bearer"}


def load_issuer_key(path) -> Ed25519PublicKey:
    key = load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key (responder tokens are EdDSA)")
    return key


class ResponderAuth:
    def __init__(self, gw: GatewayConfig) -> None:
        self.gw = gw
        self.issuer = gw.token_issuer
        self.issuer_key = load_issuer_key(self.issuer.public_key_file) if self.issuer else None
        self._addresses: dict[str, str] = {}

    def address(self, r: Responder) -> str:
        if r.name not in self._addresses:
            self._addresses[r.name] = ParticipantKeys.load(r.key_file).chain_address.lower()
        return self._addresses[r.name]

    def identify(self, presented: str | None) -> Responder:
        presented = (presented or "").strip()
        if not presented:
            raise HTTPException(
                401, "missing credentials: send `Authorization: Bearer <key or token>`", BEARER
            )
        if responder_tokens.looks_like_jwt(presented):
            return self._from_token(presented)
        found = self.gw.responder_for(presented)
        if found is None:
            raise HTTPException(
                401, "unknown API key: check the key, or sign in for a token", headers=BEARER
            )
        return found

    def _from_token(self, token: str) -> Responder:
        if self.issuer is None or self.issuer_key is None:
            raise HTTPException(
                401, "this gateway accepts API keys only: no token issuer is configured", BEARER
            )
        try:
            claims = responder_tokens.verify(
                self.issuer_key, token, issuer=self.issuer.issuer, audience=self.issuer.audience
            )
        except responder_tokens.TokenError as exc:
            raise HTTPException(401, str(exc), headers=BEARER) from None
        found = self.gw.responder_named(claims.subject)
        if found is None:
            raise HTTPException(
                401,
                f"the token names responder {claims.subject!r}, unknown to this gateway",
                BEARER,
            )
        if claims.address != self.address(found):
            raise HTTPException(
                401,
                f"the token binds {claims.subject!r} to account {claims.address}, "
                "not the account this gateway holds for it: ask for a new token",
                headers=BEARER,
            )
        return found
