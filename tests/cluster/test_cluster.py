"""The lookup across hosts: a three-node NATS cluster, four org nodes and the gateway, each in its
own network namespace; then one NATS server and one org node are cut off the network.

Run with `make test-cluster` (root: it makes network namespaces). It prints throughput and
latency; it asserts behaviour only: every lookup answered while the cluster is whole, every
lookup answered with one NATS server and one org node cut off (2 of the 3 org nodes left
suffice for threshold 2), and no stream message lost on the servers that stayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from shardline import audit, servers, stack, transports
from shardline.bus.connect import connect
from shardline.config import GatewayConfig, OrgNodeConfig, Responder, StackConfig
from shardline.core.keys import ParticipantKeys
from shardline.lookup_client import lookup

from .netlab import NetLab, why_not

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ORGS = 4
TRANSPORTS = 12
LOOKUPS = 60
CONCURRENCY = 6


def _skip_reason() -> str | None:
    if os.environ.get("SHARDLINE_CLUSTER_TEST") != "1":
        return "the multi-host test runs with `make test-cluster` (root, network namespaces)"
    return why_not()


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


# ---- the hosts and what runs on them ----------------------------------------------------
def nats_conf(i: int, ips: dict[int, str], store: Path) -> str:
    """deploy/nats/nats-<i>.conf with this lab's addresses and a store of its own."""
    text = (DEPLOY / "nats" / f"nats-{i}.conf").read_text()
    text = text.replace("0.0.0.0", ips[i])  # noqa: S104 (replaced, not bound)
    text = text.replace("/var/lib/nats/jetstream", str(store))
    for j, ip in ips.items():
        text = text.replace(f"nats-route://nats-{j}:6222", f"nats-route://{ip}:6222")
    return text


