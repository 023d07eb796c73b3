"""Stack and gateway configuration."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shardline.config import (
    ConfigError,
    GatewayConfig,
    OrgNodeConfig,
    Responder,
    StackConfig,
)


def responder(name: str, api_key: str) -> Responder:
    return Responder(
        name=name,
        api_key_sha256=hashlib.sha256(api_key.encode()).hexdigest(),
        key_file=Path(f"{name}.key.json"),
    )


@pytest.fixture
def gateway() -> GatewayConfig:
    return GatewayConfig(
        key_file=Path("gw.key.json"),
        responders=[responder("brigade-a", "key-a"), responder("brigade-b", "key-b")],
    )


def test_responder_for_finds_each_responder(gateway):
    assert gateway.responder_for("key-a").name == "brigade-a"
    assert gateway.responder_for("key-b").name == "brigade-b"


@pytest.mark.parametrize(
    "wrong", ["", "key-c", "KEY-A", "key-a ", hashlib.sha256(b"key-a").hexdigest()]
)
def test_responder_for_wrong_key_is_none(gateway, wrong):
    assert gateway.responder_for(wrong) is None


def test_responder_for_with_no_responders():
    assert GatewayConfig(key_file=Path("gw.json")).responder_for("key-a") is None


def stack(tmp_path: Path) -> StackConfig:
    return StackConfig(
        run_dir=tmp_path / "run",
        admin_key_file=tmp_path / "admin.json",
        orgs=[
            OrgNodeConfig(
                id="org1", name="Org 1", key_file=tmp_path / "o1", database_url="sqlite://"
            ),
            OrgNodeConfig(
                id="org2",
                name="Org 2",
                key_file=tmp_path / "o2",
                database_url="sqlite://",
                chain_rpc="http://10.0.0.2:8545",
            ),
        ],
        gateway=GatewayConfig(key_file=tmp_path / "gw", responders=[responder("b", "k")]),
    )


def test_load_missing_path_mentions_shardline_up(tmp_path):
    path = tmp_path / "nope" / "stack.json"
    with pytest.raises(ConfigError, match="`shardline up`") as info:
        StackConfig.load(path)
    assert str(path) in str(info.value)


def test_load_uses_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.json"
    monkeypatch.setenv("SHARDLINE_CONFIG", str(path))
    with pytest.raises(ConfigError, match=r"elsewhere\.json"):
        StackConfig.load()


def test_save_load_round_trip(tmp_path):
    cfg = stack(tmp_path)
    cfg.save()
    assert cfg.path == tmp_path / "run" / "stack.json"
    back = StackConfig.load(cfg.path)
    assert back == cfg
    assert back.gateway.responder_for("k").name == "b"


@pytest.mark.parametrize("content", ["not json", "{}", '{"gateway": 1}'])
def test_load_invalid_file(tmp_path, content):
    path = tmp_path / "stack.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="is invalid") as info:
        StackConfig.load(path)
    assert str(path) in str(info.value)


def test_org_lookup_and_rpc(tmp_path):
    cfg = stack(tmp_path)
    assert cfg.org("org1").name == "Org 1"
    assert cfg.org_rpc(cfg.org("org1")) == cfg.chain_rpc
    assert cfg.org_rpc(cfg.org("org2")) == "http://10.0.0.2:8545"
    with pytest.raises(ConfigError, match="no org 'org9'") as info:
        cfg.org("org9")
    assert "org1, org2" in str(info.value)


def test_records_freshness_defaults_to_pushed_and_takes_only_known_modes(tmp_path):
    org = OrgNodeConfig(id="org1", name="Org 1", key_file=tmp_path / "o1", database_url="sqlite://")
    assert org.records_freshness == "pushed"
    exact = org.model_copy(update={"records_freshness": "exact"})
    cfg = StackConfig(
        run_dir=tmp_path / "run",
        admin_key_file=tmp_path / "admin.json",
        orgs=[exact],
        gateway=GatewayConfig(key_file=tmp_path / "gw.json"),
    )
    cfg.save()
    assert StackConfig.load(cfg.path).org("org1").records_freshness == "exact"
    with pytest.raises(ValueError, match="records_freshness"):
        OrgNodeConfig.model_validate({**org.model_dump(), "records_freshness": "eventual"})


def test_load_takes_a_run_directory_and_names_where_a_missing_path_came_from(tmp_path, monkeypatch):
    """`--config DIR` (a stack's run directory, the natural guess) reads DIR/stack.json; a path
    that is not there says whether --config or $SHARDLINE_CONFIG named it."""
    monkeypatch.delenv("SHARDLINE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=r"given by --config") as info:
        StackConfig.load(tmp_path)
    assert str(tmp_path / "stack.json") in str(info.value)
    monkeypatch.setenv("SHARDLINE_CONFIG", str(tmp_path / "gone.json"))
    with pytest.raises(ConfigError, match=r"given by \$SHARDLINE_CONFIG"):
        StackConfig.load()
