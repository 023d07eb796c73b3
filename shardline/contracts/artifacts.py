"""Compiled contract artifacts (ABI and bytecode) shipped next to this module.

The artifacts are produced by ``compile.mjs`` (``make compile``) from ``sol/*.sol`` and are
committed, so running shardline needs no Solidity compiler.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
SOURCES_DIR = Path(__file__).resolve().parent / "sol"

CONTRACT_NAMES = ("Governor", "OrgRegistry", "TransportRegistry", "Gatekeeper")


class ArtifactError(RuntimeError):
    """A contract artifact is missing or malformed."""


@dataclass(frozen=True)
class Artifact:
    """What is needed to deploy and talk to one contract."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler: str
    source_sha256: str


@cache
def load_artifact(name: str) -> Artifact:
    """Load ``artifacts/<name>.json``; raises ArtifactError saying how to rebuild it."""
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        known = ", ".join(sorted(p.stem for p in ARTIFACTS_DIR.glob("*.json"))) or "none"
        raise ArtifactError(
            f"no compiled artifact for contract {name!r} at {path} (available: {known}); "
            "run `make compile` to build the artifacts from shardline/contracts/sol"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"artifact {path} is not valid JSON ({exc}); run `make compile` to rebuild it"
        ) from exc
    try:
        return Artifact(
            name=raw["contractName"],
            abi=raw["abi"],
            bytecode=raw["bytecode"],
            deployed_bytecode=raw["deployedBytecode"],
            compiler=raw["compiler"],
            source_sha256=raw["sourceSha256"],
        )
    except KeyError as exc:
        raise ArtifactError(
            f"artifact {path} lacks the field {exc.args[0]!r}; run `make compile` to rebuild it"
        ) from exc


@cache
def event_topic(contract: str, event: str) -> str:
    """topic0 (``0x`` + keccak of the canonical signature) of ``event`` in ``contract``'s ABI."""
    from eth_utils import keccak

    for entry in load_artifact(contract).abi:
        if entry.get("type") == "event" and entry.get("name") == event:
            types = ",".join(i["type"] for i in entry.get("inputs", []))
            return "0x" + keccak(text=f"{event}({types})").hex()
    raise ArtifactError(f"contract {contract} has no event {event}; run `make compile`?")
