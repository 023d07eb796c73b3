"""Synthetic registrations with realistic faults, for tests and benchmarks (no real person).

Each person gets an entity id; duplicates of a person carry typos (a dropped, doubled, swapped
or replaced letter), transliteration variants of the name (Mohammad, Mohamed, Muhammed), day and
month swapped, a missing field or a changed phone digit.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass

GIVEN = [
    ["mohammad", "mohamed", "muhammed", "mohammed", "muhammad"],
    ["ahmad", "ahmed", "ahmet"],
    ["fatima", "fatma", "fatimah"],
    ["aisha", "aysha", "aicha", "ayesha"],
    ["yusuf", "youssef", "yousef", "joseph"],
    ["ibrahim", "ebrahim", "ibraheem"],
    ["khadija", "khadidja", "hatice"],
    ["omar", "umar", "omer"],
    ["mariam", "maryam", "meryem", "miriam"],
    ["hassan", "hasan"],
    ["hussein", "husain", "hussain", "huseyin"],
    ["layla", "leila", "laila"],
    ["zainab", "zaynab", "zeynep"],
    ["ali"],
    ["amina", "aminah"],
    ["khalid", "khaled"],
    ["nour", "noor", "nur"],
    ["samir", "sameer"],
    ["rania"],
    ["tariq", "tarek", "tarik"],
    ["salma"],
    ["bilal"],
    ["anna", "ana"],
    ["maria", "mariya"],
    ["olena", "elena", "yelena"],
    ["ivan"],
    ["dmytro", "dmitri"],
    ["grace"],
    ["john", "jon"],
    ["peter", "pieter"],
    ["sara", "sarah"],
    ["daniel"],
    ["ruth"],
]
FAMILY = [
    "haddad",
    "khoury",
    "nasser",
    "hamdan",
    "saleh",
    "mansour",
    "abboud",
    "darwish",
    "farah",
    "habib",
    "jaber",
    "karam",
    "issa",
    "rahman",
    "sabbagh",
    "shami",
    "taha",
    "yassin",
    "zaki",
    "qasim",
    "bakr",
    "hijazi",
    "najjar",
    "masri",
    "halabi",
    "attar",
    "kanaan",
    "odeh",
    "salem",
    "shevchenko",
    "kovalenko",
    "bondarenko",
    "tkachenko",
    "melnyk",
    "okafor",
    "mensah",
    "diallo",
    "traore",
    "nguyen",
    "tran",
    "silva",
    "santos",
    "garcia",
    "lopez",
    "popescu",
    "horvath",
]
LOCALITIES = [
    "zahle",
    "baalbek",
    "tripoli",
    "saida",
    "tyre",
    "jounieh",
    "byblos",
    "aley",
    "nabatieh",
    "halba",
    "marjayoun",
    "hermel",
    "batroun",
    "chtaura",
    "anjar",
    "jbeil",
    "bcharre",
    "rashaya",
]
STREETS = [
    "main street",
    "church road",
    "market lane",
    "school street",
    "river road",
    "hill road",
    "station street",
]


@dataclass(frozen=True)
class Person:
    entity: int
    given: str
    family: str
    birth: str
    phone: str
    street_number: str
    street: str
    locality: str
    postcode: str
    id_number: str


def _person(rng: random.Random, entity: int) -> tuple[Person, list[str]]:
    variants = rng.choice(GIVEN)
    y, m, d = rng.randint(1940, 2022), rng.randint(1, 12), rng.randint(1, 28)
    p = Person(
        entity,
        rng.choice(variants),
        rng.choice(FAMILY) + ("" if rng.random() < 0.7 else " " + rng.choice(FAMILY)),
        f"{y:04d}-{m:02d}-{d:02d}",
        "961" + "".join(rng.choice("0123456789") for _ in range(8)),
        str(rng.randint(1, 300)),
        rng.choice(STREETS),
        rng.choice(LOCALITIES),
        str(rng.randint(1000, 9999)),
        "".join(rng.choice("0123456789") for _ in range(9)),
    )
    return p, variants


def _typo(rng: random.Random, s: str) -> str:
    if len(s) < 3:
        return s
    i = rng.randrange(1, len(s) - 1)
    op = rng.randrange(4)
    if op == 0:
        return s[:i] + s[i + 1 :]
    if op == 1:
        return s[:i] + s[i] + s[i:]
    if op == 2:
        return s[: i - 1] + s[i] + s[i - 1] + s[i + 1 :]
    return s[:i] + rng.choice("aeiounrst") + s[i + 1 :]


def _duplicate(rng: random.Random, p: Person, variants: list[str]) -> Person:
    given, family, birth, phone, idn, num = (
        p.given,
        p.family,
        p.birth,
        p.phone,
        p.id_number,
        p.street_number,
    )
    faults = rng.sample(range(7), k=rng.randint(1, 3))
    for f in faults:
        if f == 0:
            given = rng.choice(variants) if len(variants) > 1 else _typo(rng, given)
        elif f == 1:
            given = _typo(rng, given)
        elif f == 2:
            family = _typo(rng, family)
        elif f == 3:
            y, m, d = birth.split("-")
            birth = f"{y}-{d}-{m}" if int(d) <= 12 else f"{y}-{m}-{int(d) % 28 + 1:02d}"
        elif f == 4:
            phone = "" if rng.random() < 0.5 else phone[:-1] + rng.choice("0123456789")
        elif f == 5:
            idn = "" if rng.random() < 0.5 else _typo(rng, idn)
        else:
            num = ""
    return Person(p.entity, given, family, birth, phone, num, p.street, p.locality, p.postcode, idn)


def people(n: int, dup_share: float = 0.3, seed: int = 7) -> list[Person]:
    """``n`` registrations, about ``dup_share`` of them duplicates of another, shuffled."""
    rng = random.Random(seed)
    out: list[Person] = []
    entity = 0
    while len(out) < n:
        p, variants = _person(rng, entity)
        entity += 1
        out.append(p)
        while len(out) < n and rng.random() < dup_share:
            out.append(_duplicate(rng, p, variants))
    rng.shuffle(out)
    return out


HEADER = [
    "ref",
    "first",
    "last",
    "dob",
    "phone",
    "house",
    "street",
    "town",
    "postcode",
    "national_id",
]
MAPPING = {
    "external_id": "ref",
    "given_name": "first",
    "family_name": "last",
    "birth_date": "dob",
    "phone": "phone",
    "street_number": "house",
    "address": "street",
    "locality": "town",
    "postcode": "postcode",
    "id_number": "national_id",
}


def to_csv(persons: list[Person]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HEADER)
    for i, p in enumerate(persons):
        w.writerow(
            [
                f"p{p.entity}-{i}",
                p.given,
                p.family,
                p.birth,
                p.phone,
                p.street_number,
                p.street,
                p.locality,
                p.postcode,
                p.id_number,
            ]
        )
    return buf.getvalue()
