// Recent lookups on the device, encrypted with AES-GCM under a key that lives only as long as the
// responder's session: made at sign-in (non-extractable: no script can read its bytes), deleted
// with every record at sign-out, and wiped at start-up when the session that made it is gone
// (sessionStorage is empty once the tab or the installed app is closed).

const DB = "shardline";
const MAX_RECENT = 20;

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => {
      req.result.createObjectStore("keys");
      req.result.createObjectStore("recent", { keyPath: "id", autoIncrement: true });
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function run(db, store, mode, fn) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode);
    const result = fn(tx.objectStore(store));
    tx.oncomplete = () => resolve(result && "result" in result ? result.result : undefined);
    tx.onerror = () => reject(tx.error);
  });
}

export async function wipe() {
  await new Promise((resolve) => {
    const req = indexedDB.deleteDatabase(DB);
    req.onsuccess = req.onerror = req.onblocked = () => resolve();
  });
}

export async function createKey() {
  const key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
  const db = await open();
  await run(db, "keys", "readwrite", (s) => s.put(key, "recent"));
  db.close();
}

async function key(db) {
  const k = await run(db, "keys", "readonly", (s) => s.get("recent"));
  if (!k) throw new Error("no session key: sign in again");
  return k;
}

export async function save(sheet) {
  const db = await open();
  try {
    const k = await key(db);
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const plain = new TextEncoder().encode(JSON.stringify({ sheet, at: Date.now() }));
    const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, k, plain));
    await run(db, "recent", "readwrite", (s) => s.add({ iv, ct }));
    const ids = await run(db, "recent", "readonly", (s) => s.getAllKeys());
    const old = ids.slice(0, Math.max(0, ids.length - MAX_RECENT));
    if (old.length) await run(db, "recent", "readwrite", (s) => old.forEach((id) => s.delete(id)));
  } finally {
    db.close();
  }
}

export async function list() {
  const db = await open();
  try {
    const k = await key(db);
    const rows = await run(db, "recent", "readonly", (s) => s.getAll());
    const out = [];
    for (const r of rows.reverse()) {
      const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: r.iv }, k, r.ct);
      out.push(JSON.parse(new TextDecoder().decode(plain)));
    }
    return out;
  } finally {
    db.close();
  }
}
