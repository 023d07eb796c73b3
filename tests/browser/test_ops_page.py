"""The ops page in a real browser: an operator sees the workers healthy, sees an org node go down
within 5 s of stopping it, and sees a served share with no chain request highlighted; a
responder's key is refused."""

from __future__ import annotations

import asyncio
import secrets

import nats
import pytest
from eth_account import Account
from playwright.sync_api import Page, expect

from shardline import stack
from shardline.bus import envelope
from shardline.config import AUDIT_AFTER
from shardline.core import ids
from shardline.core.keys import ParticipantKeys
from shardline.lookup_client import api_key, base_url
from shardline.ops.snapshot import expected_workers
from tests.browser.conftest import off_loop
from tests.conftest import start_stack

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 30_000
GOES_DOWN_WITHIN_MS = 5_000


@pytest.fixture(scope="module")
def ops_stack(tmp_path_factory, sample_sheets):
    """An audit-after stack of its own: its nodes serve on a signed intent before the chain, so a
    request that never reaches the chain leaves an unmatched served share; and stopping its
    nodes disturbs no other test."""
    run_dir = tmp_path_factory.mktemp("stack-ops")
    cfg = start_stack(run_dir, sample_sheets[:4], policy=AUDIT_AFTER)
    yield cfg
    stack.down(run_dir, say=lambda _m: None)


def forge_off_chain_request(cfg, sheet) -> str:
    """What a misbehaving gateway would do: ask the nodes with no chain transaction."""
    gw = ParticipantKeys.load(cfg.gateway.key_file)
    responder = Account.from_key(ParticipantKeys.load(cfg.gateway.responders[0].key_file).chain_key)
    guid = secrets.token_hex(16)
    body = {
        "guid": guid,
        "transport_key": ids.transport_key(sheet.transport_id).hex(),
        "ephemeral_pk": secrets.token_hex(32),
        "requester": responder.address,
    }

    async def go():
        nc = await nats.connect(cfg.nats_url)
        # a plain message without a reply subject, as an off-the-record gateway would send it
        # (to every org: it names none, so all serve)
        intent = envelope.make("lookup.intent", body, gw).to_bytes()
        for org in cfg.orgs:
            await nc.publish(f"lookup.intent.{org.id}.{guid}", intent)
        await nc.flush()
        await nc.close()

    asyncio.run(go())
    return guid


def sign_in(page: Page, cfg, who: str, query: str = "") -> None:
    page.goto(base_url(cfg) + "/ops" + query)
    page.get_by_label("Operator API key").fill(api_key(cfg, who))
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def page(playwright, chromium):
    ctx = chromium.new_context(viewport={"width": 1280, "height": 1000})
    ctx.set_default_timeout(TIMEOUT_MS)
    p = ctx.new_page()
    yield p
    ctx.close()


def test_a_responder_key_is_refused(ops_stack, page):
    sign_in(page, ops_stack, "responder")
    refused = page.locator("#refused")
    expect(refused).to_be_visible()
    expect(refused).to_have_attribute("data-status", "403")
    expect(refused).to_contain_text("operator")
    expect(page.locator("#console")).to_be_hidden()


def test_operator_sees_health_a_node_going_down_and_unmatched_shares(
    ops_stack, page, sample_sheets, artifacts
):
    cfg = ops_stack
    guid = off_loop(forge_off_chain_request, cfg, sample_sheets[1])
    sign_in(page, cfg, "operator", "?grace=0")
    expect(page.locator("#who")).to_have_text("signed in as operator")
    expect(page.locator("#banner")).to_have_text(
        f"All {len(expected_workers(cfg))} workers healthy"
    )
    for name in expected_workers(cfg):
        expect(page.locator(f'#workers tr[data-worker="{name}"]')).to_have_attribute(
            "data-up", "true"
        )

    # the forged request: every node served it, nothing on chain -> highlighted rows
    unmatched = page.locator(f'#audit tr.unmatched[data-guid="{guid}"]')
    expect(unmatched).to_have_count(4)
    expect(unmatched.first.locator("td.status")).to_have_text("not_on_chain")
    colour = unmatched.first.locator("td").first.evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    assert colour == "rgb(253, 226, 225)"
    expect(page.locator("#audit-summary")).to_contain_text("4 unmatched")
    # filtered by org, only that org's row stays
    page.locator("#filters [name=org]").fill("org2")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(f'#audit tr[data-guid="{guid}"]')).to_have_count(1)
    page.screenshot(path=str(artifacts / "ops-healthy-unmatched.png"), full_page=True)

    stack.stop(cfg.run_dir, "node-org3")
    try:
        # polled by the page: down within 5 s of the stop, or the wait fails
        expect(page.locator('#workers tr[data-worker="share-node.org3"]')).to_have_attribute(
            "data-up", "false", timeout=GOES_DOWN_WITHIN_MS
        )
        expect(page.locator("#banner")).to_contain_text("share-node.org3")
        expect(page.locator('#workers tr[data-worker="share-node.org2"]')).to_have_attribute(
            "data-up", "true"
        )
        expect(page.locator('#intake tr[data-org="org3"] .down')).to_be_visible()
        page.screenshot(path=str(artifacts / "ops-org3-down.png"), full_page=True)
    finally:
        off_loop(stack.start_workers, cfg, ["node-org3"])
    expect(page.locator("#banner")).to_have_text(
        f"All {len(expected_workers(cfg))} workers healthy"
    )
