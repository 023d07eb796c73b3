"""The subject catalogue. Subjects are ``<domain>.<event>[.<id>...]``, lower case."""

from __future__ import annotations

# Registration: a company's share of a transport, sealed to one org node.
TRANSPORT_SHARE = "transport.share.{org}"
# An org's chain intake republishes the LookupRequested events it read from its own endpoint.
LOOKUP_REQUESTED = "lookup.requested.{org}"
# The gateway's signed request beside the chain transaction (audit-after orgs serve on it). A plain
# NATS request with the gateway's reply subject, not in a stream: a stream would answer it. On a
# subject per org, so that an org the intent does not name is not woken for it at once.
LOOKUP_INTENT = "lookup.intent.{org}.{guid}"
LOOKUP_LEFT = "lookup.left.{org}"  # lookups an audit-after org node was not asked for
# One org's share for a lookup, sealed to the request's ephemeral key: on this subject (and in
# the LOOKUPS stream) when served on a chain event with no intent seen, else as the reply to the
# intent, on the asking gateway's reply subject (under lookup.reply, so that a tail of lookup.>
# shows a lookup's whole path; in no stream).
LOOKUP_SHARE = "lookup.share.{guid}"
LOOKUP_REPLY = "lookup.reply.{user}.{inbox}.{guid}"  # user: the gateway's bus user
# Progress of a lookup (which org answered, which share was bad): no secrets; not kept.
LOOKUP_PROGRESS = "lookup.progress.{guid}"
# The combiner's result, sealed to the gateway.
LOOKUP_RESULT = "lookup.result.{guid}"
# Request/reply: what an org's share node has served (for the audit).
AUDIT_SERVED = "audit.served.{org}"
# Records: an owner's key fragment for one proxy, sealed to that proxy's org (durable).
RECORDS_KFRAG = "records.kfrag.{org}"
# Records: request/reply to one org's proxy; the reply is a cfrag sealed to the reader, or a
# refusal. Not in a stream: a stream would answer the request with its own ack.
RECORDS_ACCESS = "records.access.{org}"
# Progress of an org's dedup job (counts only).
DEDUP_PROGRESS = "dedup.job.{job}.progress"
# Private set intersection rounds between two org nodes: blinded points only.
PSI_ROUND = "psi.round.{session}.{org}"
# Request/reply: an org asks its own PSI worker to start a match (signed by the org itself).
PSI_START = "psi.start.{org}"
# Distribution lists between org nodes: an invitation, an acceptance to the owner, the owner's
# roster to every member, and a pair's bid tables (blinded values and keyed bids only).
LISTS_INVITE = "lists.invite.{org}"
LISTS_ACCEPT = "lists.accept.{org}"
LISTS_ROSTER = "lists.roster.{org}"
LISTS_BIDS = "lists.bids.{org}"
# Analytics: a producer's share vectors for one MPC server, sealed to its org (durable).
ANALYTICS_INPUT = "analytics.input.{org}"
ANALYTICS_CHECK = "analytics.check.{org}"  # a server's range-check values for a contribution
ANALYTICS_CHECKS = "analytics.check.*"
# Private transactions: a sealed payload pushed to a group's stakeholders before its chain
# transaction, and (BLS mode) a stakeholder's vote share; core NATS, ciphertext and roots only.
PRIVTX_PAYLOAD = "privtx.payload.{group}"
PRIVTX_VOTE = "privtx.vote.{group}"
# Dead letters: the original subject behind this prefix.
DLQ_PREFIX = "dlq."

STREAMS: dict[str, dict] = {
    # name: subjects, and how long messages stay
    # intents and progress are plain messages: not kept, and an intent's reply is the share
    "LOOKUPS": {
        "subjects": ["lookup.requested.*", "lookup.share.*", "lookup.result.*"],
        "max_age_s": 24 * 3600,
    },
    "TRANSPORTS": {"subjects": ["transport.>"], "max_age_s": None},
    "DLQ": {"subjects": ["dlq.>"], "max_age_s": 14 * 24 * 3600},
    "RECORDS": {"subjects": ["records.kfrag.>"], "max_age_s": 30 * 24 * 3600},
    "PSI": {"subjects": ["psi.round.>"], "max_age_s": 3600},
    "LISTS": {"subjects": ["lists.>"], "max_age_s": 7 * 24 * 3600},
    "ANALYTICS": {
        "subjects": ["analytics.input.>", "analytics.check.>"],
        "max_age_s": 30 * 24 * 3600,
    },
}

DUPLICATE_WINDOW_S = 15 * 60


def dlq(subject: str) -> str:
    return DLQ_PREFIX + subject


def catalogue() -> dict[str, str]:
    """Subject pattern -> the message type that travels on it (for docs and the AsyncAPI file)."""
    return {
        TRANSPORT_SHARE: "transport.share",
        LOOKUP_REQUESTED: "lookup.requested",
        LOOKUP_INTENT: "lookup.intent",
        LOOKUP_LEFT: "lookup.left",
        LOOKUP_SHARE: "lookup.share",
        LOOKUP_REPLY: "lookup.share",
        LOOKUP_PROGRESS: "lookup.progress",
        LOOKUP_RESULT: "lookup.result",
        RECORDS_KFRAG: "records.kfrag",
        RECORDS_ACCESS: "records.access",
        DEDUP_PROGRESS: "dedup.progress",
        PSI_ROUND: "psi.round",
        PSI_START: "psi.start",
        LISTS_INVITE: "lists.invite",
        LISTS_ACCEPT: "lists.accept",
        LISTS_ROSTER: "lists.roster",
        LISTS_BIDS: "lists.bids",
        ANALYTICS_INPUT: "analytics.input",
        ANALYTICS_CHECK: "analytics.check",
        PRIVTX_PAYLOAD: "privtx.payload",
        PRIVTX_VOTE: "privtx.vote",
    }
