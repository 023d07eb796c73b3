"""Analytics on the real stack: nats-server, anvil, five org nodes each running an MPC server.

1000 producers share one row each among the five servers of a data set (t = 1); jobs use the
four best by reputation. Every statistic matches the plaintext computation; a server that
returns a wrong share is outvoted, named and slashed on chain, loses reputation and is not
chosen again; a silent server past the deadline means refund and slash; a filter selecting
fewer than k rows is refused; the money adds up after every case.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import statistics

import pytest
from eth_account import Account

from shardline import stack
from shardline.config import StackConfig
from shardline.contracts import market as mk
from shardline.contracts.client import ChainRevert
from shardline.core import analytics as an
from shardline.core import analytics_batch as ab
from shardline.core import bulk_shares as bs
from shardline.core import field_shares as fs
from shardline.core.keys import ParticipantKeys
from shardline.workers.analytics_client import AnalyticsClient, JobFailed
from shardline.workers.analytics_server import AnalyticsServer, ProducerDirectory
from shardline.workers.analytics_store import AnalyticsStore

# The module's first test also pays for the world: 1000 producers submitting one by one (a chain
# transaction each) and every server checking each contribution on its shares. On a loaded
# machine that alone can pass the default 300 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PRODUCERS = 1000
K = 10
PRICE = 10**17
SCHEMA = {
    "name": "clinic",
    "fields": [
        {"name": "age", "type": "int", "min": 0, "max": 119, "bin_width": 10},
        {"name": "bmi", "type": "float", "min": 10, "max": 60, "decimals": 1},
        {"name": "region", "type": "category", "values": ["north", "south", "east"]},
        {"name": "rare", "type": "category", "values": ["yes", "no"]},
    ],
}
SERVERS = ["org1", "org2", "org3", "org4", "org5"]


def make_rows(n: int) -> list[dict]:
    rnd = random.Random(2026)
    return [
        {
            "age": rnd.randint(0, 119),
            "bmi": round(rnd.uniform(10, 60), 1),
            "region": rnd.choice(["north", "south", "east"]),
            "rare": "yes" if i < 3 else "no",
        }
        for i in range(n)
    ]


ROWS = make_rows(PRODUCERS)


@pytest.fixture(scope="module")
def analytics_stack(tmp_path_factory) -> StackConfig:
    run_dir = tmp_path_factory.mktemp("analytics-stack")
    cfg = stack.up(run_dir, orgs=5, threshold=2, ports=stack.Ports.free(), say=lambda _m: None)
    yield cfg
    stack.down(run_dir, say=lambda _m: None)


class Ledger:
    """Who should hold what in the Market, worked out here from the rules, not read back."""

    def __init__(self) -> None:
        self.credits: dict[str, int] = {}

    def add(self, addr: str, wei: int) -> None:
        self.credits[addr] = self.credits.get(addr, 0) + wei


@pytest.fixture(scope="module")
async def world(analytics_stack):
    cfg = analytics_stack
    client = await AnalyticsClient.connect(
        cfg.nats_url, cfg.chain_rpc, cfg.deployment, name="analytics-test"
    )
    chain, dep = client.chain, client.deployment
    # every org node stakes when its MPC server starts
    for _ in range(200):
        if all(info.stake > 0 for info in [await mk.server(chain, dep, s) for s in SERVERS]):
            break
        await asyncio.sleep(0.1)
    consumer = Account.create()
    await chain.w3.provider.make_request("anvil_setBalance", [consumer.address, hex(10**21)])
    await mk.create_dataset(
        chain, consumer, dep, "clinic", an.Schema.from_dict(SCHEMA).to_json(), 1, K, SERVERS
    )
    producers = [ParticipantKeys.generate(f"p{i:04d}") for i in range(PRODUCERS)]
    for p in producers:
        addr = Account.from_key(p.chain_key).address
        await chain.w3.provider.make_request("anvil_setBalance", [addr, hex(10**18)])
    digests: list[bytes] = []
    for start in range(0, PRODUCERS, 100):
        for got in await asyncio.gather(
            *(
                client.submit(p, "clinic", [row])
                for p, row in zip(
                    producers[start : start + 100], ROWS[start : start + 100], strict=True
                )
            )
        ):
            digests += got
    # a producer that skips the client's check: an age of 130 in a row it shares itself
    mallory = ParticipantKeys.generate("mallory")
    addr = Account.from_key(mallory.chain_key).address
    await chain.w3.provider.make_request("anvil_setBalance", [addr, hex(10**18)])
    forged = forged_batch({"age": 130, "bmi": 22.0, "region": "north", "rare": "no"})
    mallory_digest = await client.send_batch(mallory, "clinic", forged)
    # submission is done when every server has checked every contribution on its shares
    stores = [AnalyticsStore(cfg.org(o).database_url) for o in SERVERS]
    wanted = [*digests, mallory_digest]
    for _ in range(6000):
        if all(len(s.verdicts("clinic", wanted)) == len(wanted) for s in stores):
            break
        await asyncio.sleep(0.1)
    yield {
        "client": client,
        "consumer": consumer,
        "producers": producers,
        "mallory": mallory_digest,
        "cfg": cfg,
        "jobs": [],
        "accounts": [],
    }
    await client.close()


def forged_batch(row: dict) -> ab.SharedBatch:
    """``analytics_batch.share_batch`` without the range check: encoded by hand, shared right."""
    schema = an.Schema.from_dict(SCHEMA)
    ok = {**row, "age": 30}
    matrix = ab.encode_matrix(schema, [ok])
    ix, isq, ib = schema.offsets("age")
    for ctx in (0, schema.context_index(("region", row["region"]))):
        at = ctx * schema.context_width
        matrix[0, at + ix], matrix[0, at + isq] = row["age"], row["age"] ** 2
        matrix[0, at + ib + 3], matrix[0, at + ib + 11] = 0, 1  # the last bucket, 110-119
    xs = list(range(1, len(SERVERS) + 1))
    shares = bs.share_elements(ab.extended_elements(schema, matrix), 1, xs)
    w = bs.share_elements(fs.pack([5]), 1, xs)
    eta = bs.share_elements(fs.pack([6]), 1, xs)
    parts = {x: shares[x] + w[x] + eta[x] for x in xs}
    return ab.SharedBatch(1, parts, [hashlib.sha256(parts[x]).digest() for x in xs])


async def run_job(world, spec: an.JobSpec, **kw):
    client, consumer = world["client"], world["consumer"]
    secret = await client.open(consumer, "clinic", spec, price=PRICE, **kw)
    world["jobs"].append(secret.job)
    return secret, await client.result(consumer, secret, timeout_s=90)


async def test_every_statistic_matches_plaintext(world):
    ages = [r["age"] for r in ROWS]
    bmis = [r["bmi"] for r in ROWS]
    north = [r["bmi"] for r in ROWS if r["region"] == "north"]
    S = an.JobSpec
    cases = [
        (S("count"), PRODUCERS),
        (S("sum", "age"), sum(ages)),
        (S("mean", "bmi"), statistics.fmean(bmis)),
        (S("variance", "age"), statistics.pvariance(ages)),
        (S("std", "bmi"), statistics.pstdev(bmis)),
        (S("mean", "bmi", "region", ("north",)), statistics.fmean(north)),
        (
            S("count", where_field="region", where_values=("north", "east")),
            sum(1 for r in ROWS if r["region"] in ("north", "east")),
        ),
        (
            S("histogram", "age", bins=(0, 20, 40, 80, 120)),
            [
                sum(1 for a in ages if lo <= a < hi)
                for lo, hi in ((0, 20), (20, 40), (40, 80), (80, 120))
            ],
        ),
    ]
    outcomes = await asyncio.gather(*(run_job(world, spec) for spec, _ in cases))
    for (spec, expected), (secret, out) in zip(cases, outcomes, strict=True):
        assert secret.servers == ["org1", "org2", "org3", "org4"]
        assert out.cheaters == [] and out.silent == []
        if isinstance(expected, float):
            assert out.result.value == pytest.approx(expected, rel=1e-9), spec.describe()
        else:
            assert out.result.value == expected, spec.describe()
    chain, dep = world["client"].chain, world["client"].deployment
    info = await mk.job(chain, dep, outcomes[0][0].job)
    # the chain counts mallory's contribution (it cannot read it); the servers did not
    assert info.status_name == "done" and info.inputs == PRODUCERS + 1
    assert info.producers == PRODUCERS + 1


def cli(cfg: StackConfig, *args: str):
    """The `shardline analytics` command, in this process (run in a thread: it has its own loop)."""
    from typer.testing import CliRunner

    from shardline.cli import app

    return CliRunner().invoke(
        app, ["analytics", *args, "--config", str(cfg.path)], env={"COLUMNS": "200"}
    )


async def test_a_producer_that_skips_the_check_is_rejected_by_the_servers(world):
    """Every server decided alone, from the values all of them opened, that the row breaks the
    schema; the statistics above (count, sum, histogram) are those of the honest rows only."""
    cfg = world["cfg"]
    for org in SERVERS:
        store = AnalyticsStore(cfg.org(org).database_url)
        for _ in range(100):
            verdicts = store.verdicts("clinic", [world["mallory"]])
            if verdicts:
                break
            await asyncio.sleep(0.1)
        assert verdicts == {world["mallory"]: False}, org
    secret, out = await run_job(world, an.JobSpec("count"))
    assert out.result.value == PRODUCERS
    job = await mk.job(world["client"].chain, world["client"].deployment, secret.job)
    assert job.inputs == PRODUCERS + 1


async def test_the_command_line_from_keys_to_result(world, tmp_path):
    cfg = world["cfg"]
    for who in ("cli-consumer", "cli-producer"):
        assert (await asyncio.to_thread(cli, cfg, "keygen", who)).exit_code == 0
    schema = tmp_path / "schema.json"
    schema.write_text(
        json.dumps(
            {"name": "tiny", "fields": [{"name": "score", "type": "int", "min": 0, "max": 10}]}
        )
    )
    made = await asyncio.to_thread(
        cli,
        cfg,
        "create",
        "tiny",
        "--schema",
        str(schema),
        "--as",
        "cli-consumer",
        "--servers",
        "org1,org2,org3,org4",
        "--k",
        "2",
    )
    assert made.exit_code == 0, made.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("score\n3\n11\n")
    refused = await asyncio.to_thread(cli, cfg, "submit", "tiny", str(bad), "--as", "cli-producer")
    assert refused.exit_code == 1
    assert "row 2: score='11' is outside the allowed range 0 to 10" in refused.stderr
    good = tmp_path / "good.csv"
    good.write_text("score\n3\n7\n9\n")
    sub = await asyncio.to_thread(cli, cfg, "submit", "tiny", str(good), "--as", "cli-producer")
    assert sub.exit_code == 0 and "shared 3 row(s)" in sub.stdout, sub.stderr
    opened = await asyncio.to_thread(
        cli,
        cfg,
        "open",
        "tiny",
        "mean",
        "--field",
        "score",
        "--as",
        "cli-consumer",
        "--price",
        "0.01",
    )
    assert opened.exit_code == 0, opened.stderr
    job = opened.stdout.split()[1].rstrip(":")
    res = await asyncio.to_thread(cli, cfg, "result", job, "--as", "cli-consumer")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["result"]["value"] == pytest.approx(19 / 3) and out["result"]["count"] == 3
    assert out["cheaters"] == []
    listing = await asyncio.to_thread(cli, cfg, "jobs")
    assert "mean(score)" in listing.stdout and "done" in listing.stdout
    rep = await asyncio.to_thread(cli, cfg, "reputation")
    assert "org1" in rep.stdout and "org5" in rep.stdout
    status = await asyncio.to_thread(cli, cfg, "status", job)
    assert "done" in status.stdout
    keys = ParticipantKeys.load(cfg.run_dir / "keys" / "analytics" / "cli-consumer.json")
    world["accounts"].append(Account.from_key(keys.chain_key).address)
    world["jobs"].append(int(job))


async def test_a_filter_below_k_is_refused_and_refunded(world):
    client, consumer = world["client"], world["consumer"]
    before = await mk.balance_of(client.chain, client.deployment, consumer.address)
    with pytest.raises(an.TooFewProducers, match="fewer than k"):
        await run_job(world, an.JobSpec("mean", "age", "rare", ("yes",)))
    after = await mk.balance_of(client.chain, client.deployment, consumer.address)
    assert after - before == PRICE
    assert (
        await mk.job(client.chain, client.deployment, world["jobs"][-1])
    ).status_name == "refused"


class LyingServer(AnalyticsServer):
    """org2's MPC server, but it adds 1 to the row count it reports."""

    def output_share(self, aggregate, sel):
        out = super().output_share(aggregate, sel)
        out[1 if len(out) > 1 else 0] += 1
        return out


