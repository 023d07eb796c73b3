"""The local stack's bus credentials: made by `shardline up` and `shardline org add`.

``<run dir>/keys/<org>.nk`` and ``keys/gateway.nk`` hold the nkey seeds (0600);
``data/nats/auth.json`` is the server's side (public keys and permissions, and the operator's
password); ``stack.json`` carries the operator's URL. See shardline/bus/credentials.py for who may
publish and subscribe where, and docs/security.md for the whole picture.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shardline.bus import credentials
from shardline.bus.credentials import BusTLS, ClientAuth
from shardline.config import NatsTLS, OrgNodeConfig, StackConfig


@dataclass(frozen=True)
class BusSetup:
    """What `up` made before starting nats-server."""

    password: str
    config_file: Path
    org_seeds: dict[str, Path]
    gateway_seed: Path
    tls: NatsTLS | None = None

    def url(self, host: str, port: int) -> str:
        return credentials.operator_url(host, port, self.password, tls=self.tls is not None)


def bus_tls(tls: NatsTLS | None) -> BusTLS | None:
    return None if tls is None else BusTLS(tls.cert_file, tls.key_file, tls.ca_file)


def seed_path(run_dir: Path, user: str) -> Path:
    return run_dir / "keys" / f"{user}.nk"


def new_seed(run_dir: Path, user: str) -> Path:
    return credentials.write_secret(seed_path(run_dir, user), credentials.new_user_seed())


def provision(run_dir: Path, org_ids: list[str], tls: NatsTLS | None = None) -> BusSetup:
    """Seeds for each org and the gateway, an operator password, and the server's auth file."""
    setup = BusSetup(
        password=secrets.token_urlsafe(24),
        config_file=run_dir / "data" / "nats-auth.json",
        org_seeds={o: new_seed(run_dir, o) for o in org_ids},
        gateway_seed=new_seed(run_dir, "gateway"),
        tls=tls,
    )
    users = [
        credentials.user_for_org(o, credentials.read_seed(p)) for o, p in setup.org_seeds.items()
    ]
    users.append(credentials.user_for_gateway(credentials.read_seed(setup.gateway_seed)))
    credentials.write_server_config(setup.config_file, setup.password, users, bus_tls(tls))
    return setup


def operator_password(cfg: StackConfig) -> str:
    password = urlsplit(cfg.nats_url).password
    if not password:
        raise credentials.CredentialsError(
            "the stack's nats_url has no operator password: this stack runs without bus "
            "credentials (it was made before they existed); start it anew with `shardline up`"
        )
    return password


def server_users(cfg: StackConfig) -> list[credentials.BusUser]:
    users = [
        credentials.user_for_org(o.id, credentials.read_seed(o.nats_seed_file))
        for o in cfg.orgs
        if o.nats_seed_file is not None
    ]
    if cfg.gateway.nats_seed_file is not None:
        users.append(
            credentials.user_for_gateway(credentials.read_seed(cfg.gateway.nats_seed_file))
        )
    return users


def rewrite_server_config(cfg: StackConfig, nats_pid: int | None) -> bool:
    """Write the server's auth file from the configuration and have a running server reload it;
    False (nothing written, no reload) when the file says that already."""
    path = cfg.run_dir / "data" / "nats-auth.json"
    config = credentials.server_config(
        operator_password(cfg), server_users(cfg), bus_tls(cfg.nats_tls)
    )
    try:
        if json.loads(path.read_text()) == config:
            return False
    except (OSError, ValueError):
        pass
    credentials.write_secret(path, json.dumps(config, indent=2))
    if nats_pid is not None:
        os.kill(nats_pid, signal.SIGHUP)  # nats-server reloads its configuration on SIGHUP
    return True


def org_bus(cfg: StackConfig, org: OrgNodeConfig) -> tuple[str, ClientAuth | None]:
    """The URL and credentials an org node connects with."""
    if org.nats_seed_file is None:
        return cfg.nats_url, None
    return credentials.bare(cfg.nats_url), ClientAuth(
        org.id, org.nats_seed_file, bus_tls(cfg.nats_tls)
    )


def gateway_bus(cfg: StackConfig) -> tuple[str, ClientAuth | None]:
    """The URL and credentials the gateway and the combiner connect with."""
    if cfg.gateway.nats_seed_file is None:
        return cfg.nats_url, None
    return credentials.bare(cfg.nats_url), ClientAuth(
        cfg.gateway.id, cfg.gateway.nats_seed_file, bus_tls(cfg.nats_tls)
    )


def consumer_specs(cfg: StackConfig) -> list:
    """Every durable consumer of the stack: each org's, and the combiner's."""
    from shardline.bus.consumers import gateway_consumer_specs, org_consumer_specs

    specs = [spec for org in cfg.orgs for spec in org_consumer_specs(org.id)]
    return specs + gateway_consumer_specs()


async def ensure_streams(cfg: StackConfig) -> None:
    """Create the streams and every durable consumer as the operator: org nodes and the gateway
    may not (they bind to theirs by name). Idempotent: `org add` runs it again for the new org."""
    from shardline.bus.connect import connect
    from shardline.bus.streams import ensure_consumer, set_replicas
    from shardline.bus.streams import ensure_streams as ensure

    set_replicas(cfg.stream_replicas)
    nc = await connect(cfg.nats_url, "operator", tls=bus_tls(cfg.nats_tls))
    try:
        js = nc.jetstream(timeout=5)
        await ensure(js)
        for spec in consumer_specs(cfg):
            await ensure_consumer(js, spec)
    finally:
        await nc.close()


def prepare(cfg: StackConfig) -> None:
    asyncio.run(ensure_streams(cfg))
