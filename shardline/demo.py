"""`make demo`: the emergency lookup end to end on a fresh local stack.

Starts the stack with 4 org nodes and threshold 2, registers the sample transports, looks one up,
stops two org nodes and looks up again, stops a third and shows the clear 504, audits every
served share against the chain, and shuts everything down.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from shardline import stack
from shardline.config import StackConfig
from shardline.core.cargo import read_transports, sample_transports_path
from shardline.render import print_audit, print_outcome


def run(run_dir: Path, console: Console) -> int:
    from shardline import audit, transports
    from shardline.cli import _lookup

    t0 = time.monotonic()
    if stack.running(run_dir):
        console.print(
            f"[red]a stack is already running in {run_dir}: the demo needs a fresh one; "
            "stop it with `shardline down`[/red]"
        )
        return 1
    failures = 0
    try:
        console.print(Rule("1. start the stack: 4 org nodes, threshold 2"))
        cfg: StackConfig = stack.up(run_dir, orgs=4, threshold=2, say=console.print)

        console.print(Rule("2. companies register their transports"))
        sheets = read_transports(sample_transports_path())
        t = time.monotonic()
        report = asyncio.run(transports.register(cfg, sheets))
        left = asyncio.run(transports.wait_stored(cfg))
        console.print(
            f"{len(report.registered)} transports split 2-of-4 and committed on chain in "
            f"{time.monotonic() - t:.1f} s; shares waiting at org nodes: {sum(left.values())}"
        )
        target = sheets[0]
        console.print(
            f"the responder scans the label of {target.transport_id} ({target.un_number})"
        )

        def lookup(title: str, expect_ok: bool) -> None:
            nonlocal failures
            console.print(Rule(title))
            outcome = asyncio.run(_lookup(cfg, target.transport_id, "responder"))
            print_outcome(console, target.transport_id, outcome)
            if outcome.ok != expect_ok:
                failures += 1
                console.print(f"[bold red]unexpected: status {outcome.status}[/bold red]")

        lookup("3. lookup with all 4 org nodes online", True)
        for name in ("node-org3", "node-org4"):
            stack.stop(cfg.run_dir, name)
        console.print("stopped org nodes org3 and org4")
        lookup("4. lookup with 2 of 4 online: still enough", True)
        stack.stop(cfg.run_dir, "node-org2")
        console.print("stopped org node org2")
        lookup("5. lookup with 1 of 4 online: fewer than the threshold", False)

        console.print(Rule("6. a visitor without the RESPONDER role"))
        outcome = asyncio.run(_lookup(cfg, target.transport_id, "visitor", quiet=True))
        print_outcome(console, target.transport_id, outcome)
        failures += outcome.status != 403

        console.print(Rule("7. audit: every served share against the on-chain requests"))
        rep = asyncio.run(audit.run(cfg))
        print_audit(console, rep)
        # org2..org4 are down, so only org1's log can be read; that is expected here.
        failures += bool(rep.unmatched)
    finally:
        console.print(Rule("8. shut down"))
        stack.down(run_dir, say=console.print)
    verdict = (
        "[green]demo complete[/green]"
        if not failures
        else f"[red]demo had {failures} unexpected result(s)[/red]"
    )
    console.print(f"{verdict} in {time.monotonic() - t0:.1f} s")
    return 1 if failures else 0
