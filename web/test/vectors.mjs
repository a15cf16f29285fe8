// The JS side of the Rust-to-JS test vectors (issue 14): documents JS writes with the app's own
// record code, deterministically (fixed actors and times), and what each must read as. `node
// test/vectors.mjs` rewrites js.json; vectors.test.mjs checks it is current and reads rust.json;
// protocol/tests/js_vectors.rs reads js.json with the Rust record code and rewrites/checks
// rust.json.
import * as A from "@automerge/automerge";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { newNote, S } from "../src/record.js";

export const DIR = path.join(import.meta.dirname, "vectors");
const TIME = 1_767_225_600_000; // 2026-01-01, in ms as casenote writes change times
const ME = {
  author: "0a0b0c0d0e0f10111213141516171819",
  staff_id: "0a0b0c0d-0e0f-1011-1213-141516171819",
  role: "nurse",
  org: "Castlebridge & Vale NHS Foundation Trust",
  teams: ["Ward 7"],
};
const CASE = "11111111-2222-4333-8444-555555555555";
const hex = b => Buffer.from(b).toString("hex");

/** The JSON view of a document, as Rust's `record::content_json` writes it. */
export function view(doc) {
  const walk = v => {
    if (v instanceof A.ImmutableString) return v.val;
    if (v instanceof Date) return v.getTime();
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(A.toJS(doc));
}

export function jsVectors() {
  // A note written by the app's own code, then a splice at JS position 2: after the first emoji
  // (two UTF-16 code units), which is code point 1 for Rust.
  const { doc: note0 } = newNote(ME, CASE, "🙂🙂 settled; naïve café 𝄞", {
    kind: "visit", now: TIME, actor: "aa".repeat(16),
  });
  const note = A.change(note0, { time: TIME + 1000 }, d => A.splice(d, ["text"], 2, 0, "X"));
  // The trap: plain JS strings where the schema wants scalars (they become Text objects).
  let trap = A.init({ actor: "bb".repeat(16), author: ME.author });
  trap = A.change(trap, { time: TIME }, d => {
    d.schema = "casenote/note/1";
    d.case_id = CASE;
    d.status = "draft";
    d.note_kind = S("visit");
    d.text = "plain";
  });
  return {
    vectors: [
      { name: "note-written-in-js", doc: hex(A.save(note)), view: view(note),
        checks: { text: "🙂X🙂 settled; naïve café 𝄞", x_at_code_point: 1, x_at_utf16: 2, scalars: ["schema", "case_id", "status", "note_kind"] } },
      { name: "plain-strings-are-text", doc: hex(A.save(trap)), view: view(trap),
        checks: { text_not_scalar: ["schema", "case_id", "status"], scalars: ["note_kind"] } },
    ],
  };
}

if (process.argv[1] === import.meta.filename) {
  writeFileSync(path.join(DIR, "js.json"), JSON.stringify(jsVectors(), null, 2) + "\n");
}
