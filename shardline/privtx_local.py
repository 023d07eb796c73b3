"""Private contracts on one machine: stakeholder keys, their executors (one anvil each), groups.

Used by ``shardline privtx``, the local stack, the integration tests and ``bench/privtx.py``. A
stakeholder's key file holds its chain account, its X25519 sealing key and its BLS key (0600);
its executor is an anvil of its own, never the public chain.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from nacl import bindings as sodium

from shardline import servers
from shardline.bus.credentials import BusTLS, ClientAuth
from shardline.contracts import mediator as med
from shardline.contracts.client import Chain
from shardline.core import privtx as pt
from shardline.core.bls import BlsKey
from shardline.workers.privtx_facilitator import Facilitator, FacilitatorConfig

FUNDS = hex(10**22)


@dataclass(frozen=True)
class Stakeholder:
    name: str
    account_key: str
    sealing_sk: bytes
    bls_sk: bytes

    @classmethod
    def generate(cls, name: str) -> Stakeholder:
        return cls(
            name,
            "0x" + secrets.token_bytes(32).hex(),
            secrets.token_bytes(32),
            BlsKey.generate().to_bytes(),
        )

    @property
    def address(self) -> str:
        return Account.from_key(self.account_key).address

    @property
    def sealing_pk(self) -> bytes:
        return sodium.crypto_scalarmult_base(self.sealing_sk)

    @property
    def bls(self) -> BlsKey:
        return BlsKey.from_bytes(self.bls_sk)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "name": self.name,
            "account_key": self.account_key,
            "sealing_sk": self.sealing_sk.hex(),
            "bls_sk": self.bls_sk.hex(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)

    @classmethod
    def load(cls, path: Path) -> Stakeholder:
        try:
            raw = json.loads(path.read_text())
            return cls(
                raw["name"],
                raw["account_key"],
                bytes.fromhex(raw["sealing_sk"]),
                bytes.fromhex(raw["bls_sk"]),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise pt.PrivTxError(
                f"cannot read the stakeholder key file {path} ({exc}); make one with "
                "`shardline privtx keygen NAME`"
            ) from exc


def start_executor(data_dir: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A stakeholder's private EVM: its own anvil (automine), on a free port."""
    port = port or servers.free_port()
    spec = servers.anvil_spec(data_dir, port, chain_id=1337)
    proc = servers.spawn(spec, data_dir / "anvil.log")
    return proc, f"http://127.0.0.1:{port}"


async def ensure_payload_store(nats_url: str, tls: BusTLS | None = None) -> None:
    """Create the "privtx" object store as the bus operator: org users may only read it."""
    from shardline.bus.connect import connect
    from shardline.bus.payloads import PayloadStore

    nc = await connect(nats_url, "operator", tls=tls)
    try:
        await PayloadStore.open(nc.jetstream(timeout=5))
    finally:
        await nc.close()


async def fund(chain: Chain, *addresses: str) -> None:
    for a in addresses:
        await chain.rpc.call("anvil_setBalance", [a, FUNDS])


async def create_group(
    chain: Chain,
    creator,
    mediator: str,
    sender: str,
    members: list[Stakeholder],
    *,
    threshold: int | None = None,
    timeout_s: int = 30,
    bls: bool = True,
    group: bytes | None = None,
) -> bytes:
    """Create a group on the mediator; unanimous unless ``threshold`` says k-of-n."""
    threshold = threshold or len(members)
    pt.check_policy(len(members), threshold)
    group = group or secrets.token_bytes(32)
    await med.create_group(
        chain,
        creator,
        mediator,
        group,
        sender,
        [m.address for m in members],
        [m.sealing_pk for m in members],
        threshold,
        timeout_s,
        pt.EMPTY_ROOT,
        [m.bls.public for m in members] if bls else None,
        [m.bls.proof_of_possession() for m in members] if bls else None,
    )
    return group


def facilitator(
    s: Stakeholder,
    *,
    executor_url: str,
    chain_rpc: str,
    mediator: str,
    start_block: int,
    nats_url: str,
    db_path: Path,
    bls_votes: bool = False,
    bus_auth: ClientAuth | None = None,
) -> Facilitator:
    return Facilitator(
        FacilitatorConfig(
            name=s.name,
            account_key=s.account_key,
            sealing_sk=s.sealing_sk,
            executor_url=executor_url,
            chain_rpc=chain_rpc,
            chain_ws=chain_rpc.replace("http://", "ws://"),
            mediator=mediator,
            start_block=start_block,
            nats_url=nats_url,
            database_url=f"sqlite:///{db_path}",
            bls_sk=s.bls_sk if bls_votes else None,
            bus_auth=bus_auth,
        )
    )


def facilitator_from_file(path: Path) -> tuple[Facilitator, dict]:
    """A facilitator from a JSON file (the stakeholder's keys plus where everything is)."""
    raw = json.loads(path.read_text())
    s = Stakeholder(
        raw["name"],
        raw["account_key"],
        bytes.fromhex(raw["sealing_sk"]),
        bytes.fromhex(raw["bls_sk"]),
    )
    f = facilitator(
        s,
        executor_url=raw["executor_url"],
        chain_rpc=raw["chain_rpc"],
        mediator=raw["mediator"],
        start_block=int(raw["start_block"]),
        nats_url=raw["nats_url"],
        db_path=Path(raw["db_path"]),
        bls_votes=bool(raw.get("bls", False)),
        bus_auth=ClientAuth(raw["name"], Path(raw["nats_seed_file"]))
        if raw.get("nats_seed_file")
        else None,
    )
    return f, raw


async def _serve(path: Path) -> None:
    import asyncio
    import signal

    from shardline.bus import log

    log.setup("INFO")
    f, _ = facilitator_from_file(path)
    await f.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await f.stop()


if __name__ == "__main__":  # python -m shardline.privtx_local FACILITATOR.json
    import sys

    import uvloop

    uvloop.run(_serve(Path(sys.argv[1])))
