// The figures of issue 14: automerge-repo's own sync server (sync-server.mjs) and casenote's
// GET /v1/repo under the same JS clients (the real automerge-repo client and WebSocket adapter):
//   reconnect: a client holding 1,000 documents in its storage comes back (a new Repo on the
//     same storage, a new connection, as a reloaded page does); the time until the server has
//     answered every document with heads equal to the client's;
//   shared: 20 clients with the same 10 documents open, each making 10 edits; the latency from
//     an edit to its arrival at each of the other 19 clients (p50, p99).
// Prints a table and a JSON line. Loopback only; bounded in count and time.
// Run by scripts/web-bench (a release server). Usage: node bench/bench.mjs
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import * as A from "@automerge/automerge";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";
import { startServer, until } from "../test/harness.mjs";
import { newNote, S, PLAN_SCHEMA, signAs, str } from "../src/record.js";

const DOCS = Number(process.env.BENCH_DOCS ?? 1000);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 20);
const SHARED = Number(process.env.BENCH_SHARED ?? 10);
const EDITS = Number(process.env.BENCH_EDITS ?? 10);

/** A client: a Repo over the WebSocket adapter, and the heads the server last announced. */
function client(url, dir) {
  const adapter = new WebSocketClientAdapter(url, 100);
  const storage = dir ? new NodeFSStorageAdapter(dir) : undefined;
  const repo = new Repo({ network: [adapter], storage });
  const serverHeads = new Map();
  adapter.on("message", m => {
    if (m.type === "sync" && m.data) serverHeads.set(m.documentId, A.decodeSyncMessage(m.data).heads);
  });
  return { adapter, repo, serverHeads };
}

const sameHeads = (a, b) => a && b && a.length === b.length && [...a].sort().join() === [...b].sort().join();

async function inSync(c, handles, ms) {
  await until("the server to hold every document", () =>
    handles.every(h => sameHeads(c.serverHeads.get(h.documentId), A.getHeads(h.doc()))), ms, 20);
}

const say = m => process.stderr.write(`bench: ${m}\n`);

async function reconnect(target) {
  say(`${target.name}: creating ${DOCS} documents`);
  const dir = mkdtempSync(path.join(os.tmpdir(), "casenote-bench-client-"));
  const c = client(target.url(0), dir);
  const urls = [];
  const handles = [];
  for (let i = 0; i < DOCS; i++) {
    const { documentId, bytes } = newNote(target.me, target.caseId, `Bench note ${i}.`);
    handles.push(c.repo.import(bytes, { docId: documentId }));
    urls.push(`automerge:${documentId}`);
  }
  await inSync(c, handles, 600_000);
  await c.repo.flush();
  await c.repo.shutdown();
  // The same client again (a page reloaded on a ward PC): its documents in its storage, a new
  // connection; until the server has answered every document with the client's heads.
  say(`${target.name}: reconnecting`);
  const t0 = performance.now();
  const again = client(target.url(0), dir);
  const found = await Promise.all(urls.map(u => again.repo.find(u)));
  await inSync(again, found, 600_000);
  const ms = performance.now() - t0;
  await again.repo.shutdown();
  rmSync(dir, { recursive: true, force: true });
  return ms;
}

const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