def _wait(what: str, ok, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except Exception as exc:  # not ready yet: say the last reason if it never is
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise AssertionError(f"{what} not ready within {timeout:.0f} s (last: {last})")


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (lab addresses)
        return json.loads(r.read())


def _js_healthy(ip: str) -> bool:
    return _get_json(f"http://{ip}:8222/healthz?js-enabled-only=true").get("status") == "ok"


def stream_counts(ip: str) -> dict[str, int]:
    """Messages per stream as one server holds them (its own replica)."""
    data = _get_json(f"http://{ip}:8222/jsz?accounts=true&streams=true")
    out = {}
    for account in data.get("account_details", []):
        for s in account.get("stream_detail", []):
            out[s["name"]] = s["state"]["messages"]
    return out


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.lab = NetLab(workdir)
        self.procs: dict[str, object] = {}

    def start(self, sheets) -> StackConfig:
        lab = self.lab
        chain = lab.add("chain")
        nats = {i: lab.add(f"nats{i}") for i in (1, 2, 3)}
        gw = lab.add("gw")
        orgs = {f"org{i}": lab.add(f"org{i}") for i in range(1, ORGS + 1)}
        self.hosts = {"chain": chain, "gw": gw, **{f"nats{i}": h for i, h in nats.items()}, **orgs}
        ips = {i: h.ip for i, h in nats.items()}
        for i, host in nats.items():
            conf = self.workdir / f"nats-{i}.conf"
            conf.write_text(nats_conf(i, ips, self.workdir / f"nats-{i}-store"))
            lab.run(host, f"nats-{i}", [servers.nats_server_bin(), "-c", str(conf)])
        lab.run(
            chain,
            "anvil",
            [
                servers.anvil_bin(),
                *("--host", chain.ip, "--port", "8545", "--silent"),
                *("--hardfork", servers.ANVIL_HARDFORK),
            ],
        )
        lab.run(
            gw,
            "redis",
            [
                *(servers.redis_server_bin(), "--bind", gw.ip, "--port", "6379", "--save", ""),
                *("--appendonly", "no", "--protected-mode", "no", "--dir", str(self.workdir)),
            ],
        )
        rpc = f"http://{chain.ip}:8545"
        _wait("anvil", lambda: servers._json_rpc(rpc, "eth_chainId") == hex(31337))
        for ip in ips.values():
            _wait(f"nats at {ip}", lambda ip=ip: _js_healthy(ip))

        keys_dir = self.workdir / "keys"
        org_keys = {o: ParticipantKeys.generate(o) for o in orgs}
        gw_keys = ParticipantKeys.generate("gateway")
        responders = {n: ParticipantKeys.generate(n) for n in ("responder", "visitor")}
        for k in [*org_keys.values(), gw_keys, *responders.values()]:
            k.save(keys_dir / f"{k.participant_id}.json")
        responder_cfgs = []
        for name in responders:
            api_key = secrets.token_urlsafe(24)
            (keys_dir / f"{name}.apikey").write_text(api_key + "\n")
            responder_cfgs.append(
                Responder(
                    name=name,
                    api_key_sha256=hashlib.sha256(api_key.encode()).hexdigest(),
                    key_file=keys_dir / f"{name}.json",
                )
            )
        cfg = StackConfig(
            run_dir=self.workdir,
            nats_url=",".join(f"nats://{ip}:4222" for ip in ips.values()),
            stream_replicas=3,
            redis_url=f"redis://{gw.ip}:6379/0",
            chain_rpc=rpc,
            threshold=2,
            admin_key_file=keys_dir / "admin.key",
            orgs=[
                OrgNodeConfig(
                    id=o,
                    name=o,
                    key_file=keys_dir / f"{o}.json",
                    database_url=f"sqlite:///{self.workdir / f'{o}.db'}",
                )
                for o in orgs
            ],
            gateway=GatewayConfig(
                key_file=keys_dir / "gateway.json",
                host=gw.ip,
                port=18080,
                deadline_s=4.0,
                responders=responder_cfgs,
            ),
        )
        cfg.deployment = asyncio.run(stack._provision(cfg, org_keys, gw_keys, responders))
        cfg.save()
        self.cfg = cfg
        for o, host in orgs.items():
            self._worker(host, f"node-{o}", "org-node", o)
        self._worker(gw, "combiner", "combiner")
        self._worker(gw, "gateway", "gateway")
        self.wait_workers(list(orgs))
        asyncio.run(transports.register(cfg, sheets))
        left = asyncio.run(transports.wait_stored(cfg))
        assert all(v == 0 for v in left.values()), f"shares not stored: {left}"
        return cfg

    def _worker(self, host, name: str, kind: str, org: str | None = None) -> None:
        argv = [sys.executable, "-m", "shardline", "worker", kind, "--config", str(self.cfg.path)]
        self.procs[name] = self.lab.run(host, name, argv + (["--org", org] if org else []))

    def wait_workers(self, orgs: list[str], timeout: float = 90) -> None:
        gw = self.cfg.gateway
        _wait("gateway", lambda: _get_json(f"http://{gw.host}:{gw.port}/healthz"), timeout)

        async def answering() -> bool:
            nc = await connect(self.cfg.nats_url, "cluster-test")
            silent = []
            try:
                for subject in [f"shardline.status.share-node.{o}" for o in orgs] + [
                    "shardline.status.combiner.main"
                ]:
                    try:
                        await nc.request(subject, b"", timeout=1)
                    except Exception as exc:
                        silent.append(f"{subject} ({type(exc).__name__})")
                if silent:
                    raise AssertionError(f"no answer on {', '.join(silent)}")
                return True
            finally:
                await nc.close()

        _wait("org nodes and combiner", lambda: asyncio.run(answering()), timeout)

    def close(self) -> list[str]:
        return self.lab.close()


# ---- load -------------------------------------------------------------------------------
async def run_lookups(cfg: StackConfig, ids: list[str], concurrency: int) -> dict:
    key = (cfg.run_dir / "keys" / "responder.apikey").read_text().strip()
    queue = list(ids)
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}
    used: dict[str, int] = {}
    base = f"http://{cfg.gateway.host}:{cfg.gateway.port}"

    async def one_client(client: httpx.AsyncClient) -> None:
        while queue:
            tid = queue.pop()
            t0 = time.perf_counter()
            try:
                out = await lookup(client, tid, key, wait_s=10)
                status = out.status
                for o in out.body.get("used_orgs", []) if status == 200 else []:
                    used[o] = used.get(o, 0) + 1
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(1000 * (time.perf_counter() - t0))

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as client:
        await asyncio.gather(*(one_client(client) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat = sorted(latencies) or [float("nan")]
    return {
        "n": len(ids),
        "statuses": statuses,
        "used_orgs": used,
        "per_s": len(latencies) / wall,
        "p50_ms": statistics.median(lat),
        "p95_ms": lat[min(len(lat) - 1, int(0.95 * len(lat)))],
    }


def settled_lookups(cfg: StackConfig, ids: list[str], timeout: float = 120) -> None:
    """Wait until three lookups in a row succeed: clients that were on the lost server have
    moved, stream and consumer leaders are elected, and the workers' pulls are asked again."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < 3:
        assert time.monotonic() < deadline, f"lookups did not settle within {timeout:.0f} s"
        r = asyncio.run(run_lookups(cfg, ids[:1], 1))
        streak = streak + 1 if r["statuses"] == {200: 1} else 0


def contacts_match(cfg: StackConfig, workdir: Path) -> dict:
    """Private matching between org1 and org2 over the cluster: 300 synthetic people, 200 each,
    100 in both lists. Returns what each side found."""
    from shardline.contacts import synth
    from shardline.contacts.importer import import_file
    from shardline.contacts.matching import start_match, wait_match
    from shardline.contacts.store import ContactStore, contact_secret

    persons = synth.people(300, dup_share=0.0, seed=11)
    lists = {"org1": persons[:200], "org2": persons[100:]}
    stores = {}
    for org, people in lists.items():
        o = cfg.org(org)
        f = workdir / f"contacts-{org}.csv"
        f.write_text(synth.to_csv(people))
        stores[org] = ContactStore(o.database_url)
        secret = contact_secret(ParticipantKeys.load(o.key_file).signing_seed)
        assert import_file(stores[org], f, secret, synth.MAPPING).imported == 200

    async def go():
        session = await start_match(cfg, "org1", "org2", timeout_s=120)
        rows = [await wait_match(stores[o], session, timeout_s=150) for o in ("org1", "org2")]
        return session, rows

    t0 = time.monotonic()
    session, rows = asyncio.run(go())
    shared_truth = {p.entity for p in persons[100:200]}
    found = {}
    for org, row in zip(("org1", "org2"), rows, strict=True):
        assert row.state == "done", (org, row.state, row.detail)
        ext = {c.id: c.external_id for c in stores[org].contacts()}
        found[org] = {int(ext[r.contact_id].split("-")[0][1:]) for r in stores[org].shared(session)}
    return {"seconds": time.monotonic() - t0, "truth": shared_truth, **found}


def _print(label: str, r: dict) -> None:
    print(
        f"  {label:<34} {r['n']:>4} lookups  {r['per_s']:6.1f}/s  "
        f"p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  "
        f"outcomes {r['statuses']}  shares used {dict(sorted(r['used_orgs'].items()))}"
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, sample_sheets):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start(sample_sheets[:TRANSPORTS])
        yield c
    finally:
        problems = c.close()
        assert not problems, problems


def test_lookups_across_hosts_survive_a_nats_server_and_an_org_node_cut_off(cluster, sample_sheets):
    cfg = cluster.cfg
    ids = [s.transport_id for s in sample_sheets[:TRANSPORTS]]
    load = [ids[i % len(ids)] for i in range(LOOKUPS)]
    print(f"\nhosts: {', '.join(f'{n}={h.ip}' for n, h in cluster.hosts.items())}")

    whole = asyncio.run(run_lookups(cfg, load, CONCURRENCY))
    _print("whole cluster", whole)
    assert whole["statuses"] == {200: LOOKUPS}, whole

    nats = {i: cluster.hosts[f"nats{i}"].ip for i in (1, 2, 3)}
    before = stream_counts(nats[1])
    assert before["TRANSPORTS"] == TRANSPORTS * ORGS, before
    assert before["LOOKUPS"] > 0

    cluster.lab.cut(cluster.hosts["nats3"])
    cluster.lab.cut(cluster.hosts["org4"])
    t_cut = time.monotonic()
    # While clients notice the dead server and the cluster elects new leaders: what happens.
    during = asyncio.run(run_lookups(cfg, load[:20], 2))
    _print("just after the cut (failover)", during)
    cluster.wait_workers(["org1", "org2", "org3"])
    settled_lookups(cfg, ids)
    print(f"  clients and leaders settled {time.monotonic() - t_cut:.1f} s after the cut")

    after = asyncio.run(run_lookups(cfg, load, CONCURRENCY))
    _print("nats3 and org4 cut off", after)
    assert after["statuses"] == {200: LOOKUPS}, after  # 2 of the 3 org nodes left suffice
    assert "org4" not in after["used_orgs"]

    # The contacts flow across hosts, with a NATS server still cut off.
    m = contacts_match(cfg, cluster.workdir)
    for org in ("org1", "org2"):
        recall = len(m[org] & m["truth"]) / len(m["truth"])
        precision = len(m[org] & m["truth"]) / max(len(m[org]), 1)
        print(
            f"  contacts match org1-org2 ({m['seconds']:.1f} s): {org} found {len(m[org])} "
            f"shared, recall {recall:.2f}, precision {precision:.2f}"
        )
        assert recall >= 0.9 and precision >= 0.9, (org, recall, precision)

    # Nothing lost: both servers that stayed hold every share ever stored, and the same lookups.
    for i in (1, 2):
        now = stream_counts(nats[i])
        assert now["TRANSPORTS"] == before["TRANSPORTS"], (i, now, before)
        assert now["LOOKUPS"] >= before["LOOKUPS"], (i, now, before)

    cluster.lab.heal(cluster.hosts["nats3"])
    cluster.lab.heal(cluster.hosts["org4"])
    _wait("nats3 back in the cluster", lambda: _js_healthy(nats[3]), 60)
    _wait(
        "nats3 caught up",
        lambda: (
            stream_counts(nats[3]).get("TRANSPORTS") == before["TRANSPORTS"]
            and stream_counts(nats[3]).get("LOOKUPS") == stream_counts(nats[1]).get("LOOKUPS")
        ),
        60,
    )
    cluster.wait_workers(["org1", "org2", "org3", "org4"])
    settled_lookups(cfg, ids)
    healed = asyncio.run(run_lookups(cfg, load[:20], CONCURRENCY))
    _print("healed", healed)
    assert healed["statuses"] == {200: 20}, healed

    # Every share any org node served, before, during and after the cut, is a lookup on chain.
    report = asyncio.run(audit.run(cfg, grace_s=0))
    print(f"  audit: {len(report.rows)} shares served, {len(report.unmatched)} unmatched")
    assert report.rows and not report.unmatched and not report.unreachable, report.to_dict()


# ---- Celery dedup jobs shared by workers on two hosts -----------------------------------
DEDUP_JOBS = 8
DEDUP_PEOPLE = 1500
DEDUP_ORG = "org3"


def _succeeded(log: Path) -> list[str]:
    """Job ids this worker ran to the end, from its log: Celery writes one
    ``Task shardline.contacts.dedup[<id>] succeeded`` line per task it finished."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return re.findall(r"Task shardline\.contacts\.dedup\[([0-9a-f]+)\] succeeded", text)


def test_dedup_jobs_are_shared_by_celery_workers_on_two_hosts(cluster):
    """An org's dedup jobs through Celery on the gateway host's Redis, taken by a worker on the
    org's host and one on a second host of the same org: both work, and each job runs once."""
    from shardline.contacts import jobs, synth
    from shardline.contacts.importer import import_file
    from shardline.contacts.store import ContactStore, contact_secret

    cfg, lab = cluster.cfg, cluster.lab
    o = cfg.org(DEDUP_ORG)
    store = ContactStore(o.database_url)
    f = cluster.workdir / "dedup-people.csv"
    f.write_text(synth.to_csv(synth.people(DEDUP_PEOPLE, seed=23)))
    secret = contact_secret(ParticipantKeys.load(o.key_file).signing_seed)
    assert import_file(store, f, secret, synth.MAPPING).imported == DEDUP_PEOPLE

    hosts = {"a": cluster.hosts[DEDUP_ORG], "b": lab.add(f"{DEDUP_ORG}b")}
    argv = [sys.executable, "-m", "shardline", "worker", "contacts-jobs"]
    argv += ["--config", str(cfg.path), "--org", DEDUP_ORG]
    logs = {}
    for k, host in hosts.items():
        lab.run(host, f"dedup-{k}", argv)
        logs[k] = cluster.workdir / "logs" / f"dedup-{k}.log"
    for k, log in logs.items():
        _wait(f"celery worker on {hosts[k].name}", lambda log=log: "ready." in log.read_text())

    t0 = time.monotonic()
    ids = [jobs.submit(cfg, DEDUP_ORG) for _ in range(DEDUP_JOBS)]

    def all_done() -> bool:
        states = [store.job(j).state for j in ids]
        assert "failed" not in states, [store.job(j).error for j in ids]
        return all(s == "done" for s in states)

    _wait("dedup jobs", all_done, 240)
    took = time.monotonic() - t0
    ran = {k: _succeeded(log) for k, log in logs.items()}
    rows = [store.job(j) for j in ids]
    print(
        f"\n  dedup: {DEDUP_JOBS} jobs of {DEDUP_PEOPLE} contacts in {took:.1f} s through Celery "
        f"on {cfg.redis_url.split('/')[2]}: "
        + ", ".join(f"{hosts[k].name} ({hosts[k].ip}) ran {len(v)}" for k, v in ran.items())
        + f"; attempts per job {sorted({r.attempts for r in rows})}, "
        f"groups per job {sorted({r.groups for r in rows})}"
    )
    everything = [j for v in ran.values() for j in v]
    assert sorted(everything) == sorted(ids), ran  # every job finished, and only once
    assert all(ran.values()), ran  # both hosts took part
    assert all(r.attempts == 1 for r in rows), [(r.id, r.attempts) for r in rows]
    # The same contacts give the same groups, whichever host ran the job.
    assert len({r.groups for r in rows}) == 1 and rows[0].groups > 0, [r.groups for r in rows]