async def start_server(cfg: StackConfig, org_id: str, cls=AnalyticsServer) -> AnalyticsServer:
    from shardline.bus.connect import connect
    from shardline.contracts.client import Chain
    from shardline.contracts.deploy import Deployment

    org = cfg.org(org_id)
    keys = ParticipantKeys.load(org.key_file)
    dep = Deployment.from_dict(cfg.deployment)
    chain = await Chain.connect(cfg.chain_rpc)
    nc = await connect(cfg.nats_url, f"test-{org_id}")
    w = cls(
        nc,
        keys,
        ProducerDirectory(chain, dep),
        instance=org_id,
        org_id=org_id,
        store=AnalyticsStore(org.database_url),
        chain=chain,
        deployment=dep,
        account=Account.from_key(keys.chain_key),
        ws_url=cfg.chain_rpc.replace("http", "ws"),
    )
    await w.start()
    return w


async def test_a_wrong_share_is_outvoted_named_slashed_and_not_chosen_again(world):
    cfg, client, consumer = world["cfg"], world["client"], world["consumer"]
    chain, dep = client.chain, client.deployment
    stack.stop(cfg.run_dir, "node-org2")
    liar = await start_server(cfg, "org2", LyingServer)
    try:
        before = {s: await mk.server(chain, dep, s) for s in SERVERS}
        bal = {
            a: await mk.balance_of(chain, dep, a)
            for a in [consumer.address, *(b.account for b in before.values())]
        }
        ages = [r["age"] for r in ROWS]
        secret = await client.open(consumer, "clinic", an.JobSpec("mean", "age"), price=PRICE)
        world["jobs"].append(secret.job)
        await client.wait_outputs(secret.job, 90)
        salts = [bytes.fromhex(s) for s in secret.salts]
        # the contract checks the evidence: naming an honest server, or masks that are not the
        # committed ones, does not hold up
        with pytest.raises(ChainRevert, match="the other outputs do not agree"):
            await mk.accuse(chain, consumer, dep, secret.job, [0], secret.masks, salts)
        forged = [list(m) for m in secret.masks]
        forged[1][1] += 1
        with pytest.raises(ChainRevert, match="does not match its commitment"):
            await mk.accuse(chain, consumer, dep, secret.job, [1], forged, salts)
        out = await client.result(consumer, secret, timeout_s=90)
        assert out.result.value == pytest.approx(statistics.fmean(ages), rel=1e-12)
        assert out.cheaters == ["org2"]
        slot = await mk.slot(chain, dep, secret.job, secret.servers.index("org2"))
        assert slot.cheater
        after = {s: await mk.server(chain, dep, s) for s in SERVERS}
        assert after["org2"].stake == before["org2"].stake - before["org2"].stake // 2
        assert after["org2"].reputation == before["org2"].reputation - 50
        assert after["org2"].faults == 1
        # the money of this job: producers 30 % (mallory is registered on chain too), the three
        # honest servers the rest, the consumer the rounding dust and the slashed half stake
        paid = PRODUCERS + 1
        per_producer = PRICE * 3000 // 10000 // paid
        fee = (PRICE - per_producer * paid) // 3
        dust = PRICE - per_producer * paid - 3 * fee
        assert await mk.balance_of(chain, dep, consumer.address) - bal[consumer.address] == (
            dust + before["org2"].stake // 2
        )
        for s in ("org1", "org3", "org4"):
            assert await mk.balance_of(chain, dep, after[s].account) - bal[after[s].account] == fee
            assert after[s].reputation == before[s].reputation + 1
        assert await mk.balance_of(chain, dep, after["org2"].account) == bal[after["org2"].account]
        # the evidence on chain is checkable by anyone: a second accusation fails as the job ended
        with pytest.raises(ChainRevert, match="not open"):
            await mk.accuse(
                chain,
                consumer,
                dep,
                secret.job,
                [1],
                secret.masks,
                [bytes.fromhex(s) for s in secret.salts],
            )
        # next job: org2 is below the minimum stake and last by reputation; org5 takes its place
        assert await mk.choose_servers(chain, dep, "clinic") == ["org1", "org3", "org4", "org5"]
        secret2, out2 = await run_job(world, an.JobSpec("sum", "age"))
        assert "org2" not in secret2.servers and out2.result.value == sum(ages)
    finally:
        await liar.stop()
        await liar.nc.drain()
        await liar.chain.close()


