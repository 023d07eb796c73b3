"""deploy/ stays valid: every file parses, names every worker the stack starts, and the NATS
cluster configuration is one nats-server accepts."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from shardline import servers, stack
from shardline.bus import streams, subjects
from shardline.bus.connect import server_list
from shardline.config import StackConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NATS_CONFS = sorted((DEPLOY / "nats").glob("nats-*.conf"))


@pytest.fixture(scope="module")
def example() -> StackConfig:
    return StackConfig.model_validate(json.loads((DEPLOY / "config" / "stack.json").read_text()))


@pytest.fixture(scope="module")
def started(example) -> set[tuple[str, str | None]]:
    """(worker kind, org) for every process `shardline up` starts for this stack file."""
    out = set()
    for name in stack.worker_names(example):
        argv = stack.worker_spec(example, name)
        kind = argv[argv.index("worker") + 1]
        org = argv[argv.index("--org") + 1] if "--org" in argv else None
        out.add((kind, org))
    assert {k for k, _ in out} == {
        "org-node",
        "combiner",
        "gateway",
        "contacts-jobs",
        "contacts-api",
    }
    return out


def _worker_of(argv: list[str]) -> tuple[str, str | None] | None:
    if "worker" not in argv:
        return None
    kind = argv[argv.index("worker") + 1]
    return kind, argv[argv.index("--org") + 1] if "--org" in argv else None


def _covers(found: set[tuple[str, str | None]], started: set, templated_orgs: bool = False):
    kinds = {k for k, _ in found}
    missing = {k for k, _ in started} - kinds
    assert not missing, f"no entry runs {sorted(missing)}"
    if not templated_orgs:
        orgs = {o for k, o in found if k == "org-node"}
        want = {o for k, o in started if k == "org-node"}
        assert orgs == want, f"org nodes {sorted(orgs)} != {sorted(want)}"


def test_the_example_stack_file_is_a_valid_cluster_configuration(example):
    assert example.stream_replicas == 3
    assert server_list(example.nats_url) == [f"nats://nats-{i}:4222" for i in (1, 2, 3)]
    assert [o.id for o in example.orgs] == ["org1", "org2", "org3", "org4"]
    assert all(o.key_file.name.endswith(".keystore.json") for o in example.orgs)
    assert example.gas.max_fee_gwei == 50 and example.confirmations >= 1
    assert all(o.nats_seed_file is None for o in example.orgs)  # a path per node once issued


def test_streams_take_the_configured_replicas():
    configs = streams.stream_configs(3)
    assert {c.name for c in configs} == set(subjects.STREAMS)
    assert {c.num_replicas for c in configs} == {3}
    assert {c.num_replicas for c in streams.stream_configs()} == {1}  # one server by default


def test_the_procfile_runs_every_worker(started):
    found = set()
    for line in (DEPLOY / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            _name, _, cmd = line.partition(":")
            found.add(_worker_of(shlex.split(cmd)))
    _covers(found - {None}, started)


def test_systemd_units_run_every_worker_and_the_nats_servers(started):
    found, nats_units = set(), []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # systemd keys are case-sensitive
        parser.read(unit)
        assert {"Unit", "Service", "Install"} <= set(parser.sections()), unit.name
        exec_start = shlex.split(parser["Service"]["ExecStart"])
        assert exec_start[0].startswith("/"), f"{unit.name}: ExecStart needs an absolute path"
        w = _worker_of(exec_start)
        if w is not None:
            kind, org = w
            found.add((kind, None if org == "%i" else org))
            assert "SHARDLINE_CONFIG=" in parser["Service"].get("Environment", ""), unit.name
        elif exec_start[0].endswith("nats-server"):
            nats_units.append(exec_start)
    _covers(found, started, templated_orgs=True)
    assert nats_units and "nats-%i.conf" in nats_units[0][-1]


def test_the_compose_file_runs_every_worker_and_three_nats_servers(started):
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    found = {w for s in services.values() if (w := _worker_of(s.get("command", [])))}
    _covers(found, started)
    for i in (1, 2, 3):
        mount = services[f"nats-{i}"]["volumes"][0].split(":")[0]
        assert (DEPLOY / "compose" / mount).resolve() == DEPLOY / "nats" / f"nats-{i}.conf"
    assert services["combiner"]["deploy"]["replicas"] >= 2
    build = services["org1"]["build"]
    assert (DEPLOY / "compose" / build["context"] / build["dockerfile"]).exists()


def test_the_kubernetes_manifests_run_every_worker_and_a_three_node_nats(started):
    docs = [
        d
        for f in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    assert all({"apiVersion", "kind", "metadata"} <= d.keys() for d in docs)
    found = set()
    for d in docs:
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                if w := _worker_of(c.get("args", [])):
                    found.add(w)
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
    _covers(found, started)
    (nats,) = [d for d in docs if d["kind"] == "StatefulSet"]
    assert nats["spec"]["replicas"] == 3
    conf = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["nats.conf"]
    assert len(re.findall(r"nats-route://nats-\d\.nats:6222", conf)) == 3


def test_the_three_nats_configs_form_one_jetstream_cluster():
    assert [p.name for p in NATS_CONFS] == ["nats-1.conf", "nats-2.conf", "nats-3.conf"]
    names = set()
    for p in NATS_CONFS:
        text = p.read_text()
        names.add(re.search(r"^server_name:\s*(\S+)", text, re.M).group(1))
        assert "jetstream {" in text and "cluster {" in text and "name: shardline" in text
        routes = re.findall(r"nats-route://(nats-\d):6222", text)
        assert sorted(routes) == ["nats-1", "nats-2", "nats-3"], p.name
    assert names == {"nats-1", "nats-2", "nats-3"}


@pytest.mark.parametrize("conf", NATS_CONFS, ids=lambda p: p.name)
def test_nats_server_accepts_each_config(conf):
    done = subprocess.run(
        [servers.nats_server_bin(), "-c", str(conf), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_container_image_runs_the_shardline_command():
    text = (DEPLOY / "container" / "Containerfile").read_text()
    assert re.search(r"^FROM \S+python:3\.1[1-9]", text, re.M)
    assert 'ENTRYPOINT ["shardline"]' in text
    assert re.search(r"^USER (?!root)\S+", text, re.M)
