"""The floor of a lookup on this machine: only what any lookup must do, nothing else.

``bench/lookup.py`` compares an audit-after lookup's p50 with a bare NATS request/reply (target:
at most 10x). This measures how much of that budget the bare minimum of a lookup takes here, in
the same processes' shape and with the same primitives, so that the rest is known to be the
price of everything else the real path does:

- a responder's HTTP POST to a gateway process (uvicorn, httptools and uvloop as the gateway
  runs, but a bare ASGI function: no FastAPI, no authentication, no metrics, no logs);
- the gateway makes an ephemeral key pair, signs an intent (Ed25519) and publishes it to
  ``--asked`` org-node processes (threshold, as the gateway asks first; its spare goes only
  after ``gateway.spare_after_s``), each on its own subject, with its reply subject;
- each org-node process (nats-py on uvloop) parses it, checks the gateway's signature, seals its
  Shamir share of a sheet (``shardline.core.shamir``, a sheet's size) to the ephemeral key, signs
  its answer and replies;
- the gateway checks the first ``--threshold`` answers' signatures, opens them, checks each share
  against a hash it holds (the least a commitment check costs), rebuilds the sheet and answers
  the POST with it.

No schema checks, no replay guard, no served log, no chain request, no hedging or liveness, no
progress events, no logs and no metrics: the real path has all of these. Its own nats-server,
nothing else running beside it (the real bench runs the whole stack, anvil and Redis beside).
The NATS baseline is measured the same way as in ``bench/lookup.py`` (an echo responder on its
own connection, in the timing process), alternating with the floor's rounds.

With ``--policy chain-confirmed`` it measures the floor of a chain-confirmed lookup against a
bare anvil transaction (``bench/lookup.py``'s baseline: sign, send, receipt; target 1.5x), on its
own anvil beside the nats-server, run as the stack runs it:

- the responder's HTTP POST to the bare ASGI gateway, as above;
- the gateway makes an ephemeral key pair and sends one transaction carrying the lookup's guid
  and public key (``Chain.send_call``, the gateway's own fast path) to a contract that does
  nothing but log its calldata (41 bytes of EVM code: no authorisation, no registry read, which
  the Gatekeeper does), and does not wait for its receipt;
- each org-node process has the log pushed by anvil (``eth_subscribe("logs")`` over a websocket,
  ``shardline.contracts.watch.LogWatch``: no cursor, no confirmations, no reorg check, no
  second read), seals its share to the key in it, signs its answer and publishes it to the
  gateway's subject;
- the gateway checks, opens and hash-checks the first ``--threshold`` answers, rebuilds the
  sheet and answers the POST.

    .venv/bin/python bench/lookup_floor.py            # 3 rounds of 500 lookups
    .venv/bin/python bench/lookup_floor.py --asked 3  # a spare asked at once too
    .venv/bin/python bench/lookup_floor.py --policy chain-confirmed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHEET_BYTES = 900  # about a cargo sheet's JSON
FLOOR_TOPIC = "0x" + "f1" * 32  # the emitter's one event
EMIT_GAS = 30_000  # a 48-byte LOG1: about 23,500
CHAIN_ID = 31337  # the floor's own anvil
# A contract that logs its calldata under FLOOR_TOPIC and does nothing else (cancun, PUSH0):
# CALLDATASIZE PUSH0 PUSH0 CALLDATACOPY PUSH32 topic CALLDATASIZE PUSH0 LOG1 STOP, behind the
# usual constructor that copies it out (CODECOPY, RETURN).
EMITTER_RUNTIME = bytes.fromhex("365f5f377f" + "f1" * 32 + "365fa100")
EMITTER_INIT = (
    bytes.fromhex(f"60{len(EMITTER_RUNTIME):02x}600a5f3960{len(EMITTER_RUNTIME):02x}5ff3")
    + EMITTER_RUNTIME
)


def signing_key(name: str):
    from nacl.signing import SigningKey

    return SigningKey((name.encode() * 32)[:32])  # fixed keys: this is a measurement, not a secret


# ---- the org-node process ----------------------------------------------------------------
async def responder(nats_url: str, org: str, share: bytes) -> None:
    import nats

    from shardline.bus.envelope import canonical
    from shardline.core import sealing

    key, gateway = signing_key(org), bytes(signing_key("gateway").verify_key)
    nc = await nats.connect(nats_url)

    async def on_intent(msg) -> None:
        env = json.loads(msg.data)
        body = env["body"]
        sealing.verify(canonical(body), bytes.fromhex(env["sig"]), gateway)
        sealed = sealing.seal(share, bytes.fromhex(body["epk"]))
        out = {"guid": body["guid"], "org": org, "sealed": sealed.hex()}
        await msg.respond(
            json.dumps({"body": out, "sig": sealing.sign(canonical(out), key).hex()}).encode()
        )

    await nc.subscribe(f"floor.intent.{org}.*", cb=on_intent)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def chain_responder(nats_url: str, ws_url: str, emitter: str, org: str, share: bytes) -> None:
    """The org node of a chain-confirmed lookup: it serves on the log its node pushes."""
    import nats

    from shardline.bus.envelope import canonical
    from shardline.contracts.watch import LogWatch
    from shardline.core import sealing

    key = signing_key(org)
    nc = await nats.connect(nats_url)
    tasks: set[asyncio.Task] = set()

    async def serve(guid: bytes, epk: bytes) -> None:
        sealed = sealing.seal(share, epk)
        out = {"guid": guid.hex(), "org": org, "sealed": sealed.hex()}
        await nc.publish(
            f"floor.reply.{guid.hex()}",
            json.dumps({"body": out, "sig": sealing.sign(canonical(out), key).hex()}).encode(),
        )

    def on_log(raw) -> None:
        if raw.address != emitter or raw.removed or len(raw.data) != 48:
            return
        task = asyncio.create_task(serve(raw.data[:16], raw.data[16:]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    watch = LogWatch(ws_url, [FLOOR_TOPIC], on_log, lambda: None)
    watch.start()
    if not await watch.started():
        raise RuntimeError(f"no log subscription at {ws_url}")
    print("ready", flush=True)
    await asyncio.Event().wait()


# ---- the gateway process -----------------------------------------------------------------
def gateway_app(
    nats_url: str,
    orgs: list[str],
    threshold: int,
    digests: dict[str, str],
    chain_at: tuple[str, str, str] | None = None,
):
    """``chain_at`` (rpc url, emitter, key): chain-confirmed, the request goes on chain."""
    import hashlib
    import hmac

    import nats

    from shardline.bus.envelope import canonical
    from shardline.core import sealing, shamir

    key = signing_key("gateway")
    org_keys = {o: bytes(signing_key(o).verify_key) for o in orgs}
    state: dict = {"nc": None, "pending": {}}

    async def on_reply(msg) -> None:
        env = json.loads(msg.data)
        body = env["body"]
        found = state["pending"].get(body["guid"])
        if found is None:
            return
        done, parts, esk = found
        if len(parts) >= threshold:
            return  # the spare, after the sheet was built
        sealing.verify(canonical(body), bytes.fromhex(env["sig"]), org_keys[body["org"]])
        share = sealing.unseal(bytes.fromhex(body["sealed"]), esk)
        if not hmac.compare_digest(hashlib.sha256(share).hexdigest(), digests[body["org"]]):
            raise ValueError(f"{body['org']}'s share does not match its hash")
        parts.append(shamir.Share.from_bytes(share))
        if len(parts) == threshold and not done.done():
            done.set_result(None)

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                m = await receive()
                if m["type"] == "lifespan.startup":
                    if chain_at is not None:
                        from eth_account import Account

                        from shardline.contracts.client import Chain

                        state["chain"] = await Chain.connect(
                            chain_at[0], expected_chain_id=CHAIN_ID
                        )
                        state["acct"] = Account.from_key(chain_at[2])
                    state["nc"] = await nats.connect(nats_url)
                    await state["nc"].subscribe("floor.reply.*", cb=on_reply)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        transport_id = json.loads(body)["transport_id"]
        guid = secrets.token_hex(16)
        esk, epk = sealing.ephemeral_keypair()
        done = asyncio.get_running_loop().create_future()
        state["pending"][guid] = (done, [], esk)
        if chain_at is not None:  # the request on chain; the org nodes serve on its log
            await state["chain"].send_call(
                state["acct"], chain_at[1], bytes.fromhex(guid) + epk, gas=EMIT_GAS
            )
        else:
            intent = {"guid": guid, "transport": transport_id, "epk": epk.hex(), "orgs": orgs}
            data = json.dumps({"body": intent, "sig": sealing.sign(canonical(intent), key).hex()})
            for org in orgs:
                await state["nc"].publish(
                    f"floor.intent.{org}.{guid}", data.encode(), reply=f"floor.reply.{guid}"
                )
        await done
        sheet = shamir.combine(state["pending"].pop(guid)[1])
        out = json.dumps({"guid": guid, "sheet": sheet.hex()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": out})

    return app


def run_gateway(
    nats_url: str,
    orgs: list[str],
    threshold: int,
    port: int,
    shares: str,
    chain_at: tuple[str, str, str] | None = None,
) -> None:
    import hashlib

    import uvicorn

    digests = {
        o: hashlib.sha256(bytes.fromhex((Path(shares) / o).read_text())).hexdigest() for o in orgs
    }
    uvicorn.run(
        gateway_app(nats_url, orgs, threshold, digests, chain_at),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        lifespan="on",
    )


# ---- the timing process ------------------------------------------------------------------
async def floor_lookups(url: str, n: int, warmup: int = 50) -> list[float]:
    import aiohttp

    out = []
    async with aiohttp.ClientSession() as session:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            async with session.post(url, json={"transport_id": "TR-100001"}) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"the floor's gateway answered {resp.status}")
            if i >= warmup:
                out.append((time.perf_counter() - t0) * 1e3)
    return out


async def wait_http(url: str, within_s: float = 20.0) -> None:
    import aiohttp

    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.post(url, json={"transport_id": "TR-100001"}) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the floor's gateway at {url} did not answer")
            await asyncio.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", choices=["audit-after", "chain-confirmed"], default="audit-after")
    ap.add_argument(
        "--asked",
        type=int,
        default=2,
        help="org nodes asked (audit-after: the threshold), or that serve on the log "
        "(chain-confirmed: every org node of the transport's set)",
    )
    ap.add_argument("--threshold", type=int, default=2)
    ap.add_argument("--lookups", type=int, default=500, help="sequential lookups per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--role", choices=["responder", "gateway"], help=argparse.SUPPRESS)
    ap.add_argument("--nats", help=argparse.SUPPRESS)
    ap.add_argument("--org", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--shares", help=argparse.SUPPRESS)
    ap.add_argument("--chain", help=argparse.SUPPRESS)  # rpc url, emitter, gateway key
    args = ap.parse_args()
    orgs = [f"org{i + 1}" for i in range(args.asked)]
    chain_at = tuple(args.chain.split(",")) if args.chain else None
    if args.role == "responder":
        import uvloop

        share = bytes.fromhex((Path(args.shares) / args.org).read_text())
        if chain_at:
            ws_url = chain_at[0].replace("http://", "ws://", 1)
            uvloop.run(chain_responder(args.nats, ws_url, chain_at[1], args.org, share))
        else:
            uvloop.run(responder(args.nats, args.org, share))
        return
    if args.role == "gateway":
        run_gateway(args.nats, orgs, args.threshold, args.port, args.shares, chain_at)
        return
    if not args.threshold <= args.asked:
        ap.error("--asked must be at least --threshold")
    chained = args.policy == "chain-confirmed"
    print(
        f"floor of a {args.policy} lookup: {args.asked} org-node processes "
        f"{'serving on the log' if chained else 'asked'}, "
        f"threshold {args.threshold}, {args.lookups} sequential lookups a round"
    )
    rounds = measure(args.asked, args.threshold, args.lookups, args.rounds, chained=chained)
    base = "bare anvil tx round trip" if chained else "bare NATS request/reply"
    for i, (p50, rtt) in enumerate(rounds, 1):
        print(f"round {i}: floor p50 {p50:.3f} ms, {base} p50 {rtt:.3f} ms: {p50 / rtt:.2f}x")
    target = "1.5x" if chained else "10x"
    print(
        f"floor / {'anvil tx' if chained else 'NATS'}, median of {args.rounds} rounds: "
        f"{statistics.median(p / r for p, r in rounds):.2f}x "
        f"(the {args.policy} target is {target} for the whole lookup)"
    )


async def deploy_emitter(rpc_url: str, gateway: str) -> str:
    """The emitter, deployed by anvil's first dev account; ``gateway`` funded. Its address."""
    from eth_account import Account

    from shardline import stack
    from shardline.contracts.rpc import JsonRpc

    admin = Account.from_key(stack.ANVIL_ADMIN_KEY).address
    rpc = JsonRpc(rpc_url)
    try:
        tx = await rpc.call(
            "eth_sendTransaction", [{"from": admin, "data": "0x" + EMITTER_INIT.hex()}]
        )
        for _ in range(500):  # mined at once (anvil automines): the receipt follows shortly
            receipt = await rpc.call("eth_getTransactionReceipt", [tx])
            if receipt is not None:
                break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError(f"the emitter's deployment {tx} was not mined")
        address = receipt["contractAddress"].lower()
        code = await rpc.call("eth_getCode", [address, "latest"])
        if bytes.fromhex(code[2:]) != EMITTER_RUNTIME:
            raise RuntimeError(f"the emitter at {address} has code {code}")
        await rpc.call("anvil_setBalance", [gateway, hex(10**21)])
    finally:
        await rpc.close()
    return address


