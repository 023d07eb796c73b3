"""The plots of docs/capacity.md, drawn from the JSON the scale-out benchmarks wrote.

.venv/bin/python bench/plots.py          # bench/results/*.json -> docs/img/capacity-*.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
KEPT = ROOT / "docs" / "bench-scale"
OUT = ROOT / "docs" / "img"


def load(name: str) -> dict | None:
    for folder in (RESULTS, KEPT):
        path = folder / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
    return None


def footnote(fig, data: dict) -> None:
    m = data.get("machine", {})
    fig.text(
        0.01,
        0.01,
        f"measured {m.get('at', '?')} on {m.get('cpus', '?')} CPUs shared with other work "
        f"(load {m.get('load_avg_1m', '?')})",
        fontsize=7,
        color="gray",
    )


def capacity(data: dict) -> list[Path]:
    paths = []
    orgs = sorted(data["orgs"], key=int)
    # requests: throughput and p50 against concurrent clients, one line per org count
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for n in orgs:
        runs = data["orgs"][n]
        xs = [r["load"]["clients"] for r in runs]
        a1.plot(xs, [r["load"]["per_s"] for r in runs], marker="o", label=f"{n} orgs")
        a2.plot(xs, [r["load"]["p50_ms"] or 0 for r in runs], marker="o", label=f"{n} orgs")
    a1.set(xlabel="concurrent clients", ylabel="lookups/s", title="throughput")
    a2.set(xlabel="concurrent clients", ylabel="ms", title="lookup p50")
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.grid(alpha=0.3)
        a.legend()
    footnote(fig, data)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    paths.append(_save(fig, "capacity-requests.png"))

    # per-step cost: CPU ms per lookup by component, at the highest load, per org count
    fig, ax = plt.subplots(figsize=(8, 4))
    comps = sorted({c for n in orgs for c in data["orgs"][n][-1]["cpu_ms_per_lookup"]})
    bottom = [0.0] * len(orgs)
    for c in comps:
        vals = [data["orgs"][n][-1]["cpu_ms_per_lookup"].get(c, 0.0) for n in orgs]
        ax.bar([f"{n} orgs" for n in orgs], vals, bottom=bottom, label=c)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set(ylabel="CPU ms per lookup (all processes)", title="where a lookup's CPU goes")
    ax.legend(fontsize=8, ncols=2)
    footnote(fig, data)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    paths.append(_save(fig, "capacity-cpu-per-lookup.png"))

    rec = data.get("records") or {}
    sizes = [k for k in rec if k.isdigit()]
    if sizes:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.bar(sizes, [rec[k]["p50_ms"] or 0 for k in sizes], label="p50")
        ax.bar(
            sizes,
            [(rec[k]["p95_ms"] or 0) - (rec[k]["p50_ms"] or 0) for k in sizes],
            bottom=[rec[k]["p50_ms"] or 0 for k in sizes],
            label="p95",
            alpha=0.5,
        )
        ax.set(xlabel="transports registered", ylabel="ms", title="lookup latency vs records")
        ax.legend()
        footnote(fig, data)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        paths.append(_save(fig, "capacity-records.png"))
    return paths


def combiners(data: dict) -> Path:
    """One worker against two: gateways (lookups/s) and durable combiners (shares/s), each bar
    labelled with the cores the stack's processes used in that run."""
    panels = [
        (k, label, unit, key)
        for k, label, unit, key in (
            ("gateways", "gateway", "lookups/s", "cpu_ms_per_lookup"),
            ("fallback", "combiner", "shares/s", "cpu_ms_per_share"),
        )
        if k in data
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (k, label, unit, _key) in zip(axes[0], panels, strict=True):
        d = data[k]
        runs = [d["one"], d["two"]]
        vals = [r["load"]["per_s"] if "load" in r else r["shares_per_s"] for r in runs]
        bars = ax.bar([f"1 {label}", f"2 {label}s"], vals, color=["#888", "#2a7"])
        for bar, r in zip(bars, runs, strict=True):
            ax.annotate(
                f"{sum(r['cores'].values()):.2f} cores",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set(
            ylabel=unit,
            title=f"{label}s: x{d['ratio']:.2f} (at most x{d['best_ratio']:.2f} on idle cores)",
        )
        ax.title.set_fontsize(9)
    footnote(fig, data)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, "capacity-combiners.png")


def block_time(data: dict) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    pols = [p for p in ("chain-confirmed", "audit-after") if p in data]
    for i, p in enumerate(pols):
        r = data[p]
        ax.bar(i - 0.2, r["p50_ms"] or 0, 0.4, color="#27a", label="p50" if i == 0 else None)
        ax.bar(i + 0.2, r["p95_ms"] or 0, 0.4, color="#a72", label="p95" if i == 0 else None)
    ax.axhline(data["block_ms"], ls="--", color="k", lw=1, label="block time")
    ax.set_xticks(range(len(pols)), pols)
    ax.set(ylabel="ms", title="lookup latency, anvil mining every block time")
    ax.legend(fontsize=8)
    footnote(fig, data)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, "capacity-block-time.png")


def _save(fig, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    made = []
    if d := load("capacity"):
        made += capacity(d)
    if d := load("combiners"):
        made.append(combiners(d))
    if d := load("block_time"):
        made.append(block_time(d))
    if not made:
        print(f"no results in {RESULTS}: run the scale-out benchmarks first (make bench-scale)")
        return 1
    for p in made:
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
