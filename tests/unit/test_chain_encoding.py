"""The lookup's hot-path encodings agree with the reference libraries byte for byte."""

from __future__ import annotations

import secrets

import pytest
from eth_account import Account
from web3 import Web3

from shardline.contracts import registry
from shardline.contracts.artifacts import load_artifact
from shardline.contracts.txsign import sign_eip1559
from shardline.workers.gateway import preferred_wait


@pytest.mark.parametrize("data_len", [0, 100, 1000])
def test_eip1559_signing_matches_eth_account(data_len):
    acct = Account.create()
    tx = {
        "type": 2,
        "to": Web3.to_checksum_address("0x" + secrets.token_hex(20)),
        "data": secrets.token_bytes(data_len),
        "gas": 200_000,
        "value": 7,
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
        "chainId": 31337,
        "nonce": 42,
    }
    ref = acct.sign_transaction(tx)
    raw, tx_hash = sign_eip1559(acct.key, tx)
    assert raw == ref.raw_transaction
    assert tx_hash == ref.hash.to_0x_hex()
    assert Account.recover_transaction(raw) == acct.address


def test_request_lookup_calldata_matches_the_abi():
    gk = Web3().eth.contract(address="0x" + "11" * 20, abi=load_artifact("Gatekeeper").abi)
    guid, key, epk = secrets.token_bytes(16), secrets.token_bytes(32), secrets.token_bytes(32)
    expected = gk.functions.requestLookup(guid, key, epk)._encode_transaction_data()
    assert "0x" + registry.request_lookup_calldata(guid, key, epk).hex() == expected


def test_request_lookup_calldata_refuses_wrong_sizes():
    with pytest.raises(ValueError, match="lookup guid"):
        registry.request_lookup_calldata(b"\1" * 15, b"\2" * 32, b"\3" * 32)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 0.0),
        ("wait=2", 2.0),
        ("respond-async, wait=1.5", 1.5),
        ('wait="3"', 3.0),
        ("wait=600", 30.0),
        ("wait=soon", 0.0),
        ("return=minimal", 0.0),
    ],
)
def test_prefer_wait_header(header, seconds):
    assert preferred_wait(header) == seconds
