// The responder's app: sign in, scan or type, follow the lookup live, read the sheet.
import { $, h } from "./dom.js";
import { parseTarget } from "./parse.js";
import { decodeFile, scanVideo } from "./scan.js";
import { renderSheet } from "./sheet.js";
import { readEvents } from "./sse.js";
import * as vault from "./vault.js";

const KEY = "shardline.key";
const WHO = "shardline.responder";
const GATEWAYS = "shardline.gateways";
let guides = null;
let stopScan = null;
let stream = null;
let current = 0; // the lookup on screen; an older one still streaming must not touch the page

const auth = () => ({ Authorization: `Bearer ${sessionStorage.getItem(KEY)}` });
const cap = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);
const hostOf = (base) => (base ? new URL(base).host : location.host);

// The gateways to ask, this page's own first; the others (given at sign-in) when it does not
// answer. Each one asked is a new lookup there, authorised and audited on its own.
function gatewayBases() {
  let others = [];
  try {
    others = JSON.parse(sessionStorage.getItem(GATEWAYS) ?? "[]");
  } catch {
    others = [];
  }
  return ["", ...others.filter((url) => url !== location.origin)];
}
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

async function loadGuides() {
  if (!guides) {
    try {
      guides = await (await fetch("/static/guides.json")).json();
    } catch {
      guides = {};
    }
  }
  return guides;
}

// ---- views ------------------------------------------------------------------------------------
function showSignIn(message = "") {
  for (const id of ["find", "progress", "problem", "sheet", "recent", "signout", "who"]) $(id).hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("apikey").focus();
}

async function showSignedIn() {
  $("signin").hidden = true;
  $("find").hidden = false;
  $("signout").hidden = false;
  $("who").hidden = false;
  $("who").textContent = `Signed in: ${sessionStorage.getItem(WHO)}`;
  await refreshRecent();
}

function clearResult() {
  $("problem").hidden = true;
  $("sheet").hidden = true;
  $("progress").hidden = true;
  $("events").replaceChildren();
  $("progress-summary").textContent = "Getting the sheet";
  $("progress-details").open = true;
  $("scan-msg").textContent = "";
}

function problem(title, text, orgs = "") {
  $("problem-title").textContent = title;
  $("problem-text").textContent = text;
  $("problem-orgs").textContent = orgs;
  $("problem-orgs").hidden = !orgs;
  $("problem").hidden = false;
}

function netState() {
  $("offline").hidden = navigator.onLine;
}

// ---- sign in / out ----------------------------------------------------------------------------
async function signIn(event) {
  event.preventDefault();
  const key = $("apikey").value.trim();
  if (!key) {
    $("signin-error").textContent = "Enter your responder key.";
    return;
  }
  let res;
  try {
    res = await fetch("/session", { headers: { Authorization: `Bearer ${key}` } });
  } catch {
    $("signin-error").textContent = "No connection to the gateway. Signing in needs a signal.";
    return;
  }
  if (res.status === 401) {
    $("signin-error").textContent = "This key was not accepted. Check it, or ask your control room for a new one.";
    return;
  }
  if (!res.ok) {
    $("signin-error").textContent = `The gateway could not sign you in (status ${res.status}). Try again.`;
    return;
  }
  const { responder, gateways = [] } = await res.json();
  await vault.wipe();
  await vault.createKey();
  sessionStorage.setItem(KEY, key);
  sessionStorage.setItem(WHO, responder);
  sessionStorage.setItem(GATEWAYS, JSON.stringify(gateways));
  $("apikey").value = "";
  $("signin-error").textContent = "";
  await showSignedIn();
  $("scan-camera").focus();
  if (location.hash.includes("t=")) go(location.href);
}

async function signOut(message = "") {
  current += 1;
  stopCamera();
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(WHO);
  sessionStorage.removeItem(GATEWAYS);
  await vault.wipe();
  clearResult();
  $("recent-list").replaceChildren();
  showSignIn(message);
}

// ---- recent lookups ---------------------------------------------------------------------------
async function refreshRecent() {
  let items = [];
  try {
    items = await vault.list();
  } catch {
    items = [];
  }
  $("recent-list").replaceChildren(
    ...items.map(({ sheet, at }) =>
      h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            onclick: () => {
              current += 1;
              clearResult();
              renderSheet($("sheet"), sheet, { note: `Saved on this device at ${clock(at)}; look it up again for the latest sheet.` });
              $("sheet").focus();
            },
          },
          `${sheet.transport_id} · ${sheet.un_number} ${sheet.proper_shipping_name} · ${clock(at)}`,
        ),
      ),
    ),
  );
  $("recent").hidden = items.length === 0;
}

