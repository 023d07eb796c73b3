"""The consumer catalogue the operator creates from, and how a worker spots a consumer that is
not the one it declares."""

from __future__ import annotations

import dataclasses

from shardline.bus import credentials, streams
from shardline.bus.consumers import gateway_consumer_specs, org_consumer_specs


def test_each_org_consumer_reads_only_what_is_that_orgs():
    specs = org_consumer_specs("org7")
    assert len({s.durable for s in specs}) == len(specs)
    for s in specs:
        assert s.durable.endswith("-org7")
        for f in s.filter_subjects:
            # its own subjects, or every server's range-check values for the analytics
            assert f.endswith(".org7") or f == "analytics.check.*", (s.durable, f)
    assert [(s.stream, s.durable) for s in specs] == credentials.org_consumers("org7")
    assert [s.durable for s in gateway_consumer_specs()] == ["combiner"]


def test_a_consumer_that_differs_from_its_spec_is_named():
    spec = org_consumer_specs("org1")[0]
    assert streams.differences(spec, spec.config()) == []
    have = spec.config()
    have.filter_subjects = None
    have.filter_subject = spec.filter_subjects[0]  # how a server reports a single filter
    assert streams.differences(spec, have) == []
    other = dataclasses.replace(spec, filter_subjects=("transport.share.org2",), max_deliver=3)
    diff = streams.differences(spec, other.config())
    assert diff == [
        "filter ['transport.share.org2'], not ['transport.share.org1']",
        "max_deliver 3, not 20",
    ]
