"""Any JSON-RPC chain: the gas policy and the encrypted key files, with no chain needed."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from shardline.config import StackConfig
from shardline.core import keystore
from shardline.core.gas import GWEI, GasPolicy, GasPolicyError
from shardline.core.keys import KeyFileError, ParticipantKeys

FAST = {"kdf": "pbkdf2", "iterations": 2}  # the tests' own cost; operators keep scrypt


def test_the_default_policy_offers_twice_the_base_fee_and_the_nodes_tip():
    assert GasPolicy().fees(10 * GWEI, 2 * GWEI) == (22 * GWEI, 2 * GWEI)
    assert GasPolicy().fees(10 * GWEI, None) == (21 * GWEI, 1 * GWEI)


def test_a_fixed_tip_and_multiplier_replace_the_nodes_suggestion():
    policy = GasPolicy(base_fee_multiplier=1.25, priority_fee_gwei=0)
    assert policy.fees(8 * GWEI, 5 * GWEI) == (10 * GWEI, 0)
    assert policy.fees(0, None) == (0, 0)  # a consortium chain with free gas


def test_the_cap_limits_the_offer_and_refuses_a_chain_above_it():
    policy = GasPolicy(max_fee_gwei=30, priority_fee_gwei=2)
    assert policy.fees(20 * GWEI, None) == (30 * GWEI, 2 * GWEI)
    with pytest.raises(GasPolicyError, match=r"max_fee_gwei \(30\)"):
        policy.fees(29 * GWEI, None)


@pytest.mark.parametrize(
    "kwargs", [{"base_fee_multiplier": 0.5}, {"max_fee_gwei": -1}, {"priority_fee_gwei": -2}]
)
def test_nonsense_policies_are_refused_with_the_setting_named(kwargs):
    with pytest.raises(GasPolicyError, match=r"gas\."):
        GasPolicy(**kwargs)


def test_the_stack_file_carries_the_gas_policy_and_stream_replicas(tmp_path):
    raw = {
        "admin_key_file": str(tmp_path / "admin.key"),
        "gateway": {"key_file": str(tmp_path / "gw.json")},
        "chain_id": 11155111,
        "confirmations": 3,
        "gas": {"max_fee_gwei": 50, "priority_fee_gwei": 1.5},
        "stream_replicas": 3,
    }
    cfg = StackConfig.model_validate(raw)
    assert cfg.gas == GasPolicy(max_fee_gwei=50, priority_fee_gwei=1.5)
    assert cfg.stream_replicas == 3
    again = StackConfig.model_validate(json.loads(cfg.model_dump_json()))
    assert again.gas == cfg.gas and again.orgs == [] and again.gateway.nats_seed_file is None
    with pytest.raises(ValueError):
        StackConfig.model_validate({**raw, "stream_replicas": 0})


def test_an_encrypted_key_file_opens_to_the_same_keys_with_its_password(tmp_path, monkeypatch):
    keys = ParticipantKeys.generate("org7")
    path = tmp_path / "org7.keystore.json"
    keys.save_encrypted(path, "correct horse", password_source={"env": "ORG7_PW"}, **FAST)
    text = path.read_text()
    for secret in (keys.chain_key, keys.signing_seed, keys.sealing_secret):
        assert secret.hex() not in text
    data = json.loads(text)
    # the chain entry is a plain Ethereum keystore: any wallet opens it
    assert Account.decrypt(data["chain"], "correct horse") == keys.chain_key
    assert data["chain"]["address"].lower() == Account.from_key(keys.chain_key).address[2:].lower()
    assert (path.stat().st_mode & 0o777) == 0o600
    monkeypatch.setenv("ORG7_PW", "correct horse")
    assert ParticipantKeys.load(path) == keys


def test_a_wrong_or_missing_password_is_a_clear_error(tmp_path, monkeypatch):
    keys = ParticipantKeys.generate("gateway")
    path = tmp_path / "gw.json"
    keys.save_encrypted(path, "s3cret", **FAST)
    monkeypatch.delenv(keystore.PASSWORD_ENV, raising=False)
    monkeypatch.delenv(keystore.PASSWORD_FILE_ENV, raising=False)
    with pytest.raises(KeyFileError, match="SHARDLINE_KEY_PASSWORD_FILE"):
        ParticipantKeys.load(path)
    monkeypatch.setenv(keystore.PASSWORD_ENV, "wrong")
    with pytest.raises(KeyFileError, match="wrong password"):
        ParticipantKeys.load(path)
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    monkeypatch.setenv(keystore.PASSWORD_FILE_ENV, str(pw))  # the file wins over the variable
    assert ParticipantKeys.load(path) == keys


def test_a_password_source_must_be_an_env_or_a_file(tmp_path):
    with pytest.raises(keystore.KeystoreError, match="must be"):
        ParticipantKeys.generate("x").save_encrypted(
            tmp_path / "x.json", "pw", password_source={"url": "http://x"}, **FAST
        )
    with pytest.raises(keystore.KeystoreError, match="empty password"):
        ParticipantKeys.generate("x").save_encrypted(tmp_path / "x.json", "", **FAST)


def test_keys_encrypt_and_check_on_the_command_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from shardline.cli import app

    keys = ParticipantKeys.generate("org5")
    plain = tmp_path / "org5.json"
    keys.save(plain)
    out = tmp_path / "org5.keystore.json"
    monkeypatch.setenv("ORG5_PW", "pw for org5")
    runner = CliRunner()
    done = runner.invoke(
        app,
        [
            *("keys", "encrypt", str(plain), "--out", str(out), "--password-env", "ORG5_PW"),
            *("--kdf", "pbkdf2", "--kdf-cost", "1000", "--remove-plain"),
        ],
    )
    assert done.exit_code == 0, done.output
    assert not plain.exists() and json.loads(out.read_text())["password"] == {"env": "ORG5_PW"}
    done = runner.invoke(app, ["keys", "check", str(out)])
    assert done.exit_code == 0, done.output
    assert keys.signing_public.hex() in done.output and keys.chain_key.hex() not in done.output
    monkeypatch.delenv("ORG5_PW")
    done = runner.invoke(app, ["keys", "check", str(out)])
    assert done.exit_code == 1 and "ORG5_PW" in done.output
    done = runner.invoke(app, ["keys", "encrypt", str(out), "--out", str(tmp_path / "x.json")])
    assert done.exit_code == 2 and "exactly one of" in done.output
