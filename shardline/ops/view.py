"""The monitor's terminal view of a snapshot (rich)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def _up(up: bool) -> Text:
    return Text("up", style="green") if up else Text("DOWN", style="bold red")


def _error(part: Any) -> str | None:
    return part.get("error") if isinstance(part, dict) and "error" in part else None


def render(snap: dict[str, Any]) -> Group:
    parts: list[Any] = []
    at = dt.datetime.fromtimestamp(snap["at"]).strftime("%H:%M:%S")
    health = Text("healthy", style="green") if snap.get("healthy") else Text("NOT healthy", "red")
    parts.append(Text.assemble("shardline monitor  ", at, "  ", health))

    workers = snap.get("workers")
    t = Table("worker", "state", "handled", "errors", "retries", "dead letters", "avg ms")
    t.title = "workers ($SRV.STATS)"
    if _error(workers):
        t.add_row(_error(workers), "", "", "", "", "", "")
    else:
        for w in workers:
            t.add_row(
                w["name"],
                _up(w["up"]),
                *(
                    str(w.get(k, "-")) if w["up"] else "-"
                    for k in ("handled", "errors", "retries", "dead_letters", "average_ms")
                ),
            )
    parts.append(t)

    if snap.get("processes"):
        p = Table("process", "pid", "state", title="local processes")
        for r in snap["processes"]:
            p.add_row(r["name"], str(r["pid"] or "-"), _up(r["running"]))
        parts.append(p)

    s = Table("stream / consumer", "messages", "pending", "ack pending", "redelivered", "ack floor")
    s.title = "JetStream"
    if _error(snap.get("streams")):
        s.add_row(_error(snap["streams"]), "", "", "", "", "")
    else:
        for st in snap.get("streams") or []:
            s.add_row(Text(st["name"], style="bold"), str(st["messages"]), "", "", "", "")
            for c in st["consumers"]:
                s.add_row(
                    f"  {c['name']}",
                    "",
                    str(c["pending"]),
                    str(c["ack_pending"]),
                    str(c["redelivered"]),
                    str(c["ack_floor"]),
                )
    parts.append(s)

    d = snap.get("dead_letters") or {}
    dl = Table("subject", "count", "latest reason", "worker")
    dl.title = f"dead letters: {d.get('total', '?')}"
    if _error(d):
        dl.add_row(_error(d), "", "", "")
    for row in d.get("subjects", []):
        dl.add_row(row["subject"], str(row["count"]), row.get("reason", ""), row.get("worker", ""))
    parts.append(dl)

    c = snap.get("chain") or {}
    ch = Table("org", "intake", "block", "lag (blocks)")
    ch.title = f"chain head {c.get('head', '?')}"
    if _error(c):
        ch.add_row(_error(c), "", "", "")
    for row in c.get("intake", []):
        ch.add_row(row["org"], _up(row["up"]), str(row["block"]), str(row["lag_blocks"]))
    parts.append(ch)

    r = snap.get("redis") or {}
    lk = snap.get("lookups")
    parts.append(
        Text(
            f"redis memory {_error(r) or r.get('used_memory_human')}"
            f"   lookups {', '.join(f'{k} {v}' for k, v in (lk or {}).items()) or '-'}"
        )
    )
    return Group(*parts)