// ---- the lookup -------------------------------------------------------------------------------
function eventText(e) {
  switch (e.event) {
    case "accepted":
      return `Request accepted: ${e.threshold} of ${e.orgs.length} companies needed`;
    case "on_chain":
      return `Recorded on chain in block ${e.block}`;
    case "share":
      return `Share from ${e.org} received and checked`;
    case "bad_share":
      return `Bad share from ${e.org}, not used: ${e.detail ?? ""}`;
    case "late_share":
      return `Late share from ${e.org} (not needed)`;
    case "chain_failed":
      return `The chain transaction failed: ${e.detail ?? ""}`;
    case "result":
      return `Sheet rebuilt from ${e.used_orgs.join(", ")} in ${Math.round(e.elapsed_ms)} ms`;
    case "error":
      return `Stopped (${e.status})`;
    case "failover":
      return `No answer from ${e.from}; asking ${e.to}`;
    default:
      return e.event;
  }
}

function addEvent(e) {
  $("events").append(h("li", { "data-event": e.event, class: e.event === "bad_share" || e.event === "error" ? "bad" : "" }, eventText(e)));
}

function failed(status, body, id) {
  const detail = cap(body.detail ?? "");
  if (status === 401) {
    signOut("Your key is no longer accepted. Sign in again.");
  } else if (status === 403) {
    problem("Not authorised", `${detail}. Ask your control room to check that your sign-in has the responder role.`);
  } else if (status === 404) {
    problem("Not registered", `${detail}.`);
  } else if (status === 422) {
    problem("Not a transport id", `${detail}.`);
  } else if (status === 504) {
    const answered = body.answered ?? [];
    const bad = Object.keys(body.bad ?? {});
    const missing = body.missing ?? [];
    problem(
      "Not enough companies online",
      `The sheet of ${id} needs ${body.needed ?? "more"} companies; ${answered.length} answered in time. Try again in a minute, or call the carrier.`,
      [`Answered: ${answered.join(", ") || "none"}.`, bad.length ? `Sent a bad share: ${bad.join(", ")}.` : "", `No answer: ${missing.join(", ") || "none"}.`]
        .filter(Boolean)
        .join(" "),
    );
  } else if (status === 502) {
    problem("The sheet could not be rebuilt", `${detail}.`);
  } else {
    problem("The lookup failed", `The gateway answered ${status}${detail ? `: ${detail}` : ""}.`);
  }
}

async function go(text) {
  current += 1;
  stopCamera();
  clearResult();
  const target = parseTarget(text);
  if (target.error) {
    problem("Not a transport label", target.error);
    return;
  }
  const guide = target.un ? (await loadGuides())[target.un] : null;
  if (!target.transportId) {
    if (guide) {
      renderSheet($("sheet"), guide, {
        guideOnly: true,
        note: `Public guide for ${guide.un_number}. For this transport's load and emergency contact, scan its label or type its transport id.`,
      });
    } else problem("Unknown UN number", `${target.un} is not in this app's table. Check the number on the orange plate.`);
    return;
  }
  await lookup(target.transportId, guide, current);
}

// One gateway's answer: { outcome } (the sheet or the lookup's own error), { refused } (the
// request itself was refused: 401, 403, 404, 422), or {} when the gateway is down: no answer,
// an error from what stands in front of it (502, 503, 504), or the lookup gone (404) because
// the gateway restarted while it was followed.
async function askGateway(base, id, stale) {
  let res;
  try {
    res = await fetch(`${base}/lookups`, {
      method: "POST",
      headers: { ...auth(), "Content-Type": "application/json" },
      body: JSON.stringify({ transport_id: id }),
    });
  } catch {
    return {};
  }
  if (stale() || [502, 503, 504].includes(res.status)) return {};
  if (res.status !== 202) return { refused: { status: res.status, body: await res.json().catch(() => ({})) } };
  const accepted = await res.json();
  try {
    const events = await fetch(base + accepted.events, { headers: auth() });
    if (events.ok) {
      for await (const e of readEvents(events)) {
        if (stale()) return {};
        addEvent(e);
        if (e.event === "result" || e.event === "error") return { outcome: e };
      }
    }
  } catch {
    // the stream broke: the outcome is asked for below
  }
  try {
    const r = await fetch(base + accepted.result, { headers: auth() });
    if (r.status === 404 || [502, 503].includes(r.status)) return {};
    return { outcome: { status: r.status, ...(await r.json()) } };
  } catch {
    return {};
  }
}

