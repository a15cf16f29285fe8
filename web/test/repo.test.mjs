// GET /v1/repo with the real automerge-repo client and its WebSocket adapter, against a real
// casenote-server on the demo data, with real CLI devices (issue 14): the authorization matrix,
// an edit from JS reaching a CLI device and back, a forged author and a forged actor refused, a
// filed note that cannot change, access ending mid-connection.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as A from "@automerge/automerge";
import { cbor } from "@automerge/automerge-repo";
import WebSocket from "ws";
import { startServer, cliDevice, repoClient, until } from "./harness.mjs";
import { newNote, fileNote, signAs, str, uuidOf } from "../src/record.js";

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

/** A raw protocol client: join, then send and receive CBOR messages by hand. */
async function raw(token) {
  const ws = new WebSocket(server.wsUrl(token));
  ws.binaryType = "nodebuffer";
  const inbox = [];
  ws.on("message", d => inbox.push(cbor.decode(new Uint8Array(d))));
  await new Promise((res, rej) => { ws.on("open", res); ws.on("error", rej); });
  const send = m => ws.send(cbor.encode(m));
  const next = async pred => {
    const m = await until("a message from the server", () => inbox.find(pred), 10_000, 10);
    inbox.splice(inbox.indexOf(m), 1);
    return m;
  };
  send({ type: "join", senderId: "raw-peer", peerMetadata: {}, supportedProtocolVersions: ["1"] });
  await next(m => m.type === "peer");
  return { ws, send, next, inbox };
}

/** The status code a WebSocket upgrade to `url` is refused with (0: it was accepted). */
function upgradeStatus(url) {
  return new Promise(resolve => {
    const ws = new WebSocket(url);
    ws.on("unexpected-response", (_req, res) => resolve(res.statusCode));
    ws.on("open", () => { ws.close(); resolve(0); });
    ws.on("error", () => {});
  });
}

const docOf = (caseload, caseId, kind) =>
  caseload.docs.find(d => d.case_id === caseId && d.kind === kind);

test("a missing, unknown or revoked token is refused before the upgrade", async () => {
  const base = `${server.url.replace("http", "ws")}/v1/repo`;
  assert.equal(await upgradeStatus(base), 401);
  assert.equal(await upgradeStatus(`${base}?token=cn_not-a-token`), 401);
  assert.equal(await upgradeStatus(server.wsUrl(server.token("Priya Shah"))), 0);
  assert.ok(!server.logs().includes(server.token("Priya Shah")), "the token is in the server's log");
});

test("the authorization matrix: what a token may not read is unavailable, existing or not", async () => {
  const priya = await server.caseload(server.token("Priya Shah"));
  const grace = await server.caseload(server.token("Grace Liu"));
  const jean = server.caseId("Jean");
  const jeansPlan = docOf(priya, jean, "plan");
  assert.ok(jeansPlan, "Priya reads Jean's plan");
  assert.ok(!grace.docs.some(d => d.case_id === jean), "Grace's caseload holds nothing of Jean's");

  // The stock client: Priya finds Jean's plan, Grace finds it unavailable, as a document that
  // does not exist.
  const p = repoClient(server, server.token("Priya Shah"));
  const g = repoClient(server, server.token("Grace Liu"));
  try {
    const h = await p.repo.find(jeansPlan.url);
    assert.equal(str(h.doc().schema), "casenote/plan/1");
    await assert.rejects(g.repo.find(jeansPlan.url), /unavailable/);
    await assert.rejects(g.repo.find("automerge:2k9CVDM9BYipGiF3CRJrU9N4iszB"), /unavailable/);
  } finally {
    p.close();
    g.close();
  }

  // Byte for byte: a request for an unreadable document and for one that does not exist get
  // the same answer; so does a sync message without changes (an empty document's answer).
  const r = await raw(server.token("Grace Liu"));
  try {
    const hidden = jeansPlan.url.slice("automerge:".length);
    const missing = "2k9CVDM9BYipGiF3CRJrU9N4iszB";
    const ask = A.generateSyncMessage(A.init(), A.initSyncState())[1];
    const answers = [];
    for (const documentId of [hidden, missing]) {
      r.send({ type: "request", senderId: "raw-peer", targetId: "casenote-server", documentId, data: ask });
      const m = await r.next(m => m.documentId === documentId);
      answers.push({ ...m, documentId: "" });
    }
    assert.equal(answers[0].type, "doc-unavailable");
    assert.deepEqual(answers[0], answers[1]);
    const theirs = A.generateSyncMessage(A.from({ x: 1 }), A.initSyncState())[1];
    const synced = [];
    for (const documentId of [hidden, missing]) {
      r.send({ type: "sync", senderId: "raw-peer", targetId: "casenote-server", documentId, data: theirs });
      const m = await r.next(m => m.documentId === documentId);
      synced.push({ ...m, documentId: "" });
    }
    assert.equal(synced[0].type, "sync");
    assert.deepEqual(A.decodeSyncMessage(synced[0].data).heads, []);
    assert.deepEqual(synced[0], synced[1]);
  } finally {
    r.ws.close();
  }
});

