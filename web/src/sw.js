// The web app's service worker: keeps the app's own files so it opens offline. Network first
// (a new build is picked up as soon as the server is reached), the cache when it is not. Only the
// app's files: the API and the WebSocket are never cached (record content lives in the
// automerge-repo IndexedDB database, not here).
const CACHE = "casenote-app-1";
const FILES = ["./", "./index.html", "./app.js", "./app.css"];

self.addEventListener("install", e => {
  e.waitUntil(caches.open(CACHE).then(c => c.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", e => {
  e.waitUntil(self.clients.claim());
});

self.addEventListener("fetch", e => {
  const url = new URL(e.request.url);
  if (e.request.method !== "GET" || url.origin !== location.origin || !url.pathname.startsWith("/app/")) return;
  e.respondWith(
    fetch(e.request)
      .then(r => {
        if (r.ok) {
          const copy = r.clone();
          caches.open(CACHE).then(c => c.put(e.request, copy));
        }
        return r;
      })
      .catch(() => caches.match(e.request, { ignoreSearch: true })),
  );
});
