"""Phonetic and fuzzy keys of a contact, in canonical JSON, and its anonymous id.

Keys come from ``jellyfish`` (Metaphone, NYSIIS, match rating codex) over the normalised name
parts; Jaro-Winkler is the fuzzy comparison used when scoring pairs. The anonymous id is an
HMAC-SHA256 of the canonical identity under a per-org secret: stable inside the org, unlinkable
outside it without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from functools import lru_cache

import jellyfish

from shardline.core.contacts import ContactRecord

KEYS_VERSION = 1


@lru_cache(maxsize=200_000)
def metaphone(word: str) -> str:
    return jellyfish.metaphone(word).replace(" ", "") if word else ""


@lru_cache(maxsize=200_000)
def nysiis(word: str) -> str:
    return jellyfish.nysiis(word) if word else ""


@lru_cache(maxsize=200_000)
def mrc(word: str) -> str:
    return jellyfish.match_rating_codex(word) if word.isalpha() else ""


def _compact(text: str) -> str:
    return text.replace(" ", "")


@dataclass(frozen=True)
class PhoneticKeys:
    given_metaphone: str
    given_nysiis: str
    given_mrc: str
    family_metaphone: str
    family_nysiis: str
    family_mrc: str

    def to_json(self) -> str:
        return canonical_json({"v": KEYS_VERSION, **self.__dict__})

    @classmethod
    def from_json(cls, text: str) -> PhoneticKeys:
        data = json.loads(text)
        data.pop("v", None)
        return cls(**data)


def canonical_json(data: dict) -> str:
    """Sorted keys, no spaces, UTF-8: the same keys give the same bytes everywhere."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def phonetic_keys(c: ContactRecord) -> PhoneticKeys:
    g, f = _compact(c.given_name), _compact(c.family_name)
    return PhoneticKeys(metaphone(g), nysiis(g), mrc(g), metaphone(f), nysiis(f), mrc(f))


def jaro_winkler(a: str, b: str) -> float:
    if not a or not b:
        return 0.0
    return jellyfish.jaro_winkler_similarity(a, b)


def anonymous_id(c: ContactRecord, org_secret: bytes) -> str:
    """HMAC of the contact's identity (names, birth date, id number) under the org's secret."""
    if len(org_secret) < 32:
        raise ValueError("the org's contact secret must be at least 32 bytes")
    identity = canonical_json(
        {
            "g": c.given_name,
            "f": c.family_name,
            "b": c.birth_date,
            "i": c.id_number,
        }
    )
    return hmac.new(org_secret, identity.encode(), hashlib.sha256).hexdigest()
