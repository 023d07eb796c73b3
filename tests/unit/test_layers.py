"""Imports go one way: the core imports no I/O layer, bus and contracts import no worker or face."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "shardline"

CORE_FORBIDDEN = (
    "shardline.bus",
    "shardline.contracts",
    "shardline.workers",
    "shardline.schemas",
    "shardline.runtime",
    "shardline.stack",
    "shardline.cli",
    "nats",
    "web3",
    "redis",
    "fastapi",
    "sqlalchemy",
)
IO_FORBIDDEN = (
    "shardline.workers",
    "shardline.cli",
    "shardline.stack",
    "shardline.runtime",
    "shardline.demo",
    "shardline.transports",
    "shardline.audit",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module a source imports (anywhere in it), relative imports made absolute;
    ``from a import b`` counts as importing both ``a`` and ``a.b``."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def violations(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    mod = module_name(path)
    names = imported(path.read_text(), mod, path.name == "__init__.py")
    return sorted(n for n in names for f in forbidden if n == f or n.startswith(f + "."))


def sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


CORE = sources("core")
IO = sources("bus", "contracts")


def test_there_is_something_to_check():
    assert len(CORE) >= 5
    assert any(p.parent.name == "bus" for p in IO)
    assert any(p.parent.name == "contracts" for p in IO)


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_imports_no_io_layer(path):
    assert violations(path, CORE_FORBIDDEN) == []


@pytest.mark.parametrize("path", IO, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_bus_and_contracts_import_no_worker_or_face(path):
    assert violations(path, IO_FORBIDDEN) == []


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import nats", "shardline.core.x", {"nats"}),
        ("import web3.eth as e", "shardline.core.x", {"web3.eth"}),
        ("from redis.asyncio import Redis", "shardline.core.x", {"redis.asyncio"}),
        ("from shardline import bus", "shardline.core.x", {"shardline.bus"}),
        ("from .. import schemas", "shardline.core.x", {"shardline.schemas"}),
        ("from ..workers.combiner import C", "shardline.bus.x", {"shardline.workers.combiner"}),
        ("from . import cli", "shardline", {"shardline.cli"}),
        ("def f():\n    import sqlalchemy\n", "shardline.core.x", {"sqlalchemy"}),
    ],
)
def test_the_checker_sees_forbidden_imports(source, module, expected):
    names = imported(source, module, is_package=module == "shardline")
    assert expected <= names
    assert any(n.startswith(f) for n in names for f in (*CORE_FORBIDDEN, *IO_FORBIDDEN))


def test_the_checker_passes_allowed_imports():
    names = imported(
        "import hashlib\nfrom shardline.core import shamir\nfrom . import ids\n", "shardline.core.x"
    )
    bad = [n for n in names for f in CORE_FORBIDDEN if n == f or n.startswith(f + ".")]
    assert bad == []
    assert "shardline.core.ids" in names
