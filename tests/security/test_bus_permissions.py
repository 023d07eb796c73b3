"""Each org connects to the bus as its own nkey user and may say only what is its own to say."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from shardline.bus import credentials
from shardline.config import StackConfig

pytestmark = pytest.mark.e2e

PATIENCE_S = 10.0


class Client:
    """A bus connection as one nkey user, keeping the errors the server sends it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc = None

    async def connect(self, cfg: StackConfig, user: str, seed_file) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        self.nc = await nats.connect(
            credentials.bare(cfg.nats_url),
            nkeys_seed_str=credentials.read_seed(seed_file),
            inbox_prefix=credentials.inbox_prefix(user),
            error_cb=on_error,
            allow_reconnect=False,
            connect_timeout=2,
        )
        return self

    async def violation(self, kind: str, subject: str) -> bool:
        """Wait for the server to tell this client it broke a permission."""
        wanted = f'permissions violation for {kind} to "{subject.lower()}"'
        deadline = asyncio.get_running_loop().time() + PATIENCE_S
        while asyncio.get_running_loop().time() < deadline:
            if any(wanted in e for e in self.errors):
                return True
            await asyncio.sleep(0.05)
        return False


async def heard(operator, subject: str, send, client, marker_subject: str) -> list[bytes]:
    """What the operator hears on ``subject`` while ``send`` runs and then ``client`` publishes a
    marker on ``marker_subject`` (a subject it may use). Messages on one connection arrive in
    order, so whatever ``send`` got through is heard before the marker. A publish made at once
    after a subscription may miss it, so the marker is sent again until it is heard."""
    got: list[bytes] = []
    marker = asyncio.Event()

    async def on(msg) -> None:
        got.append(msg.data)
        if msg.data.startswith(b"marker"):
            marker.set()

    sub = await operator.subscribe(subject, cb=on)
    await operator.flush()
    await send()
    for attempt in range(int(PATIENCE_S)):
        await client.publish(marker_subject, b"marker %d" % attempt)
        await client.flush()
        try:
            await asyncio.wait_for(marker.wait(), 1.0)
            break
        except TimeoutError:
            continue
    await sub.unsubscribe()
    if not marker.is_set():
        raise AssertionError(f"heard only {got} on {subject}")
    return got[: next(i for i, m in enumerate(got) if m.startswith(b"marker")) + 1]


def test_an_org_publishes_only_on_its_own_subjects(live_stack):
    org1_seed = live_stack.org("org1").nats_seed_file
    assert org1_seed is not None and org1_seed.stat().st_mode & 0o077 == 0

    async def go():
        operator = await nats.connect(live_stack.nats_url)
        org1 = await Client().connect(live_stack, "org1", org1_seed)

        async def send_as_org1() -> None:
            # another org's request subject, then (same connection, so after it) its own
            await org1.nc.publish("lookup.requested.org2", b"forged")

        got = await heard(
            operator, "lookup.requested.*", send_as_org1, org1.nc, "lookup.requested.org1"
        )
        refused = await org1.violation("publish", "lookup.requested.org2")
        # the registrar's subject: shares are sent to an org, never by one
        await org1.nc.publish("transport.share.org2", b"forged")
        share_refused = await org1.violation("publish", "transport.share.org2")
        # pulling another org's shares through its consumer, or deleting a stream
        pull = "$JS.API.CONSUMER.MSG.NEXT.TRANSPORTS.shares-org2"
        await org1.nc.publish(pull, b'{"batch":1}', reply=org1.nc.new_inbox())
        pull_refused = await org1.violation("publish", pull)
        await org1.nc.publish("$JS.API.STREAM.DELETE.TRANSPORTS", b"")
        delete_refused = await org1.violation("publish", "$JS.API.STREAM.DELETE.TRANSPORTS")
        # listening to another org's requests, or to everyone's replies
        await org1.nc.subscribe("records.access.org2")
        sub_refused = await org1.violation("subscription", "records.access.org2")
        await org1.nc.subscribe("_INBOX.>")
        inbox_refused = await org1.violation("subscription", "_INBOX.>")
        # or to the intents sent to another org (which org nodes a lookup asks)
        await org1.nc.subscribe("lookup.intent.org2.*")
        intent_refused = await org1.violation("subscription", "lookup.intent.org2.*")
        await org1.nc.subscribe("lookup.left.org2")  # and the lookups it was not asked for
        left_refused = await org1.violation("subscription", "lookup.left.org2")
        await org1.nc.publish("lookup.left.org2", b"forged notice")  # nor tell it so itself
        left_sent_refused = await org1.violation("publish", "lookup.left.org2")
        await org1.nc.close()
        await operator.close()
        return (
            got,
            refused,
            share_refused,
            pull_refused,
            delete_refused,
            sub_refused,
            inbox_refused,
            intent_refused,
            left_refused,
            left_sent_refused,
        )

    got, *refusals = asyncio.run(go())
    assert len(got) == 1, f"the operator heard {got}"
    assert all(refusals), refusals