test("an edit from JS reaches a CLI device, and the device's edit comes back live", async () => {
  const token = server.token("Priya Shah");
  const me = await server.caseload(token);
  const peggy = server.caseId("Peggy");
  const plan = docOf(me, peggy, "plan");
  const mark = await cliDevice(server, "Mark Ellison");
  await mark.sync();
  const before = (await mark.show(peggy)).plans[0].content.narrative;
  const c = repoClient(server, token);
  try {
    const h = await c.repo.find(plan.url);
    signAs(h, me);
    // An emoji is two UTF-16 code units and one code point: JS splices in its own positions.
    h.change(d => A.splice(d, ["narrative"], 0, 0, "🙂 Seen on Ward 7. "));
    h.change(d => A.splice(d, ["narrative"], 2, 0, "[ok]"));
    const expected = "🙂[ok] Seen on Ward 7. " + before;
    assert.equal(str(h.doc().narrative), expected);
    await until("Mark's device to receive the web edit", async () => {
      await mark.sync();
      return (await mark.show(peggy)).plans[0].content.narrative === expected;
    });
    await mark.run(["plan", "append", peggy, "--text", " Mark: agreed."]);
    await mark.sync();
    await until("the device's edit to reach the browser", () =>
      str(h.doc().narrative) === expected + " Mark: agreed.");

    // A new note written in JS, filed, reaches the device; then a note from the device
    // appears in the browser's caseload and opens.
    const { documentId, bytes } = newNote(me, peggy, "Visited on the ward: eating well 🍲.");
    const note = c.repo.import(bytes, { docId: documentId });
    const noteId = uuidOf(documentId);
    await until("the server to hold the new note", async () =>
      (await server.caseload(token)).docs.some(d => d.doc_id === noteId));
    fileNote(note, me);
    await until("Mark's device to receive the filed note", async () => {
      await mark.sync();
      const n = (await mark.show(peggy)).notes.find(n => n.note_id === noteId);
      return n?.content.status === "filed" && n.content.text === "Visited on the ward: eating well 🍲.";
    });
  } finally {
    c.close();
  }
  // Audited as the device protocol's syncs are: what the web client pushed, and what it was
  // handed.
  const repoEntries = server.audit().map(e => JSON.stringify(e)).filter(e => e.includes('"via":"repo"'));
  assert.ok(repoEntries.some(e => e.includes('"pushed"') && e.includes(plan.doc_id)), "the push is audited");
  assert.ok(repoEntries.some(e => e.includes('"pulled"') && e.includes(plan.doc_id)), "what was handed out is audited");
  assert.ok(!server.logs().includes("Seen on Ward 7"), "note text in the server's log");
  assert.ok(!server.logs().includes("eating well"), "note text in the server's log");
});

/**
 * Resolves with the first `doc-unavailable` the server sends `client` about `url` (a refusal);
 * rejects when none comes within 15 s.
 */
function unavailableOf(client, url) {
  const documentId = url.slice("automerge:".length);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the server did not refuse the change")), 15_000);
    client.adapter.on("message", m => {
      if (m.type === "doc-unavailable" && m.documentId === documentId) {
        clearTimeout(timer);
        resolve(m);
      }
    });
  });
}

