"""The PSI core: equal keys meet after both blindings, nothing else does, bad points are refused."""

from __future__ import annotations

import pytest

from shardline.core import psi
from shardline.core.contacts import read_csv

TORSION = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")


def test_shared_keys_meet_and_others_do_not():
    a_keys = [b"k1", b"k2", b"k3"]
    b_keys = [b"k3", b"k4", b"k1"]
    ka, kb = psi.new_scalar(), psi.new_scalar()
    offer = psi.blind_keys(a_keys, ka)
    reply = psi.reblind(offer, kb)
    final = psi.reblind(psi.blind_keys(b_keys, kb), ka)
    shared = psi.intersect(reply, [10, 20, 30], final)
    assert set(shared) == {10, 30}
    # what the responder learns from the same values, in its own order
    shared_b = psi.intersect(final, [1, 2, 3], reply)
    assert set(shared_b) == {1, 3}
    # a blinded key reveals nothing equal to the plain hash or to another party's blinding
    assert offer[0] != psi.hash_to_group(b"k1")
    assert psi.blind_keys([b"k1"], kb)[0] != offer[0]


@pytest.mark.parametrize(
    "bad",
    [bytes(32), TORSION, b"\xff" * 32, bytes([1]) + bytes(31), b"\x01" * 31],
    ids=["identity", "edwards-torsion", "non-canonical", "negative", "short"],
)
def test_points_outside_the_group_are_refused(bad):
    with pytest.raises(psi.BadPoint):
        psi.reblind([bad], psi.new_scalar())


def test_the_first_bad_element_is_named():
    good = psi.blind_keys([b"a", b"b"], psi.new_scalar())
    with pytest.raises(psi.BadPoint, match="element 2 is not a point of the prime-order group"):
        psi.reblind([*good, b"\xff" * 32], psi.new_scalar())


def test_spelling_variants_share_a_match_key_and_strangers_do_not():
    mapping = {"given_name": "g", "family_name": "f", "birth_date": "d", "postcode": "p"}
    a, b, c = read_csv(
        "g,f,d,p\nMohammed,Haddad,1980-03-04,2000\nMohamed,Hadad,1980-04-03,2000\n"
        "Amira,Khoury,1991-05-12,3000\n",
        mapping,
    ).records
    assert set(psi.match_keys(a)) & set(psi.match_keys(b))
    assert not set(psi.match_keys(a)) & set(psi.match_keys(c))
    # the prototype's one exact id misses the variant whose day and month were swapped
    assert not set(psi.prototype_key(a)) & set(psi.prototype_key(b))


def test_padding_points_are_group_points():
    assert psi.is_point(psi.random_point())
