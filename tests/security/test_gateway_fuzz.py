"""The gateway's HTTP API under schemathesis: whatever a client sends, no answer is a 500.

Every operation of its OpenAPI document gets generated requests, valid and invalid ones, with the
responder's API key (so that the handlers behind authentication run too) and without one.
(schemathesis's pytest plugin does not load under pytest 9, so the operations' hypothesis
strategies are driven directly.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from shardline.lookup_client import api_key, base_url

pytestmark = pytest.mark.e2e


def test_no_request_makes_the_gateway_fail(live_stack):
    url = base_url(live_stack)
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/lookups" for op in operations)
    keyed = {"Authorization": f"Bearer {api_key(live_stack)}"}
    tried: list[str] = []
    for op in operations:
        cases = st.one_of(
            op.as_strategy(generation_mode=GenerationMode.POSITIVE),
            op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @given(case=cases, with_key=st.booleans())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
        def no_500(case, with_key: bool) -> None:
            case.call_and_validate(
                base_url=url,
                headers=keyed if with_key else {},
                checks=[not_a_server_error],
                timeout=30,
            )

        no_500()
        tried.append(f"{op.method.upper()} {op.path}")
    assert len(tried) == len(operations) >= 3, tried
