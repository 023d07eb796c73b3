"""The logs bloom test a reader uses to pass over blocks (checked against anvil's own blooms in
tests/integration/test_chain_cursor.py)."""

from __future__ import annotations

import pytest

from shardline.core import bloom

ADDRESS = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
TOPIC = bytes(range(32))


def test_a_value_sets_one_to_three_of_the_2048_bits():
    for value in (ADDRESS, TOPIC, b"\0" * 20):
        bits = bloom.mask(value)
        assert 1 <= bin(bits).count("1") <= 3
        assert bits < 1 << 2048


def test_an_empty_bloom_rules_out_everything_and_a_filled_one_rules_in():
    a, t = bloom.mask(ADDRESS), bloom.mask(TOPIC)
    assert not bloom.may_match(0, [a], [t])
    assert bloom.may_match(a | t, [a], [t])
    # the address alone, or the topic alone, is not a log of that address with that topic
    assert not bloom.may_match(a, [a], [t])
    assert not bloom.may_match(t, [a], [t])
    # no addresses: any contract's log with the topic
    assert bloom.may_match(t, [], [t])
    assert bloom.may_match(t | a, [bloom.mask(b"\1" * 20), a], [bloom.mask(b"\2" * 32), t])


def test_no_topics_means_any_topic():
    a = bloom.mask(ADDRESS)
    assert bloom.may_match(a, [a], [])
    assert not bloom.may_match(0, [a], [])


def test_parse_reads_the_header_field_big_endian():
    raw = bytearray(256)
    raw[-1] = 1  # the lowest bit
    assert bloom.parse("0x" + raw.hex()) == 1
    assert bloom.parse("0x" + "00" * 256) == 0
    with pytest.raises(ValueError, match="256 bytes"):
        bloom.parse("0x00")
