"""The contracts on a chain reached by configuration alone: anvil mining a block a second stands
in for a consortium chain; the admin signs from an encrypted Ethereum keystore."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from eth_account import Account

from shardline import servers
from shardline.contracts import registry
from shardline.contracts.client import Chain
from shardline.contracts.deploy import Deployment
from shardline.core.directory import ORG
from shardline.core.keys import ParticipantKeys
from shardline.stack import ANVIL_ADMIN_KEY

pytestmark = pytest.mark.integration
PASSWORD = "consortium admin passphrase"


@pytest.fixture(scope="module")
def block_chain(tmp_path_factory):
    d = tmp_path_factory.mktemp("anvil-block-time")
    port = servers.free_port()
    proc = servers.spawn(servers.anvil_spec(d / "data", port, block_time=1), d / "anvil.log")
    yield f"http://127.0.0.1:{port}"
    servers.stop_pid(proc.pid)


def _shardline(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shardline", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "SHARDLINE_KEY_PASSWORD": PASSWORD, "COLUMNS": "200", **(env or {})},
    )


def _stack_file(tmp_path, rpc: str, chain_id: int = 31337):
    admin = tmp_path / "admin.keystore.json"
    ks = Account.encrypt(ANVIL_ADMIN_KEY, PASSWORD, kdf="scrypt", iterations=1 << 14)
    admin.write_text(json.dumps(ks))
    path = tmp_path / "stack.json"
    path.write_text(
        json.dumps(
            {
                "run_dir": str(tmp_path),
                "chain_rpc": rpc,
                "chain_id": chain_id,
                "confirmations": 1,
                "gas": {"priority_fee_gwei": 2, "max_fee_gwei": 500},
                "admin_key_file": str(admin),
                "gateway": {"key_file": str(tmp_path / "gateway.json")},
            }
        )
    )
    return path


def test_deploy_register_and_grant_from_the_stack_file_alone(block_chain, tmp_path):
    path = _stack_file(tmp_path, block_chain)
    done = _shardline("chain", "deploy", "--config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    dep = Deployment.from_dict(json.loads(path.read_text())["deployment"])
    assert dep.chain_id == 31337

    again = _shardline("chain", "deploy", "--config", str(path))
    assert again.returncode == 2 and "already names a deployment" in again.stderr

    org = ParticipantKeys.generate("org9")
    org.save_encrypted(tmp_path / "org9.json", PASSWORD, kdf="pbkdf2", iterations=1000)
    pub = tmp_path / "org9.pub.json"
    done = _shardline("keys", "public", str(tmp_path / "org9.json"), "--out", str(pub))
    assert done.returncode == 0, done.stderr
    assert org.chain_key.hex() not in pub.read_text()
    done = _shardline("chain", "register", str(pub), "--kind", "org", "--config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    responder = Account.create().address
    done = _shardline("chain", "grant-responder", responder, "--config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr

    async def check():
        chain = await Chain.connect(block_chain, expected_chain_id=31337)
        try:
            found = {p.id: p for p in await registry.list_participants(chain, dep)}
            role = await registry.has_role(chain, dep, "RESPONDER", responder)
            return found, role
        finally:
            await chain.close()

    found, role = asyncio.run(check())
    assert found["org9"].kind == ORG
    assert found["org9"].signing_pk == org.signing_public
    assert found["org9"].account == Account.from_key(org.chain_key).address
    assert role


def test_a_stack_file_for_another_chain_or_a_wrong_password_is_refused(block_chain, tmp_path):
    path = _stack_file(tmp_path, block_chain, chain_id=11155111)
    done = _shardline("chain", "deploy", "--config", str(path))
    assert done.returncode == 1 and "not the expected 11155111" in done.stderr, done.stderr
    path = _stack_file(tmp_path, block_chain)
    done = _shardline("chain", "deploy", "--config", str(path), env={"SHARDLINE_KEY_PASSWORD": "x"})
    assert done.returncode == 1 and "wrong password" in done.stderr, done.stderr