async function shared(target) {
  say(`${target.name}: ${CLIENTS} clients editing ${SHARED} shared documents`);
  const clients = [];
  for (let i = 0; i < CLIENTS; i++) clients.push(client(target.url(i)));
  const first = clients[0];
  const created = [];
  for (let d = 0; d < SHARED; d++) {
    let doc = A.init({ author: target.me.author });
    doc = A.change(doc, { time: Date.now() }, x => {
      x.schema = S(PLAN_SCHEMA);
      x.case_id = S(target.caseId);
      x.narrative = "";
      x.goals = {};
      x.actions = {};
    });
    created.push(first.repo.import(A.save(doc), { docId: newNote(target.me, target.caseId, "x").documentId }));
  }
  await inSync(first, created, 60_000);
  const urls = created.map(h => h.url);
  const open = await Promise.all(clients.map(c => Promise.all(urls.map(u => c.repo.find(u)))));
  const sent = new Map();
  const latencies = [];
  open.forEach((handles, ci) => handles.forEach(h => {
    const seen = new Set();
    h.on("change", () => {
      const now = performance.now();
      for (const m of str(h.doc().narrative).matchAll(/\[(\d+):(\d+)\]/g)) {
        const key = m[0];
        if (seen.has(key) || Number(m[1]) === ci || !sent.has(key)) continue;
        seen.add(key);
        latencies.push(now - sent.get(key));
      }
    });
  }));
  const edits = [];
  for (let ci = 0; ci < CLIENTS; ci++) {
    edits.push((async () => {
      for (let e = 0; e < EDITS; e++) {
        await new Promise(r => setTimeout(r, 200 + Math.random() * 300));
        const h = open[ci][(ci + e) % SHARED];
        const key = `[${ci}:${e}]`;
        signAs(h, target.me);
        sent.set(key, performance.now());
        h.change(d => A.splice(d, ["narrative"], 0, 0, key), { time: Date.now() });
      }
    })());
  }
  await Promise.all(edits);
  const expected = CLIENTS * EDITS * (CLIENTS - 1);
  await until("every edit at every other client", () => latencies.length >= expected, 120_000, 50);
  await Promise.all(clients.map(c => c.repo.shutdown()));
  latencies.sort((a, b) => a - b);
  return { p50: pct(latencies, 50), p99: pct(latencies, 99), samples: latencies.length };
}

async function casenote() {
  const server = await startServer();
  const me = await server.caseload(server.token("Priya Shah"));
  const tokens = [];
  for (let i = 0; i < CLIENTS; i++) {
    tokens.push(server.admin(["token", "issue", "--staff", me.staff_id]).trim().split(/\s+/).pop());
  }
  const target = { name: "casenote", me, caseId: server.caseId("Peggy"), url: i => server.wsUrl(tokens[i]) };
  try {
    return { reconnect_ms: await reconnect(target), shared: await shared(target) };
  } finally {
    await server.stop();
  }
}

async function baseline() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "casenote-sync-server-"));
  const proc = spawn(process.execPath, [path.join(import.meta.dirname, "sync-server.mjs"), dir], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise(r => proc.stdout.on("data", d => { const m = String(d).match(/listening on (\d+)/); if (m) r(m[1]); }));
  const me = { author: "0a0b0c0d0e0f10111213141516171819", staff_id: "0a0b0c0d-0e0f-1011-1213-141516171819", role: "nurse", org: "Bench", teams: ["Bench"] };
  const target = { name: "sync-server", me, caseId: "11111111-2222-4333-8444-555555555555", url: () => `ws://127.0.0.1:${port}` };
  try {
    return { reconnect_ms: await reconnect(target), shared: await shared(target) };
  } finally {
    proc.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  }
}

const base = await baseline();
const ours = await casenote();
const f = x => x.toFixed(1);
console.log(`| workload | automerge-repo sync server | casenote GET /v1/repo |`);
console.log(`|---|---|---|`);
console.log(`| reconnect holding ${DOCS} documents (ms) | ${f(base.reconnect_ms)} | ${f(ours.reconnect_ms)} |`);
console.log(`| ${CLIENTS} clients x ${SHARED} shared documents, latency p50 (ms) | ${f(base.shared.p50)} | ${f(ours.shared.p50)} |`);
console.log(`| ${CLIENTS} clients x ${SHARED} shared documents, latency p99 (ms) | ${f(base.shared.p99)} | ${f(ours.shared.p99)} |`);
console.log(JSON.stringify({ docs: DOCS, clients: CLIENTS, shared: SHARED, edits: EDITS, baseline: base, casenote: ours }));
process.exit(0);
