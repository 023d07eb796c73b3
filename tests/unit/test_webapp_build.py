"""The web app shipped in the package is the build of its sources (`make webapp`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEBAPP = ROOT / "shardline" / "webapp"


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_the_committed_build_matches_the_sources(tmp_path):
    if shutil.which("node") is None or not (ROOT / "node_modules" / "esbuild").is_dir():
        pytest.skip("needs node and node_modules (esbuild, jsqr): run `make bootstrap`")
    subprocess.run(
        ["node", str(WEBAPP / "build.mjs"), str(tmp_path)], check=True, capture_output=True
    )
    built, committed = files(tmp_path), files(WEBAPP / "static")
    assert sorted(built) == sorted(committed), (
        "run `make webapp` and commit shardline/webapp/static"
    )
    stale = [name for name in built if built[name] != committed[name]]
    assert stale == [], f"stale build output {stale}: run `make webapp` and commit it"


def test_the_service_worker_caches_the_shell_it_names():
    sw = (WEBAPP / "static" / "sw.js").read_text()
    assert "__VERSION__" not in sw and "__SHELL__" not in sw
    for url in ("/", "/static/app.js", "/static/app.css", "/manifest.webmanifest"):
        assert f'"{url}"' in sw
    assert "/lookups" not in sw.split("const SHELL")[1].split(";")[0]
