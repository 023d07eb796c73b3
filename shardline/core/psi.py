"""Private set intersection by elliptic-curve Diffie-Hellman over ristretto255, in libsodium.

libsodium's ristretto255 functions come through ``rbcl`` (libsodium built with them, wrapped
like PyNaCl; PyNaCl exposes only the edwards25519 ones). A key is hashed to the group with
``crypto_core_ristretto255_from_hash`` of a SHA-512 digest (two Elligator maps, the random-oracle
construction of RFC 9380), blinded by a secret scalar, and blinded again by the peer:
``H(k)^(ab) = H(k)^(ba)``, so equal keys meet and nothing else can be compared. Every valid
ristretto255 encoding is an element of the prime-order group, so a multiplication needs no
subgroup check (an edwards25519 one does, and it cost as much as the multiplication itself).

Each contact gives several match keys (phonetic codes of the names with the birth date, the
postcode, the street number; the id number), so that a contact whose registration differs in
one or two fields still meets its twin. A contact is shared when any of its keys is.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence

import rbcl

from shardline.core import dedup
from shardline.core.contacts import ContactRecord

DOMAIN = b"shardline psi v1 "
POINT_BYTES = 32
# The second blinding is only ever compared for equality, so it travels as a 12-byte tag of the
# point: 96 bits keep a false match among 10^5 x 10^5 pairs below 10^-18, and a tag is a
# function of a value the peer could have been sent whole, so it reveals no more.
TAG_BYTES = 12
TAG_PERSON = b"shardline psi"


class BadPoint(ValueError):
    """A peer sent something that is not a point of the prime-order group."""


def new_scalar() -> bytes:
    while True:
        k = rbcl.crypto_core_ristretto255_scalar_reduce(secrets.token_bytes(64))
        if any(k):
            return k


def hash_to_group(key: bytes) -> bytes:
    return rbcl.crypto_core_ristretto255_from_hash(hashlib.sha512(DOMAIN + key).digest())


def random_point() -> bytes:
    """A point nobody knows the preimage of: padding that looks like any blinded key."""
    return hash_to_group(secrets.token_bytes(32))


def blind_keys(keys: Sequence[bytes], scalar: bytes) -> list[bytes]:
    mult, h2g, sha = (
        rbcl.crypto_scalarmult_ristretto255,
        rbcl.crypto_core_ristretto255_from_hash,
        hashlib.sha512,
    )
    return [mult(scalar, h2g(sha(DOMAIN + k).digest())) for k in keys]


def is_point(p: bytes) -> bool:
    return len(p) == POINT_BYTES and bool(rbcl.crypto_core_ristretto255_is_valid_point(p))


def reblind(points: Sequence[bytes], scalar: bytes) -> list[bytes]:
    """The peer's points raised to our scalar; refuses anything outside the group."""
    # libsodium's multiplication refuses an encoding that is not a canonical ristretto255
    # element, and the identity; every other encoding is in the prime-order group
    mult = rbcl.crypto_scalarmult_ristretto255
    try:
        return [mult(scalar, p) for p in points]
    except (RuntimeError, ValueError):
        pass
    for i, p in enumerate(points):  # name the first bad element
        if len(p) != POINT_BYTES:
            raise BadPoint(f"element {i} has {len(p)} bytes, not {POINT_BYTES}")
        try:
            mult(scalar, p)
        except (RuntimeError, ValueError):
            raise BadPoint(f"element {i} is not a point of the prime-order group") from None
    raise BadPoint("a peer's element was refused by libsodium")


def tag(point: bytes) -> bytes:
    return hashlib.blake2b(point, digest_size=TAG_BYTES, person=TAG_PERSON).digest()


def reblind_tags(points: Sequence[bytes], scalar: bytes) -> list[bytes]:
    """The peer's points raised to our scalar, as tags: the last step of either side."""
    return [tag(p) for p in reblind(points, scalar)]


def pack(items: Sequence[bytes], size: int) -> bytes:
    """Fixed-size items in one byte string (one base64 field on the wire, not one per item)."""
    blob = b"".join(items)
    if len(blob) != size * len(items):
        raise ValueError(f"every item must have {size} bytes")
    return blob


def unpack(blob: bytes, size: int) -> list[bytes]:
    if len(blob) % size:
        raise BadPoint(f"{len(blob)} bytes is not a whole number of {size}-byte elements")
    return [blob[i : i + size] for i in range(0, len(blob), size)]


# ---- match keys -----------------------------------------------------------------------------
# No key for both NYSIIS + birth date in the given order: "swap" (either order) meets every pair
# that key would, so it only cost one element in nine (on febrl4 both give F1 0.990).
KEY_SPECS = ("id", "fdp", "gdp", "gfp", "gfl", "dps", "gfs", "swap")


def match_keys(c: ContactRecord) -> list[bytes]:
    """The contact's match keys, each tagged with its kind (so kinds never collide)."""
    p = dedup.prepare(0, c)
    parts = {
        "id": (p.id_number,) if len(p.id_number) >= 6 else ("",),
        "fdp": (p.f_nys, p.birth, p.postcode),
        "gdp": (p.g_nys, p.birth, p.postcode),
        "gfp": (p.g_nys, p.f_nys, p.postcode),
        "gfl": (p.g_meta, p.f_meta, p.locality),
        "dps": (p.birth, p.postcode, p.street_number),
        "gfs": (p.g_meta, p.f_meta, p.street_number),
        "swap": (*sorted((p.g_nys, p.f_nys)), p.birth),
    }
    return [(k + ":" + "|".join(v)).encode() for k, v in parts.items() if k in KEY_SPECS and all(v)]


def prototype_key(c: ContactRecord) -> list[bytes]:
    """The earlier prototype's single exact phonetic id (both names' NYSIIS and the birth date)."""
    p = dedup.prepare(0, c)
    v = (p.g_nys, p.f_nys, p.birth)
    return [("gfd:" + "|".join(v)).encode()] if all(v) else []


def flatten(keys_per_contact: Iterable[tuple[int, list[bytes]]]) -> tuple[list[int], list[bytes]]:
    """(owner contact id per element, element) in one list each."""
    owners: list[int] = []
    elems: list[bytes] = []
    for cid, ks in keys_per_contact:
        for k in ks:
            owners.append(cid)
            elems.append(k)
    return owners, elems


def shuffled_order(n: int) -> list[int]:
    order = list(range(n))
    secrets.SystemRandom().shuffle(order)
    return order


def intersect(
    mine_double: Sequence[bytes], owners: Sequence[int], theirs_double: Iterable[bytes]
) -> dict[int, set[bytes]]:
    """Which of my contacts are shared: contact id -> the doubly-blinded values it shares."""
    theirs = set(theirs_double)
    shared: dict[int, set[bytes]] = {}
    for owner, v in zip(owners, mine_double, strict=True):
        if v in theirs:
            shared.setdefault(owner, set()).add(v)
    return shared