def test_the_gateway_cannot_speak_for_an_org(live_stack):
    async def go():
        operator = await nats.connect(live_stack.nats_url)
        gw = await Client().connect(live_stack, "gateway", live_stack.gateway.nats_seed_file)

        async def send_as_gateway() -> None:
            await gw.nc.publish("lookup.share.ab", b"forged share")
            await gw.nc.publish("lookup.requested.org1", b"forged request")

        got_share = []

        async def on_share(msg) -> None:
            got_share.append(msg.data)

        share_sub = await operator.subscribe("lookup.share.*", cb=on_share)
        got = await heard(
            operator, "lookup.intent.*.*", send_as_gateway, gw.nc, "lookup.intent.org1.ab"
        )
        await operator.flush()
        refused = await gw.violation("publish", "lookup.share.ab") and await gw.violation(
            "publish", "lookup.requested.org1"
        )
        await gw.nc.subscribe("records.access.org1")
        sub_refused = await gw.violation("subscription", "records.access.org1")
        await share_sub.unsubscribe()
        await gw.nc.close()
        await operator.close()
        return got, got_share, refused, sub_refused

    got, got_share, refused, sub_refused = asyncio.run(go())
    assert len(got) == 1 and got_share == []
    assert refused and sub_refused


def test_no_one_connects_without_credentials(live_stack, tmp_path):
    stranger = tmp_path / "stranger.nk"
    credentials.write_secret(stranger, credentials.new_user_seed())

    async def attempt(**kwargs) -> str:
        try:
            nc = await nats.connect(
                credentials.bare(live_stack.nats_url),
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
                **kwargs,
            )
        except Exception as exc:
            return str(exc).lower()
        await nc.close()
        return "connected"

    anonymous = asyncio.run(attempt())
    unknown = asyncio.run(attempt(nkeys_seed_str=credentials.read_seed(stranger)))
    assert "authorization violation" in anonymous
    assert "authorization violation" in unknown


def test_an_org_cannot_create_or_repoint_a_consumer(live_stack):
    """The operator made every consumer at `up`; an org may bind to its own, never create one,
    not even under its own name with another org's filter."""
    from nats.js.api import ConsumerConfig

    from shardline import bus_access
    from shardline.bus import streams

    org1_seed = live_stack.org("org1").nats_seed_file

    async def go():
        operator = await nats.connect(live_stack.nats_url)
        org1 = await Client().connect(live_stack, "org1", org1_seed)
        attempts = [
            # its own durable's name, org2's shares as the filter (the create call of 2.10+)
            "$JS.API.CONSUMER.CREATE.TRANSPORTS.shares-org1.transport.share.org2",
            "$JS.API.CONSUMER.CREATE.TRANSPORTS.shares-org1",
            "$JS.API.CONSUMER.DURABLE.CREATE.TRANSPORTS.shares-org1",
            # a fresh consumer of its own on org2's subjects, durable or not
            "$JS.API.CONSUMER.CREATE.TRANSPORTS.spy.transport.share.org2",
            "$JS.API.CONSUMER.CREATE.TRANSPORTS",
        ]
        refused = []
        for api in attempts:
            config = ConsumerConfig(
                durable_name="shares-org1", filter_subject="transport.share.org2"
            )
            await org1.nc.publish(
                api,
                json.dumps({"stream_name": "TRANSPORTS", "config": config.as_dict()}).encode(),
                reply=org1.nc.new_inbox(),
            )
            refused.append(await org1.violation("publish", api))
        # what the org's own worker does: bind by name (allowed, and the consumer is unchanged)
        info = await org1.nc.jetstream(timeout=5).consumer_info("TRANSPORTS", "shares-org1")
        await org1.nc.close()
        # every consumer of the stack is there, as the catalogue says, and none was repointed
        js = operator.jetstream(timeout=5)
        diffs = {}
        for spec in bus_access.consumer_specs(live_stack):
            have = await js.consumer_info(spec.stream, spec.durable)
            if d := streams.differences(spec, have.config):
                diffs[spec.durable] = d
        names = await js.consumers_info("TRANSPORTS")
        await operator.close()
        return refused, info, diffs, {c.name for c in names}

    refused, info, diffs, transport_consumers = asyncio.run(go())
    assert all(refused), refused
    assert info.config.filter_subject == "transport.share.org1" or info.config.filter_subjects == [
        "transport.share.org1"
    ]
    assert diffs == {}
    assert "spy" not in transport_consumers


def test_no_bus_user_may_create_a_consumer():
    org1 = credentials.org_permissions("org1")["publish"]["allow"]
    gateway = credentials.gateway_permissions()["publish"]["allow"]
    for allowed in (org1, gateway):
        assert not [a for a in allowed if "CONSUMER.CREATE" in a or "DURABLE.CREATE" in a]
    # binding and pulling stay: each its own consumers only
    assert "$JS.API.CONSUMER.MSG.NEXT.TRANSPORTS.shares-org1" in org1
    assert "$JS.API.CONSUMER.MSG.NEXT.TRANSPORTS.shares-org2" not in org1
    assert "$JS.API.CONSUMER.MSG.NEXT.LOOKUPS.combiner" in gateway


def test_a_worker_without_its_consumer_says_who_creates_it(live_stack):
    """A consumer that is not the user's (not in its permissions, so the server drops the
    lookup) fails with an error that says what to do, not a bare timeout."""
    from shardline.bus import streams

    spec = streams.ConsumerSpec("TRANSPORTS", "shares-org1-missing", ("x.y",), "transport.share")

    async def go():
        org1 = await Client().connect(live_stack, "org1", live_stack.org("org1").nats_seed_file)
        try:
            await streams.ensure_consumer(org1.nc.jetstream(timeout=1), spec)
        except streams.ConsumerError as exc:
            return str(exc)
        finally:
            await org1.nc.close()
        return "no error"

    message = asyncio.run(go())
    assert message.startswith("cannot look up consumer shares-org1-missing on stream TRANSPORTS")
    assert "the bus operator creates every consumer" in message
