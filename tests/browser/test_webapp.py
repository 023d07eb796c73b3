"""The responders' web app in a real browser against a real local stack.

Debian's Chromium, headless, loads the app from the gateway, signs in with the stack's API key,
reads a QR label that `shardline label` made (as a photo), follows the lookup's live events and
reads the sheet; then the 403, 404 and 504 answers, the app with the network cut, and the
installable-app basics.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, expect

from shardline import gateways, stack
from shardline.core.cargo import CargoSheet
from shardline.lookup_client import api_key, base_url
from tests.browser.conftest import launch, off_loop

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def target(sample_sheets) -> CargoSheet:
    return sample_sheets[2]


@pytest.fixture(scope="module")
def label_png(target, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("label") / "label.png"
    subprocess.run(
        [sys.executable, "-m", "shardline", "label", target.transport_id, "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def new_context(browser: Browser, width: int = 360, height: int = 740) -> BrowserContext:
    ctx = browser.new_context(viewport={"width": width, "height": height}, service_workers="allow")
    ctx.set_default_timeout(TIMEOUT_MS)
    return ctx


def sign_in(page: Page, cfg, responder: str = "responder") -> None:
    page.goto(base_url(cfg) + "/")
    expect(page.locator("#signin")).to_be_visible()
    page.get_by_label("Responder key").fill(api_key(cfg, responder))
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#find")).to_be_visible()
    expect(page.locator("#who")).to_have_text(f"Signed in: {responder}")


def look_up_typed(page: Page, text: str) -> None:
    page.get_by_label("Or type the transport id or UN number").fill(text)
    page.get_by_role("button", name="Look up").click()


def unnamed_controls(page: Page) -> tuple[list[str], set[str]]:
    """Every rendered button and input without an accessible name, as Chromium computes it;
    and the controls that were checked (ids or text)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("Accessibility.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    found = cdp.send(
        "DOM.querySelectorAll",
        {"nodeId": root, "selector": "button, input, select, textarea, a[href], video"},
    )["nodeIds"]
    unnamed, checked = [], set()
    for node_id in found:
        ax = cdp.send(
            "Accessibility.getPartialAXTree", {"nodeId": node_id, "fetchRelatives": False}
        )
        node = ax["nodes"][0]
        if node.get("ignored"):
            continue  # not rendered in this view; checked in the view that shows it
        attrs = cdp.send("DOM.describeNode", {"nodeId": node_id})["node"].get("attributes", [])
        ident = dict(zip(attrs[::2], attrs[1::2], strict=True)).get("id") or node["name"].get(
            "value", "?"
        )
        checked.add(ident)
        if not node.get("name", {}).get("value", "").strip():
            unnamed.append(f"{node['role']['value']} {ident}")
    cdp.detach()
    return unnamed, checked


def test_scan_a_label_photo_and_read_the_sheet(chromium, live_stack, target, label_png, artifacts):
    ctx = new_context(chromium)
    page = ctx.new_page()
    sign_in(page, live_stack)

    page.locator("#photo").set_input_files(str(label_png))

    events = page.locator("#events li")
    expect(page.locator('#events li[data-event="result"]')).to_have_count(1)
    kinds = [e.get_attribute("data-event") for e in events.all()]
    assert kinds[:2] == ["asking", "accepted"], kinds
    assert kinds[-1] == "result" and kinds.count("share") >= 2, kinds
    expect(page.locator('#events li[data-event="share"]').first).to_contain_text("Share from org")

    sheet = page.locator("#sheet")
    expect(sheet.locator(".facts")).to_contain_text(target.transport_id)
    expect(page.locator("#sheet-un")).to_have_text(target.un_number)
    expect(sheet.locator(".psn")).to_have_text(target.proper_shipping_name)
    expect(page.locator("#sheet-do li")).to_have_text(list(target.do))
    expect(page.locator("#sheet-never li")).to_have_text(list(target.never))
    expect(page.locator("#sheet-isolate")).to_contain_text(f"{target.isolate_m} m")
    phone = "".join(c for c in target.emergency_contact.phone if c.isdigit() or c == "+")
    expect(page.locator("#sheet-call")).to_have_attribute("href", f"tel:{phone}")
    expect(page.get_by_role("img", name=f"Hazard class {target.hazard_class}")).to_be_visible()
    assert not page.locator("#problem").is_visible()

    # The sheet as the responder sees it on arrival (it takes the focus), and the whole page.
    for width, height in ((360, 740), (1280, 800)):
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate("document.getElementById('sheet').scrollIntoView()")
        page.screenshot(path=str(artifacts / f"sheet-{width}x{height}.png"))
        page.screenshot(path=str(artifacts / f"page-{width}x{height}-full.png"), full_page=True)
    # Nothing is wider than the phone's screen at 360 px.
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    ctx.close()


