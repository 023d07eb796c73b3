"""Who may say what on the bus: per-org NATS nkey users, their subject permissions, and TLS.

Every org node connects as its own nkey user (the server holds only the public key, the org keeps
its seed) and may publish only on its own subjects and subscribe only to what its workers read.
The gateway (the phone gateway and the combiner) has a user of its own. The operator who runs the
consortium's NATS (``shardline up`` locally) keeps a password user with full rights: it creates
the streams and runs the command-line tools. Its password sits in the stack configuration's
``nats_url``, so that file belongs to the operator alone; an org node on its own host gets a
configuration without it.

JetStream needs care: a pull consumer delivers to the puller's inbox whatever the consumer's
filter selects, whatever the puller may subscribe to. So an org may only look up and pull from
consumers named for itself (``shares-org1``, ``lookups-org1``...), ack its own deliveries, and
read stream info; creating, changing or deleting streams and consumers is the operator's, who
creates every consumer with its filter (shardline/bus/consumers.py). Replies travel on
a per-user inbox prefix (``_INBOX_org1.>``), so no user can listen to another's replies.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

OPERATOR_USER = "operator"
SERVER_NAME = "shardline-local"  # as servers.nats_spec starts it


class CredentialsError(ValueError):
    pass


# ---- nkeys ----------------------------------------------------------------------------------
def new_user_seed() -> str:
    """A fresh NATS user seed (``SU...``): 32 random bytes, nkeys-encoded."""
    return nkeys.encode_seed(secrets.token_bytes(32), prefix=nkeys.PREFIX_BYTE_USER).decode()


def public_key(seed: str) -> str:
    """The user's public nkey (``U...``), the only thing the server needs."""
    return nkeys.from_seed(seed.encode()).public_key.decode()


def write_secret(path: Path, text: str) -> Path:
    """Write a secret file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    return path


def read_seed(path: Path) -> str:
    try:
        seed = path.read_text().strip()
    except OSError as exc:
        raise CredentialsError(
            f"cannot read the bus credentials {path} ({exc}): `shardline up` or "
            "`shardline org add` writes them"
        ) from None
    if not seed.startswith("SU"):
        raise CredentialsError(f"{path} does not hold a NATS user seed (SU...)")
    return seed


# ---- permissions ----------------------------------------------------------------------------
def inbox_prefix(user: str) -> str:
    return f"_INBOX_{user}"


def _consumer_api(stream: str, durable: str) -> list[str]:
    """Bind to an existing durable consumer, pull from it and ack: never create or change it
    (no ``CONSUMER.CREATE`` / ``DURABLE.CREATE``: a create names the filter, so whoever may
    create a consumer may point it at any subject of the stream). The operator creates them all
    (shardline/bus/consumers.py)."""
    return [
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


# Replies to requests this user received. One process runs several workers, each answering the
# service API (``$SRV.PING/INFO/STATS``) on the same connection: one request, several replies.
RESPONSES = {"max": 32}

# Distribution lists: an org sends invitations, acceptances, rosters and bids to its peers
# (signed by it; each receiver checks the sender against the list's members).
LIST_MESSAGES = ("invite", "accept", "roster", "bids")

# What the ops page (served by the gateway) reads: every worker's service API, stream and consumer
# state, and the dead letters (envelopes whose secret bodies are sealed to their readers). Reads
# only: no stream or consumer is changed, no dead letter replayed (that is the operator's CLI).
MONITOR_READ = [
    "$SRV.PING",
    "$SRV.INFO",
    "$SRV.STATS",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.NAMES",
    "$JS.API.CONSUMER.LIST.*",
    "$JS.API.CONSUMER.NAMES.*",
    "$JS.API.CONSUMER.INFO.*.*",
    "$JS.API.STREAM.MSG.GET.DLQ",
    "$JS.API.DIRECT.GET.DLQ",
    "$JS.API.DIRECT.GET.DLQ.>",
]

# Private contracts: an org's facilitator hears the sealed payloads pushed to its groups and the
# BLS vote shares, says its own shares, and reads sealed payloads from the "privtx" object store
# by direct gets (its entry, then its chunks: ciphertext only). It creates no consumer, not even
# an ordered one, like every other bus user. The object store's stream is the operator's to
# create (`shardline privtx up`), with direct gets allowed.
PRIVTX_PUBLISH = [
    "privtx.vote.*",
    "$JS.API.STREAM.MSG.GET.OBJ_privtx",
    "$JS.API.DIRECT.GET.OBJ_privtx",
    "$JS.API.DIRECT.GET.OBJ_privtx.>",
]
PRIVTX_SUBSCRIBE = ["privtx.payload.*", "privtx.vote.*"]

# The JetStream calls every worker makes: account and stream info (never stream changes).
_JS_READ = ["$JS.API.INFO", "$JS.API.STREAM.INFO.*"]


def org_consumers(org: str) -> list[tuple[str, str]]:
    """(stream, durable) of every consumer an org node's workers pull from."""
    from shardline.bus.consumers import org_consumer_specs

    return [(spec.stream, spec.durable) for spec in org_consumer_specs(org)]


def gateway_consumers() -> list[tuple[str, str]]:
    from shardline.bus.consumers import gateway_consumer_specs

    return [(spec.stream, spec.durable) for spec in gateway_consumer_specs()]


