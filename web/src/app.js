// casenote's web app for ward PCs (issue 14): sign in with a device token, the caseload, a case
// (About Me, alerts and their age, the plan narrative co-edited live, notes with their
// amendments), add and file a note, amend one. Documents sync over the server's /v1/repo with
// automerge-repo, kept in IndexedDB so the app works offline; the service worker (sw.js) keeps
// the app itself. Nothing here writes record content to the console.
//
// The token lives in sessionStorage (gone when the tab closes: ward PCs are shared); "Sign out"
// also deletes this member of staff's IndexedDB database.
import { automergeWasmBase64 } from "@automerge/automerge/automerge.wasm.base64";
import * as A from "@automerge/automerge/slim";
import { Repo } from "@automerge/automerge-repo/slim";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { IndexedDBStorageAdapter } from "@automerge/automerge-repo-storage-indexeddb";
import { createdAt, edit, fileNote, newNote, str, uuidOf } from "./record.js";

const TOKEN = "casenote.token";
const CASELOAD = "casenote.caseload";
const main = document.getElementById("app");
const status = document.getElementById("status");

/** A DOM element; children are nodes or strings (always text, never HTML). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c != null) e.append(c);
  return e;
}

const age = ms => {
  if (ms == null) return "age unknown";
  const days = Math.floor((Date.now() - ms) / 86_400_000);
  return days <= 0 ? "raised today" : `raised ${days} day${days === 1 ? "" : "s"} ago`;
};

let repo = null;
let adapter = null;
let me = null;

function setStatus(text) {
  status.textContent = text;
  status.dataset.state = text;
}

function signInView(message = "") {
  setStatus("signed out");
  const input = el("input", { id: "token", type: "password", autocomplete: "off", placeholder: "cn_..." });
  const form = el("form", { id: "signin" },
    el("label", { for: "token" }, "Device token"), input,
    el("button", { type: "submit" }, "Sign in"),
    el("p", { class: "error", id: "signin-error" }, message));
  form.addEventListener("submit", e => {
    e.preventDefault();
    signIn(input.value.trim());
  });
  main.replaceChildren(form);
}

async function fetchCaseload(token) {
  const r = await fetch("/v1/caseload", { headers: { authorization: `Bearer ${token}` } });
  if (r.status === 401) throw new Error("refused");
  if (!r.ok) throw new Error("unavailable");
  return r.json();
}

async function signIn(token) {
  try {
    me = await fetchCaseload(token);
  } catch (e) {
    signInView(e.message === "refused" ? "The server refused this token." : "The server cannot be reached.");
    return;
  }
  sessionStorage.setItem(TOKEN, token);
  sessionStorage.setItem(CASELOAD, JSON.stringify(me));
  start(token);
}

function start(token) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  adapter = new WebSocketClientAdapter(`${scheme}://${location.host}/v1/repo?token=${encodeURIComponent(token)}`, 1000);
  adapter.on("peer-candidate", () => setStatus("online"));
  adapter.on("peer-disconnected", () => setStatus("offline"));
  setStatus("offline");
  repo = new Repo({ storage: new IndexedDBStorageAdapter(`casenote-${me.staff_id}`), network: [adapter] });
  addEventListener("online", () => refreshCaseload(token));
  caseloadView();
}

/** The caseload again from the server (new documents of others), when it can be reached. */
async function refreshCaseload(token) {
  try {
    const fresh = await fetchCaseload(token);
    const mine = me.docs.filter(d => !fresh.docs.some(f => f.doc_id === d.doc_id) && d.local);
    me = { ...fresh, docs: [...fresh.docs, ...mine] };
    sessionStorage.setItem(CASELOAD, JSON.stringify(me));
  } catch {
    // Offline: the cached caseload stands.
  }
}

/** A document's handle, or null when it cannot be had (offline and never loaded here). */
async function open(url, ms = 5000) {
  try {
    return await Promise.race([repo.find(url), new Promise((_, r) => setTimeout(() => r(new Error("timeout")), ms))]);
  } catch {
    return null;
  }
}

async function caseloadView() {
  const cases = [...new Set(me.docs.map(d => d.case_id))];
  const list = el("ul", { id: "caseload" });
  main.replaceChildren(el("h2", {}, "Caseload"), list,
    el("button", { id: "signout", onclick: signOut }, "Sign out"));
  // Every case at once, named as its document loads (offline, one never opened here may not).
  await Promise.all(cases.map(async caseId => {
    const button = el("button", { "data-case": caseId, onclick: () => caseView(caseId) }, "…");
    list.append(el("li", {}, button));
    const caseDoc = me.docs.find(d => d.case_id === caseId && d.kind === "case");
    const h = caseDoc && (await open(caseDoc.url));
    button.textContent = h ? str(h.doc().name) : "(not on this PC yet)";
  }));
}

async function signOut() {
  const id = me?.staff_id;
  sessionStorage.clear();
  await repo?.shutdown();
  if (id) indexedDB.deleteDatabase(`casenote-${id}`);
  location.reload();
}

function docsOf(caseId, kind) {
  return me.docs.filter(d => d.case_id === caseId && d.kind === kind);
}

