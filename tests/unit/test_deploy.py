"""The Procfile runs the same workers `shardline up` starts."""

from __future__ import annotations

from pathlib import Path

from shardline.config import GatewayConfig, OrgNodeConfig, StackConfig
from shardline.stack import worker_names, worker_spec

PROCFILE = Path(__file__).resolve().parents[2] / "deploy" / "Procfile"


def test_procfile_names_every_worker_of_a_four_org_stack():
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.split()
    cfg = StackConfig(
        admin_key_file=Path("admin.key"),
        orgs=[
            OrgNodeConfig(
                id=f"org{i}", name=f"Org {i}", key_file=Path("k"), database_url="sqlite://"
            )
            for i in range(1, 5)
        ],
        gateway=GatewayConfig(key_file=Path("g")),
    )
    assert sorted(entries) == sorted(worker_names(cfg))
    for name, argv in entries.items():
        expected = worker_spec(cfg, name)
        # the launcher runs `python -m shardline worker ...`; the Procfile the console script
        assert argv[0] == "shardline"
        assert (
            argv[1:]
            == expected[3 : expected.index("--config")] + expected[expected.index("--config") + 2 :]
        )
