"""Metrics that are not a worker's own counters, where every worker's metrics are served, and a
small scraper so that the monitor reads them as Prometheus would.

Metric names follow Prometheus conventions and carry no per-id labels (no guid, no transport):
``shardline_messages_processed_total{worker,status}``,
``shardline_message_processing_duration_seconds{worker}``, ``shardline_dead_letters_total{worker}``
(``shardline/bus/worker.py``), ``shardline_lookups_total{outcome}`` and
``shardline_lookup_duration_seconds`` (the gateway), and here the chain intake's position.
"""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families

from shardline.config import StackConfig

INTAKE_BLOCK = Gauge(
    "shardline_chain_intake_block", "The last block the org's chain intake has read to"
)
INTAKE_HEAD = Gauge("shardline_chain_head_block", "The chain head the org's chain intake has seen")
INTAKE_LAG = Gauge(
    "shardline_chain_intake_lag_blocks", "Blocks between the chain head and the intake's cursor"
)


def watch_intake(intake: Any) -> None:
    """Export an org node's chain intake position (read when scraped: no cost per block)."""
    reader = intake.reader

    def block() -> float:
        return reader.cursor.next_number - 1

    INTAKE_BLOCK.set_function(block)
    INTAKE_HEAD.set_function(lambda: reader.head_seen)
    INTAKE_LAG.set_function(lambda: max(0, reader.head_seen - block()) if reader.head_seen else 0)


def endpoints(cfg: StackConfig) -> dict[str, str]:
    """Worker process name (as `shardline status` calls it) -> its metrics URL."""
    host = cfg.gateway.host
    found = {f"node-{o.id}": f"http://{host}:{o.metrics_port}/" for o in cfg.orgs if o.metrics_port}
    if cfg.gateway.combiner_metrics_port:
        found["combiner"] = f"http://{host}:{cfg.gateway.combiner_metrics_port}/"
    found["gateway"] = f"http://{host}:{cfg.gateway.port}/metrics/"
    return found


def parse(text: str) -> dict[str, float]:
    """Prometheus text -> ``{'name{label="v",...}': value}`` for every sample."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def scrape(url: str, timeout: float = 1.0) -> dict[str, float]:
    """Read one metrics endpoint (a loopback or consortium-internal address)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (configured URL)
        return parse(resp.read().decode())
