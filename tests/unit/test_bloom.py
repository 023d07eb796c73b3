"""The logs bloom test a reader uses to pass over blocks (checked against anvil's own blooms in
tests/integration/test_chain_cursor.py)."""

from __future__ import annotations

import pytest

from shardline.core import bloom

ADDRESS = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
TOPIC = bytes(range(32))


# A block anvil mined with one log (a Gatekeeper's LookupRequested): its address, its four
# topics, and the header's logsBloom, as the node gave them.
LOG_ADDRESS = "cf7ed3acca5a467e9e704c703e8d87f634fb0fc9"
LOG_TOPICS = [
    "9f0add0688f8dc3571a285f2cdfc728485aad79d1ece3995cb7338ed680abd18",
    "10d6529920ac4b79a2ed8549b046aee600000000000000000000000000000000",
    "133f8d3bf561cfefc2705d58fd8ee54f91d860e08cfef9dffc6a6f12ab4dc887",
    "000000000000000000000000a38e3601b94fc3e0cf07e08859737f21121c400d",
]
NODE_BLOOM = "0x" + (
    "0000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000080000000000000000000000000000000001"
    "0000000000000000080000000000000000000000000000000100008000000000"
    "0000000000100000000100000000000000000000000000000000000000000000"
    "0000000008000004000000000000000000400000000000000001000000000000"
    "0000000000000000000000000000002000000000000000000000000000000000"
    "0000000040000000000000000000000000000000000000000000000000200000"
    "0000000000000000000000000000000000000000000000000000080000000000"
)


def test_the_masks_of_a_logs_address_and_topics_are_the_nodes_bloom():
    expected = bloom.mask(bytes.fromhex(LOG_ADDRESS))
    for t in LOG_TOPICS:
        expected |= bloom.mask(bytes.fromhex(t))
    assert bloom.parse(NODE_BLOOM) == expected


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
