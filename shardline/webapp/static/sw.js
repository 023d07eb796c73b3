// The service worker: keeps the app shell so that the app opens with no signal.
// Lookups (/lookups, /session) always go to the network: a sheet is never cached here.
const VERSION = "3a781e79514646b3";
const SHELL = ["/","/manifest.webmanifest","/static/app.js","/static/app.css","/static/guides.json","/static/icons/icon.svg","/static/icons/icon-192.png","/static/icons/icon-512.png"];
const CACHE = `shardline-shell-${VERSION}`;

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL.map((url) => new Request(url, { cache: "reload" }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n.startsWith("shardline-shell-") && n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  const path = url.pathname;
  if (!SHELL.includes(path)) return;
  // Shell first from the cache (a weak signal must not delay the app), refreshed in the
  // background when the network answers.
  event.respondWith(
    caches.open(CACHE).then(async (cache) => {
      const cached = await cache.match(path);
      const fresh = fetch(path, { cache: "no-cache" })
        .then((res) => {
          if (res.ok) cache.put(path, res.clone());
          return res;
        })
        .catch(() => undefined);
      if (cached) {
        event.waitUntil(fresh);
        return cached;
      }
      return (await fresh) ?? new Response("offline and not cached", { status: 503 });
    }),
  );
});
