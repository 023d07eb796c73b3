"""A minimal org-node configuration on the real NATS and Redis fixtures, and a real Celery
worker process for the contacts jobs (no eager mode)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from shardline import servers
from shardline.config import GatewayConfig, OrgNodeConfig, StackConfig
from shardline.core.keys import ParticipantKeys


def contacts_config(run_dir: Path, nats_url: str, redis_url: str, orgs=("org1",)) -> StackConfig:
    keys = run_dir / "keys"
    for o in orgs:
        ParticipantKeys.generate(o).save(keys / f"{o}.json")
    ParticipantKeys.generate("gateway").save(keys / "gateway.json")
    cfg = StackConfig(
        run_dir=run_dir,
        nats_url=nats_url,
        redis_url=redis_url,
        admin_key_file=keys / "admin.key",
        orgs=[
            OrgNodeConfig(
                id=o,
                name=o,
                key_file=keys / f"{o}.json",
                database_url=f"sqlite:///{run_dir / f'{o}.db'}",
            )
            for o in orgs
        ],
        gateway=GatewayConfig(key_file=keys / "gateway.json"),
    )
    cfg.save()
    return cfg


class CeleryWorker:
    """``shardline worker contacts-jobs`` as its own process, stopped by pid."""

    def __init__(self, cfg: StackConfig, env: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.log = cfg.run_dir / f"celery-{time.monotonic_ns()}.log"
        import os

        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "shardline",
                    "worker",
                    "contacts-jobs",
                    "--config",
                    str(cfg.path),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        deadline = time.monotonic() + 60
        while "ready." not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        import signal

        servers.stop_pid(self.proc.pid, timeout=0.1, sig=signal.SIGKILL)

    def stop(self) -> None:
        servers.stop_pid(self.proc.pid, timeout=10)
