"""More than one gateway process: the same gateway on further ports, for failover.

A gateway holds the lookups in flight in its memory (the responder's open request, the
ephemeral key): a ``kill -9`` loses them, and every lookup asked of it until it is back. So the
stack can run further gateway processes, ``gateway-2``, ``gateway-3``, ... (``shardline up
--gateways 2``, or ``shardline gateway add`` on a running stack): each is the same gateway (its
signing key, responders, Redis, bus account and chain) on a port of its own, started from a copy
of the stack's configuration that differs in the port alone. They share nothing in memory and
need nothing from each other: org nodes answer each gateway on its own inbox.

A responder's client holds the list of base URLs (``urls``) and, when the gateway it asks is
down (a refused or dropped connection, a 502 or 503 from what stands in front of it), asks the
next one at once (``lookup_client.Gateways``). That is a new lookup there, authorised and
audited on its own, never a copy of the old one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from shardline.config import StackConfig

PREFIX = "gateway-"


def names(cfg: StackConfig) -> list[str]:
    """The replicas' worker names: gateway-2, gateway-3, ... (the first is ``gateway``)."""
    return [f"{PREFIX}{i}" for i in range(2, 2 + len(cfg.gateway_replicas))]


def is_replica(name: str) -> bool:
    return name.startswith(PREFIX) and name.removeprefix(PREFIX).isdigit()


def port(cfg: StackConfig, name: str) -> int:
    """The HTTP port of ``gateway`` or of a replica."""
    if name == "gateway":
        return cfg.gateway.port
    if not is_replica(name):
        raise ValueError(f"{name!r} is not a gateway: gateway or {PREFIX}N")
    index = int(name.removeprefix(PREFIX)) - 2
    if not 0 <= index < len(cfg.gateway_replicas):
        known = ", ".join(["gateway", *names(cfg)])
        raise ValueError(f"this stack has no {name}; its gateways: {known}")
    return cfg.gateway_replicas[index]


def urls(cfg: StackConfig) -> list[str]:
    """Every gateway's base URL, the first gateway first: what a responder's client is given
    (``gateway_urls`` when set, else the local ports)."""
    if cfg.gateway_urls:
        return list(cfg.gateway_urls)
    return [_local_url(cfg, p) for p in (cfg.gateway.port, *cfg.gateway_replicas)]


def _local_url(cfg: StackConfig, port: int) -> str:
    return f"http://{cfg.gateway.host}:{port}"


def config_path(cfg: StackConfig, name: str) -> Path:
    return cfg.run_dir / f"stack-{name}.json"


def write_config(cfg: StackConfig, name: str) -> Path:
    """The replica's configuration: the stack's, with the replica's port and the list of every
    gateway's URL written out, which its own port no longer tells (0600: it names key files and
    holds the responders' API key hashes, as stack.json does)."""
    copy = cfg.model_copy(deep=True)
    copy.gateway_urls = urls(cfg)
    copy.gateway.port = port(cfg, name)
    path = config_path(cfg, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(copy.model_dump_json(indent=2))
    return path


def argv(cfg: StackConfig, name: str) -> list[str]:
    """The command line that starts a replica (its configuration written afresh)."""
    path = write_config(cfg, name)
    return [sys.executable, "-m", "shardline", "worker", "gateway", "--config", str(path.resolve())]


def add(cfg: StackConfig, count: int = 1, ports: list[int] | None = None) -> list[str]:
    """Start ``count`` more gateways on a running stack (free ports unless given), record them
    in its stack.json, and wait until each answers; returns their names."""
    from shardline import servers, stack

    if count < 1:
        raise ValueError(f"add at least one gateway, not {count}")
    if ports is not None and len(ports) != count:
        raise ValueError(f"{count} gateways need {count} ports, not {len(ports)}")
    new_ports = ports or [servers.free_port() for _ in range(count)]
    before = set(names(cfg))
    cfg.gateway_replicas.extend(new_ports)
    if cfg.gateway_urls:  # written out: the new ones go on the list too
        cfg.gateway_urls.extend(_local_url(cfg, p) for p in new_ports)
    cfg.save()
    added = [n for n in names(cfg) if n not in before]
    stack.start_workers(cfg, added)
    return added
