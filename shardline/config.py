"""The stack's configuration: one JSON file that every worker reads.

``shardline up`` writes it to ``.shardline/stack.json``. Past one machine the same file, with
real URLs and key files, runs org nodes on their own hosts: no code changes, only config.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from shardline.core.gas import GasPolicy

DEFAULT_RUN_DIR = Path(".shardline")
CHAIN_CONFIRMED = "chain-confirmed"
AUDIT_AFTER = "audit-after"
Policy = Literal["chain-confirmed", "audit-after"]
RecordsFreshness = Literal["pushed", "exact"]


class ConfigError(ValueError):
    pass


class Operator(BaseModel):
    """Someone who runs the consortium: may read the ops page (`/ops`) and its JSON."""

    name: str
    api_key_sha256: str


class OrgNodeConfig(BaseModel):
    id: str
    name: str
    policy: Policy = CHAIN_CONFIRMED
    key_file: Path
    database_url: str
    chain_rpc: str | None = None  # its own chain endpoint; defaults to the stack's
    metrics_port: int = 0
    # its NATS nkey seed (bus permissions for this org alone); None: connect as the stack's URL says
    nats_seed_file: Path | None = None
    # Its records proxy's grant freshness (docs/records.md): "pushed" answers from the grant book
    # once it has applied the newest head the node pushed (no chain call per request); "exact"
    # reads the chain's block number after each request arrived (one cheap call, shared by the
    # requests that came together) so that a revoke is refused in its own block.
    records_freshness: RecordsFreshness = "pushed"


class Responder(BaseModel):
    name: str
    api_key_sha256: str
    key_file: Path


class TokenIssuer(BaseModel):
    """An identity provider whose responder JWTs the gateway accepts (EdDSA, public key only)."""

    issuer: str
    audience: str
    public_key_file: Path
    # Where the local stack keeps the issuer's private key, so that `shardline responder token`
    # can stand in for the provider; unset where a real provider signs.
    private_key_file: Path | None = None


class GatewayConfig(BaseModel):
    id: str = "gateway"
    key_file: Path
    host: str = "127.0.0.1"
    port: int = 18080
    deadline_s: float = 2.0
    # Ask threshold org nodes first, spare_shares more once spare_after_s passed without a
    # sheet (0: all at once, as for chain-confirmed org nodes, whose shares wait for the chain;
    # each org node asked is a process woken for the lookup), and the others after hedge_s.
    spare_shares: int = 1
    spare_after_s: float = 0.05
    hedge_s: float = 0.25
    # Gatekeeper requests of one responder wait this long to share a transaction (0: none).
    tx_linger_s: float = 0.0
    # The same for a lookup whose org nodes are all audit-after: its request is its audit
    # record, off the responder's path, so it waits to share a transaction (and a block, which
    # every org node reads) with the lookups around it.
    audit_linger_s: float = 0.05
    # Admission: past this many lookups in flight a new one gets 503 with Retry-After at once,
    # so that those taken on keep their deadline instead of every lookup slowing past it.
    max_in_flight: int = 256
    # A finished lookup's outcome stays for GET /lookups/{guid} this long after its deadline
    # (a phone that asked with Prefer: wait has it already); memory is this times the rate.
    keep_finished_s: float = 60.0
    operators: list[Operator] = Field(default_factory=list)
    responders: list[Responder] = Field(default_factory=list)
    token_issuer: TokenIssuer | None = None
    # After a request is on chain, seconds after which it is checked again (each after the
    # last): a reorg that drops it makes the gateway send it again. Past the chain's finality
    # depth nothing can drop it.
    chain_recheck_s: list[float] = Field(default_factory=lambda: [2.0, 30.0])
    combiner_metrics_port: int = 0
    # the gateway's and combiner's NATS nkey seed; None: connect as the stack's URL says
    nats_seed_file: Path | None = None

    # Benchmarks only: a blocking pause per share in the combiner, standing in for CPU work.
    combiner_share_cost_s: float = 0.0

    def responder_named(self, name: str) -> Responder | None:
        return next((r for r in self.responders if r.name == name), None)

    def responder_for(self, api_key: str) -> Responder | None:
        return holder_of(api_key, self.responders)

    def operator_for(self, api_key: str) -> Operator | None:
        return holder_of(api_key, self.operators)


def holder_of(api_key: str, entries: list) -> Any:
    """The entry whose ``api_key_sha256`` is the key's, compared with every entry in constant
    time, so that the time taken says nothing about which entry (if any) matched."""
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    found = None
    for entry in entries:
        if hmac.compare_digest(digest, entry.api_key_sha256):
            found = entry
    return found


class NatsTLS(BaseModel):
    """TLS on the bus: the server's certificate and key, and the CA clients trust."""

    cert_file: Path
    key_file: Path
    ca_file: Path