@contextlib.contextmanager
def processes(tmp: str) -> Iterator[list[subprocess.Popen]]:
    """The floor's processes, started into the list: their logs (in ``tmp``) printed if the
    measurement fails, and each stopped on the way out, the last started first."""
    procs: list[subprocess.Popen] = []
    try:
        yield procs
    except Exception:
        for log in sorted(Path(tmp).glob("*.log")):  # what the floor's processes said
            print(f"--- {log.name}\n{log.read_text()[-2000:]}", file=sys.stderr)
        raise
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


def start_ready(procs: list[subprocess.Popen], argv: list[str], log: Path) -> None:
    """Start one of the floor's processes (its stderr to ``log``.log) and wait until it says
    it is ready."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(f"{log}.log", "w"), text=True)
    procs.append(p)
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the floor's {log.name} did not start")


def measure(
    asked: int, threshold: int, lookups: int, rounds: int, *, chained: bool = False
) -> list[tuple[float, float]]:
    """Start the floor's nats-server (and anvil, ``chained``) and processes, and return each
    round's (floor p50, baseline p50) in ms, the baseline a bare NATS request/reply or, chained,
    a bare anvil transaction round trip; everything started is stopped on the way out."""
    from eth_account import Account
    from lookup import Stats, chain_tx_round_trips, nats_round_trips  # bench/lookup.py's own

    from shardline import servers
    from shardline.core import shamir

    orgs = [f"org{i + 1}" for i in range(asked)]
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp, processes(tmp) as procs:
        sheet = os.urandom(SHEET_BYTES)
        for org, share in zip(orgs, shamir.split(sheet, threshold, asked), strict=True):
            (Path(tmp) / org).write_text(share.to_bytes().hex())
        nats_port, http_port = servers.free_port(), servers.free_port()
        nats_url = f"nats://127.0.0.1:{nats_port}"
        spec = servers.nats_spec(Path(tmp) / "nats", nats_port, servers.free_port())
        # started as the stack starts it, and healthy before anything connects
        procs.append(servers.spawn(spec, Path(tmp) / "nats.log"))
        me = [
            *(sys.executable, __file__, "--nats", nats_url),
            *("--asked", str(asked), "--shares", tmp),
        ]
        if chained:  # anvil as the stack runs it, with the emitter on it
            anvil_port = servers.free_port()
            rpc_url = f"http://127.0.0.1:{anvil_port}"
            anvil = servers.anvil_spec(Path(tmp) / "anvil", anvil_port, chain_id=CHAIN_ID)
            procs.append(servers.spawn(anvil, Path(tmp) / "anvil.log"))
            gateway = Account.create()
            emitter = asyncio.run(deploy_emitter(rpc_url, gateway.address))
            me += ["--chain", f"{rpc_url},{emitter},{gateway.key.hex()}"]
        for org in orgs:
            start_ready(procs, [*me, "--role", "responder", "--org", org], Path(tmp) / org)
        procs.append(
            subprocess.Popen(
                [
                    *me,
                    "--role",
                    "gateway",
                    "--threshold",
                    str(threshold),
                    "--port",
                    str(http_port),
                ],
                stderr=open(Path(tmp) / "gateway.log", "w"),
            )
        )
        url = f"http://127.0.0.1:{http_port}/lookups"
        asyncio.run(wait_http(url))

        def baseline() -> float:
            if chained:
                return asyncio.run(chain_tx_round_trips(rpc_url, CHAIN_ID, 100))[0].p50
            return asyncio.run(nats_round_trips(nats_url, 300)).p50

        out = []
        for _ in range(rounds):
            rtt = baseline()
            p50 = Stats.of(asyncio.run(floor_lookups(url, lookups))).p50
            out.append((p50, (rtt + baseline()) / 2))
        return out


if __name__ == "__main__":
    main()