async function lookup(id, guide, mine) {
  const stale = () => mine !== current;
  const sheet = $("sheet");
  if (guide) {
    renderSheet(sheet, guide, { guideOnly: true, note: `Public guide for ${guide.un_number} while the sheet of ${id} loads.` });
  }
  $("progress").hidden = false;
  $("events").replaceChildren(h("li", { "data-event": "asking" }, `Asking for ${id}`));
  const offline = () =>
    problem(
      "No signal",
      `No gateway could be reached for ${id}.` + (guide ? ` The public guide for ${guide.un_number} is shown below.` : " Try again when you have a signal."),
    );
  const bases = gatewayBases();
  let outcome = null;
  for (let i = 0; i < bases.length && !outcome; i += 1) {
    if (i > 0) addEvent({ event: "failover", from: hostOf(bases[i - 1]), to: hostOf(bases[i]) });
    const asked = await askGateway(bases[i], id, stale);
    if (stale()) return;
    if (asked.refused) {
      failed(asked.refused.status, asked.refused.body, id);
      return;
    }
    outcome = asked.outcome ?? null;
  }
  if (!outcome) {
    offline();
    return;
  }
  if (outcome.status !== 200) {
    failed(outcome.status, outcome, id);
    return;
  }
  renderSheet(sheet, outcome.sheet);
  // The sheet comes first now: the steps fold into one line that can be opened again.
  $("progress-summary").textContent = eventText({ event: "result", ...outcome });
  $("progress-details").open = false;
  sheet.focus();
  try {
    await vault.save(outcome.sheet);
    await refreshRecent();
  } catch {
    $("scan-msg").textContent = "This sheet could not be saved on the device.";
  }
}

// ---- scanning ---------------------------------------------------------------------------------
function stopCamera() {
  if (stopScan) stopScan();
  stopScan = null;
  if (stream) for (const t of stream.getTracks()) t.stop();
  stream = null;
  $("camera").hidden = true;
}

async function startCamera() {
  clearResult();
  if (!navigator.mediaDevices?.getUserMedia) {
    $("scan-msg").textContent = "The camera cannot be used here (it needs a secure https page). Scan from a photo or type the id.";
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: { ideal: "environment" } }, audio: false });
  } catch (e) {
    const why = e.name === "NotAllowedError" ? "permission was refused" : "no camera was found";
    $("scan-msg").textContent = `The camera could not start: ${why}. Scan from a photo or type the id.`;
    return;
  }
  const video = $("video");
  video.srcObject = stream;
  $("camera").hidden = false;
  await video.play().catch(() => undefined);
  $("scan-msg").textContent = "Point the camera at the QR code on the label.";
  stopScan = scanVideo(video, (text) => go(text));
}

async function fromPhoto() {
  const input = $("photo");
  const file = input.files?.[0];
  if (!file) return;
  clearResult();
  $("scan-msg").textContent = "Reading the photo";
  let text = null;
  try {
    text = await decodeFile(file);
  } catch {
    text = null;
  }
  input.value = "";
  if (!text) {
    $("scan-msg").textContent = "No QR code found in this photo. Take it closer and straight on, or type the id printed on the label.";
    return;
  }
  $("scan-msg").textContent = "";
  await go(text);
}

// ---- start ------------------------------------------------------------------------------------
async function start() {
  $("sheet").tabIndex = -1;
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut("Signed out. Recent lookups were wiped from this device."));
  $("typed-form").addEventListener("submit", (e) => {
    e.preventDefault();
    go($("typed").value);
  });
  $("scan-camera").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", () => {
    stopCamera();
    $("scan-msg").textContent = "";
  });
  $("photo").addEventListener("change", fromPhoto);
  window.addEventListener("online", netState);
  window.addEventListener("offline", netState);
  netState();
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => undefined);
  if (sessionStorage.getItem(KEY)) {
    await showSignedIn();
    if (location.hash.includes("t=")) go(location.href);
  } else {
    // A session that ended without signing out leaves records whose key is gone: wipe them.
    await vault.wipe();
    showSignIn();
  }
  document.body.dataset.ready = "true";
}

start();
