"""A responder signed in with a JWT from the identity provider looks up as with an API key."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from shardline.core import responder_tokens
from shardline.lookup_client import base_url, lookup, responder_token

pytestmark = pytest.mark.e2e


def post(cfg, transport_id: str, token: str) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(base_url=base_url(cfg), timeout=30) as c:
            return await c.post(
                "/lookups",
                json={"transport_id": transport_id},
                headers={"Authorization": f"Bearer {token}", "Prefer": "wait=10"},
            )

    return asyncio.run(go())


def test_a_token_holder_gets_the_sheet(live_stack, sample_sheets):
    sheet = sample_sheets[5]

    async def go():
        async with httpx.AsyncClient(base_url=base_url(live_stack), timeout=30) as client:
            return await lookup(client, sheet.transport_id, responder_token(live_stack))

    out = asyncio.run(go())
    assert out.status == 200, out.body
    assert out.body["sheet"] == json.loads(sheet.canonical_bytes())


def test_a_visitor_token_is_refused_by_the_gatekeeper(live_stack, sample_sheets):
    r = post(live_stack, sample_sheets[5].transport_id, responder_token(live_stack, "visitor"))
    assert r.status_code == 403, r.text


def issuer_key(cfg) -> Ed25519PrivateKey:
    return load_pem_private_key(cfg.gateway.token_issuer.private_key_file.read_bytes(), None)


@pytest.mark.parametrize(
    "claims, said",
    [
        ({"address": "0x" + "11" * 20}, "not the account this gateway holds"),
        ({"subject": "stranger"}, "unknown to this gateway"),
        ({"audience": "some-other-gateway"}, "not valid at this gateway"),
        ({"now": 1_000_000, "ttl_s": 60}, "expired"),
    ],
)
def test_a_token_that_does_not_fit_is_401(live_stack, sample_sheets, claims, said):
    iss = live_stack.gateway.token_issuer
    base = {
        "issuer": iss.issuer,
        "audience": iss.audience,
        "subject": "responder",
        "address": "0x" + "00" * 20,
    }
    if "address" not in claims:  # a well-bound token, changed only where the case says
        good = responder_token(live_stack)
        base["address"] = responder_tokens.verify(
            issuer_key(live_stack).public_key(), good, issuer=iss.issuer, audience=iss.audience
        ).address
    token = responder_tokens.issue(issuer_key(live_stack), **{**base, **claims})
    r = post(live_stack, sample_sheets[5].transport_id, token)
    assert r.status_code == 401 and said in r.json()["detail"], r.text


def test_a_token_signed_by_another_key_is_401(live_stack, sample_sheets):
    iss = live_stack.gateway.token_issuer
    token = responder_tokens.issue(
        Ed25519PrivateKey.generate(),
        issuer=iss.issuer,
        audience=iss.audience,
        subject="responder",
        address="0x" + "00" * 20,
    )
    r = post(live_stack, sample_sheets[5].transport_id, token)
    assert r.status_code == 401 and "not valid" in r.json()["detail"]
