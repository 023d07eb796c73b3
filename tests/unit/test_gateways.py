"""Further gateway processes of a stack: their names, ports, URLs and configuration files."""

from __future__ import annotations

import stat

import pytest

from shardline import gateways, stack
from shardline.config import GatewayConfig, StackConfig


@pytest.fixture
def cfg(tmp_path) -> StackConfig:
    return StackConfig(
        run_dir=tmp_path,
        admin_key_file=tmp_path / "keys" / "admin.key",
        gateway=GatewayConfig(key_file=tmp_path / "keys" / "gateway.json", port=18080),
        gateway_replicas=[18081, 18082],
    )


def test_every_gateway_has_a_name_a_port_and_a_url_in_the_order_a_client_tries_them(cfg):
    assert gateways.names(cfg) == ["gateway-2", "gateway-3"]
    assert [gateways.port(cfg, n) for n in ("gateway", "gateway-2", "gateway-3")] == [
        18080,
        18081,
        18082,
    ]
    assert gateways.urls(cfg) == [
        "http://127.0.0.1:18080",
        "http://127.0.0.1:18081",
        "http://127.0.0.1:18082",
    ]
    assert "gateway-3" in stack.worker_names(cfg)
    with pytest.raises(ValueError, match="no gateway-4; its gateways: gateway, gateway-2"):
        gateways.port(cfg, "gateway-4")
    with pytest.raises(ValueError, match="not a gateway"):
        gateways.port(cfg, "combiner")


def test_a_replica_runs_from_a_private_copy_that_differs_in_its_port_and_names_every_gateway(
    cfg,
):
    argv = stack.worker_spec(cfg, "gateway-2")
    path = gateways.config_path(cfg, "gateway-2")
    assert argv[-4:] == ["worker", "gateway", "--config", str(path.resolve())]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    copy = StackConfig.model_validate_json(path.read_text())
    assert copy.gateway.port == 18081
    # its own port no longer tells where the first gateway is: the list is written out
    assert gateways.urls(copy) == gateways.urls(cfg)
    copy.gateway.port = cfg.gateway.port
    copy.gateway_urls = []
    assert copy == cfg
    with pytest.raises(stack.StackError, match="no worker called 'gateway-9'"):
        stack.worker_spec(cfg, "gateway-9")


def test_gateway_urls_when_set_are_what_responders_are_given(cfg):
    cfg.gateway_urls = ["https://gw-a.example.org", "https://gw-b.example.org"]
    assert gateways.urls(cfg) == ["https://gw-a.example.org", "https://gw-b.example.org"]


def test_a_stack_needs_a_gateway(tmp_path):
    with pytest.raises(stack.StackError, match="at least one gateway"):
        stack.up(tmp_path, gateway_count=0, say=lambda _m: None)


def test_the_cli_lists_the_gateways_in_order(cfg):
    import json

    from typer.testing import CliRunner

    from shardline.cli import app

    cfg.save()
    out = CliRunner().invoke(app, ["gateway", "urls", "--json", "--config", str(cfg.path)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == gateways.urls(cfg)
    bad = CliRunner().invoke(app, ["gateway", "add", "--count", "0", "--config", str(cfg.path)])
    assert bad.exit_code == 1
    assert "add at least one gateway, not 0" in bad.output
