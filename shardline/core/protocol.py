"""The emergency-lookup protocol as plain functions: split a sheet for registration, check the
shares that come back, rebuild the sheet. No I/O; the workers call these."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from shardline.core import commitment as cm
from shardline.core import shamir
from shardline.core.cargo import CargoSheet


@dataclass(frozen=True)
class OrgShare:
    """One org's part of a registration: its share and the opening that proves it."""

    org_id: str
    x: int
    share: bytes = field(repr=False)
    opening: cm.Opening


@dataclass(frozen=True)
class Registration:
    transport_key: bytes
    threshold: int
    org_ids: tuple[str, ...]
    commitment: bytes
    shares: tuple[OrgShare, ...]


def register(
    sheet: CargoSheet, transport_key: bytes, org_ids: list[str], threshold: int
) -> Registration:
    """Split a sheet t-of-n across the org set and commit to the shares and the record."""
    if len(set(org_ids)) != len(org_ids):
        raise ValueError(f"the org set {org_ids} names an org twice")
    secret = secrets.token_bytes(cm.SALT_BYTES) + sheet.canonical_bytes()
    parts = shamir.split(secret, threshold, len(org_ids))
    share_bytes = [p.to_bytes() for p in parts]
    opening = cm.Opening(
        cm.record_commitment(transport_key, secret),
        tuple(cm.share_hash(transport_key, b) for b in share_bytes),
    )
    return Registration(
        transport_key=transport_key,
        threshold=threshold,
        org_ids=tuple(org_ids),
        commitment=cm.commitment(transport_key, threshold, opening),
        shares=tuple(
            OrgShare(org, i + 1, b, opening)
            for i, (org, b) in enumerate(zip(org_ids, share_bytes, strict=True))
        ),
    )


class BadShare(ValueError):
    """A share that fails its commitment: the org that sent it is named."""

    def __init__(self, org_id: str, reason: str) -> None:
        super().__init__(f"share from {org_id} rejected: {reason}")
        self.org_id = org_id
        self.reason = reason


class RebuildError(ValueError):
    """Good-looking shares that still do not rebuild the committed record."""


@dataclass(frozen=True)
class Terms:
    """What the chain says about a transport: the yardstick for every share."""

    transport_key: bytes
    threshold: int
    org_ids: tuple[str, ...]
    commitment: bytes


def check_share(
    terms: Terms, org_id: str, x: int, share: bytes, opening: cm.Opening
) -> shamir.Share:
    """Accept a share only if it is this org's, and matches the on-chain commitment."""
    if org_id not in terms.org_ids:
        raise BadShare(org_id, "this org is not in the transport's org set")
    if terms.org_ids.index(org_id) + 1 != x:
        raise BadShare(org_id, f"share index {x} is not this org's place in the org set")
    if len(opening.leaves) != len(terms.org_ids):
        raise BadShare(org_id, "the opening has the wrong number of share hashes")
    if not cm.opening_matches(terms.transport_key, terms.threshold, opening, terms.commitment):
        raise BadShare(org_id, "its opening does not match the on-chain commitment")
    if not cm.share_matches(terms.transport_key, opening, x, share):
        raise BadShare(org_id, "the share does not match its committed hash")
    try:
        parsed = shamir.Share.from_bytes(share)
    except shamir.ShamirError as exc:
        raise BadShare(org_id, str(exc)) from exc
    if parsed.x != x:
        raise BadShare(org_id, "the share's own index disagrees with its place")
    return parsed


def rebuild(terms: Terms, shares: list[shamir.Share], opening: cm.Opening) -> CargoSheet:
    """Rebuild the sheet from exactly ``threshold`` checked shares and check the record commitment."""
    if len(shares) < terms.threshold:
        raise RebuildError(f"{len(shares)} good shares, {terms.threshold} needed")
    try:
        secret = shamir.combine(shares[: terms.threshold])
    except shamir.ShamirError as exc:
        raise RebuildError(f"the shares do not rebuild one record: {exc}") from None
    if not cm.secret_matches(terms.transport_key, opening, secret):
        raise RebuildError("the rebuilt record does not match its on-chain commitment")
    return CargoSheet.from_bytes(secret[cm.SALT_BYTES :])