class StackConfig(BaseModel):
    run_dir: Path = DEFAULT_RUN_DIR
    nats_url: str = "nats://127.0.0.1:14222"
    nats_port: int = 14222
    nats_monitor_port: int = 18222
    redis_url: str = "redis://127.0.0.1:16379/0"
    redis_port: int = 16379
    chain_rpc: str = "http://127.0.0.1:18545"
    anvil_port: int = 18545
    chain_id: int = 31337
    confirmations: int = 0
    poll_interval_s: float = 0.02
    threshold: int = 2
    admin_key_file: Path
    deployment: dict | None = None
    orgs: list[OrgNodeConfig] = Field(default_factory=list)
    # The `{org}` template `shardline up --database-url` was given (each org's database_url is
    # it with the org's id): `shardline org add` gives a new org its database the same way.
    # None: each org's is a SQLite file under run_dir/data.
    database_url_template: str | None = None
    gateway: GatewayConfig
    contacts_api_port: int = 18090
    # Metrics and trace headers; off only to measure their cost (bench/ops_overhead.py).
    telemetry: bool = True
    nats_tls: NatsTLS | None = None
    # Any JSON-RPC chain: fees offered per transaction (see shardline/core/gas.py).
    gas: GasPolicy = Field(default_factory=GasPolicy)
    # JetStream replicas of every stream: 1 on one server, 3 on a three-node cluster.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # Ports of further gateway processes (gateway-2, gateway-3, ...): the same gateway (key,
    # responders, Redis, bus, chain) on a port each; a responder's client asks the next one
    # when one is down (shardline/gateways.py, docs/reliability.md).
    gateway_replicas: list[int] = Field(default_factory=list)
    # Every gateway's base URL as responders reach it, first gateway first: the failover list a
    # phone is given at sign-in, and the page origins whose requests the gateways accept (CORS).
    # Empty: http://<gateway.host>:<port> of the gateway and each replica. Set it when the
    # gateways are reached through other names (a proxy, public hosts).
    gateway_urls: list[str] = Field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.run_dir / "stack.json"

    def org(self, org_id: str) -> OrgNodeConfig:
        for o in self.orgs:
            if o.id == org_id:
                return o
        raise ConfigError(
            f"no org {org_id!r} in this stack; orgs: {', '.join(o.id for o in self.orgs)}"
        )

    def org_rpc(self, org: OrgNodeConfig) -> str:
        return org.chain_rpc or self.chain_rpc

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        os.chmod(tmp, 0o600)  # it holds the operator's bus password
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path | None = None) -> StackConfig:
        given = ""  # what named the path, for the error: --config, $SHARDLINE_CONFIG or nothing
        if path:
            given = "--config"
        elif os.environ.get("SHARDLINE_CONFIG"):
            given, path = "$SHARDLINE_CONFIG", Path(os.environ["SHARDLINE_CONFIG"])
        path = Path(path or DEFAULT_RUN_DIR / "stack.json")
        if path.is_dir():  # a stack's run directory: its stack.json
            path = path / "stack.json"
        if not path.exists():
            raise ConfigError(
                f"no stack configuration at {path} (given by {given}): check the path, or "
                f"start a stack there with `shardline up` (--run-dir {path.parent})"
                if given
                else f"no stack configuration at {path}: start the stack with `shardline up`, "
                "or give --config (or $SHARDLINE_CONFIG) for a stack elsewhere"
            )
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except ValueError as exc:
            raise ConfigError(f"stack configuration {path} is invalid: {exc}") from exc
