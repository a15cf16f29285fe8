// Rust-to-JS test vectors (issue 14), the JS half: rust.json (written by the Rust record code,
// protocol/tests/js_vectors.rs) read by @automerge/automerge 3 as the web app reads it, and
// js.json (written by the app's record code, test/vectors.mjs) still what that code writes.
// The Rust half reads js.json. Both files are committed; CI runs both halves.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import * as A from "@automerge/automerge";
import { DIR, jsVectors, view } from "./vectors.mjs";
import { str } from "../src/record.js";

const load = name => JSON.parse(readFileSync(path.join(DIR, name), "utf8")).vectors;
const doc = v => A.load(new Uint8Array(Buffer.from(v.doc, "hex")));

test("documents written in Rust read the same in JS, text positions included", () => {
  const vectors = load("rust.json");
  assert.ok(vectors.length >= 3);
  for (const v of vectors) {
    const d = doc(v);
    assert.deepEqual(view(d), v.view, v.name);
    const c = v.checks;
    if (c.text_field) {
      const text = str(d[c.text_field]);
      assert.equal(text, c.text, v.name);
      assert.equal(text.length, c.utf16_length, `${v.name}: UTF-16 length`);
      assert.equal([...text].length, c.code_points, `${v.name}: code points`);
    }
    for (const k of c.scalars ?? []) assert.ok(d[k] instanceof A.ImmutableString, `${v.name}: ${k} is a scalar`);
  }
});

test("a JS splice at a UTF-16 position lands where Rust splices at the code point", () => {
  const plan = load("rust.json").find(v => v.name === "plan-spliced-in-rust");
  let d = doc(plan);
  const jsPos = plan.checks.text.indexOf("X"); // UTF-16 index of Rust's insertion
  d = A.change(d, x => A.splice(x, [plan.checks.text_field], jsPos + 1, 0, "Y"));
  assert.equal(str(d[plan.checks.text_field]), plan.checks.text.replace("X", "XY"));
});

test("js.json is what the app's record code writes today", () => {
  const committed = load("js.json");
  const fresh = jsVectors().vectors;
  assert.equal(fresh.length, committed.length);
  for (const [i, v] of fresh.entries()) {
    assert.deepEqual(v.view, committed[i].view, v.name);
    assert.deepEqual(v.checks, committed[i].checks, v.name);
    assert.deepEqual(view(doc(committed[i])), v.view, `${v.name}: the committed bytes`);
  }
});
