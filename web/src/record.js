// casenote's record schema on the JavaScript side: what the web app and the tests write into
// Automerge documents, exactly as the Rust side (protocol/src/record/) writes them, so the
// server's record rules accept them.
//
// Two traps of @automerge/automerge 3.x (issue 14):
// - A plain JS string is written as a Text object. Short facts (schema, case id, status, kind,
//   the author block, amendment fields) are scalar strings in the schema: write them as
//   `ImmutableString` (`S` below). Free text (a note's text, About Me, the plan narrative) is Text:
//   a plain string, or `splice`.
// - JS writes a change's time in seconds; casenote's devices write milliseconds (the CLI's
//   history and the alert ages read them so): every change here passes `time: Date.now()`.
// - JS indexes text in UTF-16 code units, Rust in Unicode code points. Positions never cross
//   between the two: the web app edits text through Automerge's own splice in JS positions, the
//   CLI through Rust positions, and what travels is Automerge operations, which both read alike
//   (the test vectors in web/test/vectors check it).
import * as A from "@automerge/automerge/slim";
import { documentIdToBinary, generateAutomergeUrl, parseAutomergeUrl } from "@automerge/automerge-repo/slim";

export const NOTE_SCHEMA = "casenote/note/1";
export const CASE_SCHEMA = "casenote/case/1";
export const PLAN_SCHEMA = "casenote/plan/1";

/** A scalar string, as the schema's short facts are. */
export const S = s => new A.ImmutableString(s);

/** The text of a scalar string or a Text field, whichever the document holds. */
export const str = v => (v == null ? "" : typeof v === "string" ? v : v.toString());

/** A casenote uuid string from an automerge-repo document id. */
export function uuidOf(documentId) {
  const b = documentIdToBinary(documentId);
  const h = [...b].map(x => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * Makes every later change of `handle` carry `me.author` (the staff id as hex, from
 * /v1/caseload): the server binds a new actor to whoever its first change names.
 */
export function signAs(handle, me) {
  const backend = A.getBackend(handle.doc());
  if (backend.getAuthor() !== me.author) backend.setAuthor(me.author);
}

/**
 * A new draft note on `caseId`, as `init_note` writes one; returns the bytes to import and the
 * new document's id (and the document). `actor`: a fixed actor id (test vectors). `amends`: `{ noteId, kind: "addendum" | "correction", reason }`.
 */
export function newNote(me, caseId, text, { kind = "case-note", now = Date.now(), amends, actor } = {}) {
  const { documentId } = parseAutomergeUrl(generateAutomergeUrl());
  let d = A.init(actor ? { author: me.author, actor } : { author: me.author });
  d = A.change(d, { time: now }, x => {
    x.schema = S(NOTE_SCHEMA);
    x.case_id = S(caseId);
    x.status = S("draft");
    x.note_kind = S(kind);
    x.occurred_at_ms = now;
    x.recorded_at_ms = now;
    x.author = {
      staff_id: S(me.staff_id),
      role: S(me.role),
      org: S(me.org),
      team: S(me.teams[0] ?? ""),
    };
    x.text = text;
    if (amends) {
      x.amends = { note_id: S(amends.noteId), kind: S(amends.kind), reason: S(amends.reason) };
    }
  });
  return { documentId, bytes: A.save(d), doc: d };
}

/** One change to `handle` as `me`, stamped in milliseconds. */
export function edit(handle, me, fn, now = Date.now()) {
  signAs(handle, me);
  handle.change(fn, { time: now });
}

/** Files a draft note: it never changes again. */
export function fileNote(handle, me, now = Date.now()) {
  edit(handle, me, x => {
    x.status = S("filed");
    x.filed_at_ms = now;
  }, now);
}

/**
 * When the object `obj` of `doc` was created (ms), from the change that made it: how old an
 * alert is. `null` when unknown (a change written without a time).
 */
export function createdAt(doc, obj) {
  const id = A.getObjectId(obj);
  if (!id) return null;
  const [counter, actor] = id.split("@");
  const op = Number(counter);
  for (const bytes of A.getAllChanges(doc)) {
    const c = A.decodeChange(bytes);
    if (c.actor === actor && op >= c.startOp && op < c.startOp + c.ops.length) {
      return c.time > 0 ? c.time : null;
    }
  }
  return null;
}
