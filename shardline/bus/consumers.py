"""Every durable consumer of the stack, as the bus operator creates it.

Org nodes and the gateway may not create or change consumers: a consumer's filter decides what
its puller receives, so whoever could create one named for itself could point it at another
org's subjects. The operator (``shardline up``, ``shardline org add``: shardline/bus_access.py)
creates each one from this catalogue; a worker only binds to its own by name (consumer info,
then pulls and acks). A worker whose declared consumer differs from the one it finds refuses to
start and names the difference (``streams.ensure_consumer``), so this catalogue and the workers
cannot drift apart unnoticed. The workers take their specs from here (``org_consumer``,
``gateway_consumer``): one definition per consumer.
"""

from __future__ import annotations

from shardline.bus import subjects
from shardline.bus.streams import ConsumerSpec

# Distribution list messages an org node reads (one consumer each).
LIST_MESSAGES = ("invite", "accept", "roster", "bids")


def org_consumer_specs(org: str) -> list[ConsumerSpec]:
    """The consumers an org node's workers pull from, each filtered to what is the org's."""
    return [
        # share node
        ConsumerSpec(
            "TRANSPORTS",
            f"shares-{org}",
            (subjects.TRANSPORT_SHARE.format(org=org),),
            "transport.share",
            ack_wait_s=10,
            max_deliver=20,
        ),
        ConsumerSpec(
            "LOOKUPS",
            f"lookups-{org}",
            (subjects.LOOKUP_REQUESTED.format(org=org),),
            "lookup.requested",
        ),
        # PSI node
        ConsumerSpec(
            "PSI",
            f"psi-{org}",
            (subjects.PSI_ROUND.format(session="*", org=org),),
            "psi.round",
            ack_wait_s=30,
            deliver_new=True,
        ),
        # records proxy
        ConsumerSpec(
            "RECORDS",
            f"records-kfrags-{org}",
            (subjects.RECORDS_KFRAG.format(org=org),),
            "records.kfrag",
            ack_wait_s=10,
            max_deliver=20,
        ),
        # list node
        *(
            ConsumerSpec(
                "LISTS",
                f"lists-{kind}-{org}",
                (f"lists.{kind}.{org}",),
                f"lists.{kind}",
                ack_wait_s=30,
                max_deliver=40,  # bids wait (Transient) while the match finishes
            )
            for kind in LIST_MESSAGES
        ),
        # analytics server
        ConsumerSpec(
            "ANALYTICS",
            f"analytics-inputs-{org}",
            (subjects.ANALYTICS_INPUT.format(org=org),),
            "analytics.input",
            ack_wait_s=120,  # a batch's part: fetched from the object store, checked, summed
            max_deliver=20,
        ),
        # every server's range-check values (one message per few ms per data set)
        ConsumerSpec(
            "ANALYTICS",
            f"analytics-checks-{org}",
            (subjects.ANALYTICS_CHECKS,),
            "analytics.check",
            ack_wait_s=30,
            max_deliver=20,
        ),
    ]


def gateway_consumer_specs() -> list[ConsumerSpec]:
    """The combiner's: every org's share of a lookup (sealed to the request's ephemeral key)."""
    return [
        ConsumerSpec(
            "LOOKUPS",
            "combiner",
            (subjects.LOOKUP_SHARE.format(guid="*"),),
            "lookup.share",
            ack_wait_s=2,
            deliver_new=True,
        )
    ]


def org_consumer(org: str, durable: str) -> ConsumerSpec:
    """The catalogue's consumer ``durable`` of ``org``, which that org's worker pulls from."""
    return _named(org_consumer_specs(org), durable)


def gateway_consumer(durable: str) -> ConsumerSpec:
    return _named(gateway_consumer_specs(), durable)


def _named(specs: list[ConsumerSpec], durable: str) -> ConsumerSpec:
    for spec in specs:
        if spec.durable == durable:
            return spec
    raise KeyError(f"no consumer {durable} in shardline/bus/consumers.py")