test("a change authored as someone else, or made with someone else's actor, is refused", async () => {
  const token = server.token("Priya Shah");
  const me = await server.caseload(token);
  const markHex = (await server.caseload(server.token("Mark Ellison"))).author;
  const jean = server.caseId("Jean");
  const plan = docOf(me, jean, "plan");
  const mark = await cliDevice(server, "Mark Ellison");
  await mark.run(["plan", "append", jean, "--text", " Mark was here."]);
  await mark.sync();

  // Forged author: Priya's client writes Mark's staff id as the author.
  let c = repoClient(server, token);
  try {
    const h = await c.repo.find(plan.url);
    await until("Mark's edit in the browser", () => str(h.doc().narrative).endsWith(" Mark was here."));
    const refused = unavailableOf(c, plan.url);
    A.getBackend(h.doc()).setAuthor(markHex);
    h.change(d => A.splice(d, ["narrative"], 0, 0, "FORGED-AUTHOR "));
    await refused;
  } finally {
    c.close();
  }

  // Forged actor: Priya's client writes with the actor the server bound to Mark's device.
  c = repoClient(server, token);
  try {
    const h = await c.repo.find(plan.url);
    const markActor = A.getAllChanges(h.doc()).map(b => A.decodeChange(b)).find(ch => ch.author === markHex).actor;
    let forged = A.clone(h.doc(), { actor: markActor });
    forged = A.change(forged, d => A.splice(d, ["narrative"], 0, 0, "FORGED-ACTOR "));
    const bytes = A.getLastLocalChange(forged);
    const refused = unavailableOf(c, plan.url);
    h.update(d => A.applyChanges(d, [bytes])[0]);
    await refused;
  } finally {
    c.close();
  }
  const forged = server.audit().map(e => JSON.stringify(e))
    .filter(e => e.includes('"forged_author"') && e.includes(plan.doc_id) && !e.includes('"via"'));
  assert.equal(forged.length, 2, "each forgery is audited as forged_author");
  await mark.sync();
  const narrative = (await mark.show(jean)).plans[0].content.narrative;
  assert.ok(narrative.endsWith(" Mark was here."));
  assert.ok(!narrative.includes("FORGED"), "a forged change reached a device");
});

test("a filed note cannot change through the endpoint; the refusal is quarantined", async () => {
  const token = server.token("Priya Shah");
  const me = await server.caseload(token);
  const c = repoClient(server, token);
  try {
    let filed;
    for (const d of me.docs.filter(d => d.kind === "note")) {
      const h = await c.repo.find(d.url);
      if (str(h.doc().status) === "filed") { filed = { d, h }; break; }
    }
    assert.ok(filed, "the demo gives Priya a filed note");
    const before = str(filed.h.doc().text);
    const refused = unavailableOf(c, filed.d.url);
    signAs(filed.h, me);
    filed.h.change(d => A.splice(d, ["text"], 0, 0, "REWRITTEN "));
    await refused;
    const refusals = server.audit().map(e => JSON.stringify(e))
      .filter(e => e.includes('"rule_violation"') && e.includes(filed.d.doc_id) && !e.includes('"via"'));
    assert.equal(refusals.length, 1, "the refusal is audited as rule_violation");
    const quarantine = JSON.parse(server.admin(["quarantine", "list", "--json"]));
    assert.ok(quarantine.some(q => q.doc_id === filed.d.doc_id), "the refused change is in quarantine");
    const mark = await cliDevice(server, "Ruth Adebayo");
    await mark.sync();
    const note = JSON.stringify((await mark.show(filed.d.case_id)).notes);
    assert.ok(note.includes(before.slice(0, 20)));
    assert.ok(!note.includes("REWRITTEN"), "a filed note changed");
  } finally {
    c.close();
  }
});

test("when access ends the server stops serving at once; a revoked token is closed", async () => {
  const token = server.token("Ruth Adebayo");
  const me = await server.caseload(token);
  const peggy = server.caseId("Peggy");
  const plan = docOf(me, peggy, "plan");
  const r = await raw(token);
  const documentId = plan.url.slice("automerge:".length);
  r.send({ type: "request", senderId: "raw-peer", targetId: "casenote-server", documentId,
    data: A.generateSyncMessage(A.init(), A.initSyncState())[1] });
  const first = await r.next(m => m.documentId === documentId);
  assert.equal(first.type, "sync");

  server.admin(["case", "remove-team", "--case", peggy, "--team", "Locality Team North"]);
  const gone = await r.next(m => m.documentId === documentId);
  assert.equal(gone.type, "doc-unavailable");
  // Sam (Hospital Discharge Hub) still works on Peggy's case: his edit never reaches Ruth.
  const sam = await cliDevice(server, "Sam Kowalski");
  await sam.run(["plan", "append", peggy, "--text", " Sam: after."]);
  await sam.sync();
  r.send({ type: "request", senderId: "raw-peer", targetId: "casenote-server", documentId,
    data: A.generateSyncMessage(A.init(), A.initSyncState())[1] });
  assert.equal((await r.next(m => m.documentId === documentId)).type, "doc-unavailable");
  assert.ok(!r.inbox.some(m => m.type === "sync" && m.documentId === documentId), "a change after access ended");

  const closed = new Promise(res => r.ws.on("close", (code, reason) => res({ code, reason: String(reason) })));
  server.admin(["token", "revoke", "--device", me.device_id]);
  const error = await r.next(m => m.type === "error");
  assert.equal(error.message, "device_revoked");
  assert.deepEqual(await closed, { code: 1008, reason: "device_revoked" });
  server.admin(["case", "add-team", "--case", peggy, "--team", "Locality Team North"]);
});
