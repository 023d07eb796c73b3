"""The committed contract artifacts are exactly what the pinned solc makes of the sources."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from shardline.contracts import load_artifact

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = REPO / "shardline" / "contracts"
COMPILE = CONTRACTS / "compile.mjs"
EXPECTED = {
    "Gatekeeper",
    "Governor",
    "ListAgreements",
    "Market",
    "Mediator",
    "OrgRegistry",
    "RecordsRegistry",
    "SharedInventory",
    "TransportRegistry",
}


def test_artifacts_match_a_fresh_compile() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js 20+ to compile the contracts")
    if not (REPO / "node_modules" / "solc" / "package.json").exists():
        pytest.fail("node_modules/solc is missing: run `npm ci` in the repository root")
    proc = subprocess.run(
        [node, str(COMPILE.relative_to(REPO)), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (
        f"compile.mjs --check failed (exit {proc.returncode}); run `make compile`\n"
        f"{proc.stdout}\n{proc.stderr}"
    )


def _source_of(name: str) -> Path:
    """The .sol file that defines contract ``name``."""
    for sol in sorted((CONTRACTS / "sol").glob("*.sol")):
        if f"contract {name} " in sol.read_text(encoding="utf-8"):
            return sol
    raise AssertionError(f"no source defines contract {name}")


def test_artifacts_record_the_current_source_hash() -> None:
    artifacts = {p.stem: p for p in (CONTRACTS / "artifacts").glob("*.json")}
    assert set(artifacts) == EXPECTED
    for name, path in artifacts.items():
        artifact = json.loads(path.read_text(encoding="utf-8"))
        source = _source_of(name)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        assert artifact["contractName"] == name
        assert artifact["sourceSha256"] == digest, f"{path.name} is stale: run `make compile`"
        assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 2
        assert artifact["compiler"].startswith("solc 0.8.37")
        assert path.read_text(encoding="utf-8").endswith("}\n")


def test_load_artifact_reads_abi_and_bytecode() -> None:
    artifact = load_artifact("Gatekeeper")
    names = {e.get("name") for e in artifact.abi}
    assert {"requestLookup", "requestLookups", "LookupRequested", "grantRole"} <= names
    assert artifact.bytecode.startswith("0x")


def test_the_embedded_chain_runs_the_evm_the_contracts_are_compiled_for(tmp_path: Path) -> None:
    """anvil is started with the hardfork of compile.mjs's ``evmVersion``: a newer default
    (prague) would make every block dearer as the chain grows (servers.ANVIL_HARDFORK)."""
    from shardline import servers

    settings = COMPILE.read_text(encoding="utf-8")
    compiled_for = settings.split('evmVersion: "', 1)[1].split('"', 1)[0]
    argv = servers.anvil_spec(tmp_path, 1).argv
    assert argv[argv.index("--hardfork") + 1] == compiled_for