async def test_a_silent_server_past_the_deadline_means_refund_and_slash(world):
    cfg, client, consumer = world["cfg"], world["client"], world["consumer"]
    chain, dep = client.chain, client.deployment
    chosen = await mk.choose_servers(chain, dep, "clinic")
    silent = chosen[-1]
    stack.stop(cfg.run_dir, f"node-{silent}")  # stays down: the later tests need no MPC work
    before = await mk.server(chain, dep, silent)
    bal = await mk.balance_of(chain, dep, consumer.address)
    with pytest.raises(JobFailed, match=f"{silent} did not reveal"):
        await run_job(world, an.JobSpec("mean", "age"), commit_window_s=4, reveal_window_s=4)
    after = await mk.server(chain, dep, silent)
    assert after.stake == before.stake - before.stake // 2 and after.faults == before.faults + 1
    assert after.reputation == before.reputation - 50
    assert await mk.balance_of(chain, dep, consumer.address) - bal == PRICE + before.stake // 2
    assert (await mk.job(chain, dep, world["jobs"][-1])).status_name == "failed"
    # too few servers left with enough stake: a job cannot even open
    with pytest.raises(ChainRevert, match="too few servers"):
        await mk.choose_servers(chain, dep, "clinic")


async def test_the_money_adds_up(world):
    """The contract holds exactly the stakes, the credited balances and the unclaimed rewards."""
    client, consumer, producers = world["client"], world["consumer"], world["producers"]
    chain, dep = client.chain, client.deployment
    some = producers[:3]
    for p in some:
        await mk.claim(chain, Account.from_key(p.chain_key), dep, p.participant_id, world["jobs"])
    servers = [await mk.server(chain, dep, s) for s in SERVERS]
    held = await chain.w3.eth.get_balance(dep.market)
    credited = sum(
        [
            await mk.balance_of(chain, dep, a)
            for a in [
                consumer.address,
                *(s.account for s in servers),
                *(Account.from_key(p.chain_key).address for p in some),
                *world["accounts"],
            ]
        ]
    )
    unclaimed = 0
    open_deposits = 0
    for j in world["jobs"]:
        info = await mk.job(chain, dep, j)
        if info.status == mk.DONE:
            taken = [await mk.claimed(chain, dep, j, p.participant_id) for p in some]
            unclaimed += info.per_producer * (info.producers - sum(taken))
        elif info.status == mk.OPEN:
            open_deposits += info.price
    assert held == sum(s.stake for s in servers) + credited + unclaimed + open_deposits
    # and a withdrawal moves exactly the credited wei to the producer's account
    p = Account.from_key(some[0].chain_key)
    owed = await mk.balance_of(chain, dep, p.address)
    assert owed > 0
    wallet = await chain.w3.eth.get_balance(p.address)
    tx = await mk.withdraw(chain, p, dep)
    fee = tx.receipt["gasUsed"] * tx.receipt["effectiveGasPrice"]
    assert await chain.w3.eth.get_balance(p.address) == wallet + owed - fee
    assert await chain.w3.eth.get_balance(dep.market) == held - owed