def camera_video(label: Path, out: Path) -> Path:
    """A Y4M video of the label held in front of the camera, for Chromium's fake camera."""
    w, h = 640, 480
    frame = Image.new("RGB", (w, h), (90, 90, 90))
    img = Image.open(label).convert("RGB")
    img.thumbnail((560, 400))
    frame.paste(img, ((w - img.width) // 2, (h - img.height) // 2))
    y, cb, cr = frame.convert("YCbCr").split()
    planes = (
        y.tobytes() + cb.resize((w // 2, h // 2)).tobytes() + cr.resize((w // 2, h // 2)).tobytes()
    )
    out.write_bytes(
        f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode() + (b"FRAME\n" + planes) * 5
    )
    return out


def test_scan_a_label_with_the_camera(playwright, live_stack, target, label_png, tmp_path):
    video = camera_video(label_png, tmp_path / "label.y4m")
    browser = launch(playwright, f"--use-file-for-fake-video-capture={video}")
    try:
        ctx = new_context(browser)
        page = ctx.new_page()
        sign_in(page, live_stack)
        page.get_by_role("button", name="Scan label with camera").click()
        expect(page.locator('#events li[data-event="result"]')).to_have_count(1)
        expect(page.locator("#sheet .facts")).to_contain_text(target.transport_id)
        expect(page.locator("#sheet-un")).to_have_text(target.un_number)
        expect(page.locator("#camera")).to_be_hidden()  # the camera stops once a code is read
    finally:
        browser.close()


def test_recent_lookups_are_encrypted_on_the_device_and_wiped_at_sign_out(
    chromium, live_stack, sample_sheets
):
    wanted = sample_sheets[4]
    ctx = new_context(chromium)
    page = ctx.new_page()
    sign_in(page, live_stack)
    look_up_typed(page, wanted.transport_id)
    expect(page.locator("#sheet .facts")).to_contain_text(wanted.transport_id)
    expect(page.locator("#recent-list button")).to_have_count(1)
    expect(page.locator("#recent-list button")).to_contain_text(wanted.transport_id)

    stored = page.evaluate(
        """async () => {
          const db = await new Promise((ok, no) => {
            const r = indexedDB.open("shardline"); r.onsuccess = () => ok(r.result); r.onerror = no;
          });
          const get = (store, fn) => new Promise((ok) => {
            const q = fn(db.transaction(store).objectStore(store)); q.onsuccess = () => ok(q.result);
          });
          const key = await get("keys", (s) => s.get("recent"));
          const rows = await get("recent", (s) => s.getAll());
          let exported = "refused";
          try { await crypto.subtle.exportKey("raw", key); exported = "exported"; } catch {}
          db.close();
          return {
            algorithm: key.algorithm.name, extractable: key.extractable, exported,
            records: rows.map((r) => Array.from(r.ct)),
          };
        }"""
    )
    assert stored["algorithm"] == "AES-GCM"
    assert stored["extractable"] is False and stored["exported"] == "refused"
    assert len(stored["records"]) == 1
    blob = bytes(stored["records"][0])
    for clear in (wanted.transport_id, wanted.un_number, wanted.emergency_contact.phone):
        assert clear.encode() not in blob

    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#signin-error")).to_contain_text("Recent lookups were wiped")
    expect(page.locator("#recent")).to_be_hidden()
    names = page.evaluate("async () => (await indexedDB.databases()).map((d) => d.name)")
    assert "shardline" not in names
    assert page.evaluate("sessionStorage.length") == 0
    ctx.close()


def test_an_unknown_key_cannot_sign_in(chromium, live_stack):
    ctx = new_context(chromium)
    page = ctx.new_page()
    page.goto(base_url(live_stack) + "/")
    page.get_by_label("Responder key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_contain_text("This key was not accepted")
    expect(page.locator("#find")).to_be_hidden()
    ctx.close()


def test_an_unregistered_transport_says_not_registered(chromium, live_stack):
    ctx = new_context(chromium)
    page = ctx.new_page()
    sign_in(page, live_stack)
    look_up_typed(page, "TR-999999")
    expect(page.locator("#problem-title")).to_have_text("Not registered")
    expect(page.locator("#problem-text")).to_have_text(
        "No transport TR-999999 is registered; check the id on the label."
    )
    expect(page.locator("#sheet")).to_be_hidden()
    ctx.close()


def test_a_requester_without_the_role_is_told_not_authorised(chromium, live_stack, sample_sheets):
    ctx = new_context(chromium)
    page = ctx.new_page()
    sign_in(page, live_stack, responder="visitor")
    look_up_typed(page, sample_sheets[1].transport_id)
    expect(page.locator("#problem-title")).to_have_text("Not authorised")
    expect(page.locator("#problem-text")).to_contain_text("requester not authorised")
    expect(page.locator("#sheet")).to_be_hidden()
    ctx.close()


def test_too_few_companies_online_names_who_answered(chromium, live_stack, sample_sheets):
    ctx = new_context(chromium)
    page = ctx.new_page()
    sign_in(page, live_stack)
    others = ["node-org2", "node-org3", "node-org4"]
    for name in others:
        off_loop(stack.stop, live_stack.run_dir, name)
    try:
        look_up_typed(page, sample_sheets[15].transport_id)
        expect(page.locator("#problem-title")).to_have_text("Not enough companies online")
    finally:
        off_loop(stack.start_workers, live_stack, others)
    expect(page.locator("#problem-text")).to_contain_text("needs 2 companies; 1 answered in time")
    expect(page.locator("#problem-orgs")).to_have_text(
        "Answered: org1. No answer: org2, org3, org4."
    )
    expect(page.locator('#events li[data-event="error"]')).to_have_text("Stopped (504)")
    ctx.close()


def test_the_app_opens_with_the_network_cut(chromium, live_stack, sample_sheets):
    wanted = sample_sheets[6]
    ctx = new_context(chromium)
    page = ctx.new_page()
    sign_in(page, live_stack)
    look_up_typed(page, wanted.transport_id)
    expect(page.locator("#sheet .facts")).to_contain_text(wanted.transport_id)
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    page.wait_for_function("navigator.serviceWorker.controller !== null")

    ctx.set_offline(True)
    page.reload()
    expect(page.locator("h1")).to_have_text("Cargo sheet")
    expect(page.locator("#offline")).to_be_visible()
    expect(page.locator("#find")).to_be_visible()
    # The saved lookup opens with no signal.
    page.locator("#recent-list button").first.click()
    expect(page.locator("#sheet-un")).to_have_text(wanted.un_number)
    expect(page.locator("#sheet .note")).to_contain_text("Saved on this device")
    # A UN number alone gives the public guide, from the cached table.
    look_up_typed(page, wanted.un_number.removeprefix("UN"))
    expect(page.locator("#sheet-un")).to_have_text(wanted.un_number)
    expect(page.locator("#sheet-do li")).to_have_text(list(wanted.do))
    # A new sheet needs the network, and the app says so.
    look_up_typed(page, sample_sheets[7].transport_id)
    expect(page.locator("#problem-title")).to_have_text("No signal")

    ctx.set_offline(False)
    page.reload()
    expect(page.locator("#offline")).to_be_hidden()
    ctx.close()


def test_installable_app_basics_and_accessible_names(chromium, live_stack, sample_sheets):
    ctx = new_context(chromium)
    page = ctx.new_page()
    page.goto(base_url(live_stack) + "/")
    expect(page.locator("#signin")).to_be_visible()

    viewport = page.locator('meta[name="viewport"]').get_attribute("content")
    assert "width=device-width" in viewport and "initial-scale=1" in viewport
    href = page.locator('link[rel="manifest"]').get_attribute("href")
    manifest = page.request.get(base_url(live_stack) + href)
    assert manifest.ok and "manifest+json" in manifest.headers["content-type"]
    m = manifest.json()
    assert m["start_url"] == "/" and m["display"] == "standalone" and m["name"]
    sizes = {i["sizes"] for i in m["icons"]}
    assert {"192x192", "512x512"} <= sizes
    for icon in m["icons"]:
        assert page.request.get(base_url(live_stack) + icon["src"]).ok, icon["src"]
    scope = page.evaluate(
        "navigator.serviceWorker.ready.then((r) => r.active && r.active.scriptURL && r.scope)"
    )
    assert scope == base_url(live_stack) + "/"
    assert page.evaluate("document.documentElement.lang") == "en"

    problems, checked = unnamed_controls(page)  # the sign-in view
    page.get_by_label("Responder key").fill(api_key(live_stack))
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#find")).to_be_visible()
    page.get_by_role("button", name="Scan label with camera").click()  # Chromium's fake camera
    expect(page.locator("#camera")).to_be_visible()
    more, seen = unnamed_controls(page)  # the search view with the camera open
    problems += more
    checked |= seen
    page.get_by_role("button", name="Stop camera").click()
    look_up_typed(page, sample_sheets[8].transport_id)
    expect(page.locator("#recent-list button")).to_have_count(1)
    more, seen = unnamed_controls(page)  # the sheet and the recent lookups
    problems += more
    checked |= seen
    assert problems == []
    expected = {"apikey", "signout", "scan-camera", "photo", "typed", "camera-stop", "video"}
    assert expected <= checked, expected - checked
    assert "sheet-call" in checked

    # Large touch targets: every visible button at least 44 x 44 CSS px.
    small = page.evaluate(
        """() => [...document.querySelectorAll('button, .button, a.call')]
              .filter((b) => b.offsetParent !== null)
              .map((b) => [b.textContent.trim(), b.getBoundingClientRect()])
              .filter(([, r]) => r.width < 44 || r.height < 44).map(([t]) => t)"""
    )
    assert small == []
    ctx.close()


def test_the_served_shell_is_the_committed_build(live_stack):
    """What the gateway serves is the built file in the package (no Node at run time)."""
    import httpx

    static = Path(__file__).resolve().parents[2] / "shardline" / "webapp" / "static"
    with httpx.Client(base_url=base_url(live_stack)) as c:
        for url, file in [
            ("/", "index.html"),
            ("/sw.js", "sw.js"),
            ("/static/app.js", "app.js"),
            ("/static/guides.json", "guides.json"),
        ]:
            r = c.get(url)
            assert r.status_code == 200, url
            assert r.content == (static / file).read_bytes(), url
        assert r.headers["content-type"].startswith("application/json")
        assert json.loads(r.content)["UN1203"]["erg_guide"]
        who = c.get("/session", headers={"Authorization": f"Bearer {api_key(live_stack)}"})
        assert who.json() == {"responder": "responder", "gateways": [base_url(live_stack)]}
        assert c.get("/session").status_code == 401


@pytest.fixture(scope="module")
def two_gateways(tmp_path_factory, sample_sheets):
    """A stack of its own with two gateways, so that one can be stopped without the others'."""
    from shardline import loadgen

    run_dir = tmp_path_factory.mktemp("two-gateways")
    cfg = off_loop(
        lambda: loadgen.start_sample_stack(
            run_dir, sample_sheets[:2], deadline_s=2.0, gateway_count=2
        )
    )
    yield cfg
    off_loop(lambda: stack.down(run_dir, say=lambda _m: None))


def test_the_app_asks_the_next_gateway_when_its_own_is_down(chromium, two_gateways, sample_sheets):
    cfg, target = two_gateways, sample_sheets[0]
    first, second = gateways.urls(cfg)
    ctx = new_context(chromium)
    page = ctx.new_page()
    sign_in(page, cfg)  # the page comes from the first gateway
    stored = page.evaluate("sessionStorage.getItem('shardline.gateways')")
    assert json.loads(stored) == [first, second]

    off_loop(stack.stop, cfg.run_dir, "gateway")
    look_up_typed(page, target.transport_id)
    expect(page.locator("#sheet-un")).to_have_text(target.un_number)
    expect(page.locator("#sheet .facts")).to_contain_text(target.transport_id)
    expect(page.locator('#events li[data-event="failover"]')).to_have_text(
        f"No answer from {urlsplit(first).netloc}; asking {urlsplit(second).netloc}"
    )
    assert not page.locator("#problem").is_visible()

    # Only the deployment's own pages may ask across origins; a stranger's page may not.
    for origin, allowed in ((first, True), ("http://stranger.example", False)):
        with httpx.Client() as client:
            pre = client.options(
                f"{second}/lookups",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
        assert (pre.headers.get("access-control-allow-origin") == origin) is allowed, pre.headers
    ctx.close()