def org_permissions(org: str) -> dict[str, Any]:
    """What one org node may do: from shardline/bus/subjects.py and what each worker does.

    publish: its chain intake's ``lookup.requested.<org>``; its share node's ``lookup.share.*``
    (the guid is the request's; the envelope is signed by the org and its body sealed to the
    requester); PSI rounds to a peer; dead letters; and the JetStream calls above. Replies to
    requests it received (lookup intents, records access, PSI start, audit, ``$SRV``) go through
    ``allow_responses``.
    subscribe: its own inbox, the gateways' lookup intents to it and notices of lookups left to
    others, its own request subjects, the service API.
    """
    publish = [
        f"lookup.requested.{org}",
        "lookup.share.*",
        "psi.round.*.*",
        # its list worker asks its own PSI worker to match a list's pair
        f"psi.start.{org}",
        *(f"lists.{kind}.*" for kind in LIST_MESSAGES),
        # its MPC server's range-check values, and reading the parts producers left sealed to
        # it in the analytics object store
        f"analytics.check.{org}",
        "$JS.API.DIRECT.GET.OBJ_analytics",
        "$JS.API.DIRECT.GET.OBJ_analytics.>",
        "dlq.>",
        *_JS_READ,
        *PRIVTX_PUBLISH,
    ]
    for stream, durable in org_consumers(org):
        publish += _consumer_api(stream, durable)
    subscribe = [
        f"{inbox_prefix(org)}.>",
        f"lookup.intent.{org}.*",
        f"lookup.left.{org}",
        f"records.access.{org}",
        f"records.state.{org}",
        f"audit.served.{org}",
        f"psi.start.{org}",
        f"shardline.status.*.{org}",
        "$SRV.>",
        *PRIVTX_SUBSCRIBE,
    ]
    return {
        "publish": {"allow": publish},
        "subscribe": {"allow": subscribe},
        "allow_responses": RESPONSES,
    }


def gateway_permissions(user: str = "gateway") -> dict[str, Any]:
    """The phone gateway and its combiner: intents, and notices of lookups left to others, out;
    shares in (replies to its intents, the stream's copies for the gateway to combine at once,
    and the combiner's durable consumer); results."""
    publish = [
        "lookup.intent.*.*",
        "lookup.left.*",
        "lookup.progress.*",
        "lookup.result.*",
        "dlq.>",
        *_JS_READ,
        *(api for c in gateway_consumers() for api in _consumer_api(*c)),
        *MONITOR_READ,
    ]
    subscribe = [
        f"{inbox_prefix(user)}.>",
        f"lookup.reply.{user}.>",  # the org nodes' replies to its intents
        "lookup.share.*",
        "lookup.progress.*",
        "lookup.result.*",
        "shardline.status.combiner.*",
        "$SRV.>",
    ]
    return {
        "publish": {"allow": publish},
        "subscribe": {"allow": subscribe},
        "allow_responses": RESPONSES,
    }


# ---- TLS ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BusTLS:
    """TLS on the bus: the server's certificate and key, and the CA clients trust it by."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def server_block(self) -> dict[str, Any]:
        return {
            "cert_file": str(self.cert_file),
            "key_file": str(self.key_file),
            "ca_file": str(self.ca_file),
            "timeout": 2,
        }


# ---- the server's configuration -------------------------------------------------------------
@dataclass(frozen=True)
class BusUser:
    """One nkey user: who (an org id or the gateway), its public key, its permissions."""

    name: str
    nkey: str
    permissions: dict[str, Any]


def user_for_org(org: str, seed: str) -> BusUser:
    return BusUser(org, public_key(seed), org_permissions(org))


def user_for_gateway(seed: str, user: str = "gateway") -> BusUser:
    return BusUser(user, public_key(seed), gateway_permissions(user))


def server_config(
    operator_password: str,
    users: list[BusUser],
    tls: BusTLS | None = None,
    server_name: str = SERVER_NAME,
) -> dict[str, Any]:
    """The authorization (and TLS) part of nats-server's configuration; the server reads JSON.

    The server's name is in it too: a reload (SIGHUP, after ``org add``) refuses a file whose
    name differs from the one the server runs with."""
    entries: list[dict[str, Any]] = [{"user": OPERATOR_USER, "password": operator_password}]
    entries += [{"nkey": u.nkey, "permissions": u.permissions} for u in users]
    conf: dict[str, Any] = {
        "server_name": server_name,
        "authorization": {"users": entries, "timeout": 2},
    }
    if tls is not None:
        conf["tls"] = tls.server_block()
    return conf


def write_server_config(
    path: Path, operator_password: str, users: list[BusUser], tls: BusTLS | None = None
) -> Path:
    return write_secret(path, json.dumps(server_config(operator_password, users, tls), indent=2))


def operator_url(host: str, port: int, password: str, tls: bool = False) -> str:
    scheme = "tls" if tls else "nats"
    return f"{scheme}://{OPERATOR_USER}:{password}@{host}:{port}"


def redact(url: str) -> str:
    """A bus URL fit for a log line or an error: no password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def bare(url: str) -> str:
    """The URL without a user and password (a client that brings its own nkey)."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


@dataclass(frozen=True)
class ClientAuth:
    """How one nkey user connects: its seed file, its inbox prefix, and TLS when configured."""

    user: str
    seed_file: Path
    tls: BusTLS | None = None

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "nkeys_seed_str": read_seed(self.seed_file),
            "inbox_prefix": inbox_prefix(self.user),
        }
        if self.tls is not None:
            opts["tls"] = self.tls.client_context()
        return opts
