// What a scanned or typed text asks for: a transport (with its UN number when the label says),
// or a UN number alone.

const TRANSPORT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function normaliseUn(text) {
  const m = /^(?:UN)?\s*(\d{4})$/i.exec(text.trim());
  return m ? `UN${m[1]}` : null;
}

export function parseTarget(raw) {
  const text = (raw ?? "").trim();
  if (!text) return { error: "Type a transport id (as on the label, e.g. TR-100001) or a UN number." };
  // shardline:TR-100001?un=UN1203
  let m = /^shardline:([^?#\s]+)(?:\?(.*))?$/i.exec(text);
  if (m) {
    const params = new URLSearchParams(m[2] ?? "");
    return checked(decodeURIComponent(m[1]), params.get("un"));
  }
  // https://gateway/#t=TR-100001&un=UN1203 (a label made with --url)
  if (/^https?:\/\//i.test(text)) {
    try {
      const url = new URL(text);
      const params = new URLSearchParams(url.hash.replace(/^#/, "") || url.search);
      if (params.get("t")) return checked(params.get("t"), params.get("un"));
    } catch {
      /* not a URL after all */
    }
    return { error: "This code is not a shardline label. Type the transport id printed on the label." };
  }
  const un = normaliseUn(text);
  if (un) return { un };
  return checked(text.toUpperCase(), null);
}

function checked(transportId, un) {
  if (!TRANSPORT.test(transportId ?? "")) {
    return { error: `"${transportId}" is not a transport id. Check the id printed on the label.` };
  }
  return { transportId, un: un ? normaliseUn(un) : null };
}