async function caseView(caseId) {
  const view = el("section", { id: "case", "data-case": caseId });
  main.replaceChildren(el("button", { onclick: caseloadView }, "← Caseload"), view);
  const [caseDoc] = docsOf(caseId, "case");
  const [planDoc] = docsOf(caseId, "plan");
  const person = caseDoc && (await open(caseDoc.url));
  if (person) view.append(personBlock(person));
  const plan = planDoc && (await open(planDoc.url));
  if (plan) view.append(planBlock(plan));
  const notes = el("div", { id: "notes" });
  view.append(el("h3", {}, "Notes"), addNoteForm(caseId, notes), notes);
  await renderNotes(caseId, notes);
  await repo.flush();
}

function personBlock(h) {
  const box = el("div", { id: "person" });
  const render = () => {
    const d = h.doc();
    const alerts = Object.values(d.alerts ?? {}).filter(a => str(a.status) === "active");
    box.replaceChildren(
      el("h2", {}, str(d.name)),
      el("ul", { id: "alerts" }, alerts.map(a => el("li", { class: "alert" }, `${str(a.text)} (${age(createdAt(d, a))})`))),
      el("h3", {}, "About Me"), el("p", { id: "about-me" }, str(d.about_me)));
  };
  h.on("change", render);
  render();
  return box;
}

function planBlock(h) {
  const area = el("textarea", { id: "narrative", rows: "8" });
  area.value = str(h.doc().narrative);
  area.addEventListener("input", () => {
    edit(h, me, d => A.updateText(d, ["narrative"], area.value));
  });
  h.on("change", () => {
    const text = str(h.doc().narrative);
    if (area.value !== text) {
      const [start, end] = [area.selectionStart, area.selectionEnd];
      area.value = text;
      area.setSelectionRange(start, end);
    }
  });
  return el("div", {}, el("h3", {}, "Plan"), area);
}

function addNoteForm(caseId, notes) {
  const text = el("textarea", { id: "note-text", rows: "3" });
  const kind = el("select", { id: "note-kind" }, ["case-note", "visit", "phone", "mdt"].map(k => el("option", { value: k }, k)));
  const form = el("form", { id: "add-note" }, text, kind, el("button", { type: "submit" }, "Add note"));
  form.addEventListener("submit", async e => {
    e.preventDefault();
    if (!text.value.trim()) return;
    await addNote(caseId, text.value, { kind: kind.value });
    text.value = "";
    await renderNotes(caseId, notes);
  });
  return form;
}

/**
 * A new note (or amendment) on `caseId`, written here and kept in IndexedDB before this returns;
 * synced whenever the server is reached.
 */
async function addNote(caseId, text, options) {
  const { documentId, bytes } = newNote(me, caseId, text, options);
  repo.import(bytes, { docId: documentId });
  me.docs.push({ doc_id: uuidOf(documentId), url: `automerge:${documentId}`, kind: "note", case_id: caseId, local: true });
  sessionStorage.setItem(CASELOAD, JSON.stringify(me));
  await repo.flush();
  return documentId;
}

async function renderNotes(caseId, box) {
  const loaded = [];
  for (const n of docsOf(caseId, "note")) {
    const h = await open(n.url);
    if (h) loaded.push({ ...n, h, d: h.doc() });
  }
  const amendments = id => loaded.filter(n => str(n.d.amends?.note_id) === id);
  const roots = loaded.filter(n => !n.d.amends).sort((a, b) => b.d.occurred_at_ms - a.d.occurred_at_ms);
  box.replaceChildren(...roots.map(n => noteBlock(caseId, n, amendments(n.doc_id), box)));
}

function noteBlock(caseId, n, amendments, box) {
  const filed = str(n.d.status) === "filed";
  const by = n.d.author ? `${str(n.d.author.role)}, ${str(n.d.author.team)}` : "";
  const actions = filed
    ? el("button", { class: "amend", onclick: () => amendForm(caseId, n, box) }, "Amend")
    : el("button", { class: "file", onclick: async () => { fileNote(n.h, me); await renderNotes(caseId, box); } }, "File");
  return el("article", { class: "note", "data-note": n.doc_id, "data-status": filed ? "filed" : "draft" },
    el("header", {}, `${str(n.d.note_kind)} · ${new Date(n.d.occurred_at_ms).toLocaleString()} · ${by} · ${filed ? "filed" : "draft"}`),
    el("p", {}, str(n.d.text)),
    amendments.map(a => el("blockquote", { class: "amendment" }, `${str(a.d.amends.kind)} (${str(a.d.amends.reason)}): ${str(a.d.text)}`)),
    actions);
}

function amendForm(caseId, n, box) {
  const reason = el("input", { class: "amend-reason", placeholder: "Why" });
  const text = el("textarea", { class: "amend-text", rows: "2" });
  const form = el("form", {}, reason, text, el("button", { type: "submit" }, "Add amendment"));
  form.addEventListener("submit", async e => {
    e.preventDefault();
    if (!text.value.trim() || !reason.value.trim()) return;
    await addNote(caseId, text.value, { amends: { noteId: n.doc_id, kind: "addendum", reason: reason.value } });
    await renderNotes(caseId, box);
  });
  box.querySelector(`[data-note="${n.doc_id}"]`)?.append(form);
}

async function boot() {
  await A.initializeBase64Wasm(automergeWasmBase64);
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("sw.js", { scope: "./" }).catch(() => {});
  }
  const token = sessionStorage.getItem(TOKEN);
  const cached = sessionStorage.getItem(CASELOAD);
  if (token && cached) {
    me = JSON.parse(cached);
    start(token);
    refreshCaseload(token);
  } else {
    signInView();
  }
}

boot();
