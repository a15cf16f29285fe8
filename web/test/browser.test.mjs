// The web app in Debian's Chromium (never a downloaded browser), driven by playwright-core
// against a real casenote-server serving the built app (issue 14): sign in, open a case, go
// offline, reload (the service worker and IndexedDB carry the app and the records), add a note,
// come back online, and a CLI device receives the note. A screenshot is kept as an artefact in
// target/web/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { ROOT, startServer, cliDevice, until } from "./harness.mjs";

const CHROMIUM = process.env.CASENOTE_CHROMIUM ?? "/usr/bin/chromium";
const ARTEFACTS = path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, "target"), "web");
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

let server;
let profile;
let context;
before(async () => {
  server = await startServer({ appDir: path.join(ROOT, "web/dist") });
  profile = mkdtempSync(path.join(os.tmpdir(), "casenote-chromium-"));
  // A fresh profile per run: launchPersistentContext is how playwright passes --user-data-dir.
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: FLAGS, serviceWorkers: "allow",
  });
});
after(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  await server?.stop();
});

test("sign in, go offline, add a note, reconnect: a CLI device receives it", async () => {
  const page = context.pages()[0] ?? (await context.newPage());
  const consoleText = [];
  page.on("console", m => consoleText.push(m.text()));
  const peggy = server.caseId("Peggy");
  await page.goto(`${server.url}/app/`);
  await page.fill("#token", server.token("Grace Liu"));
  await page.click("#signin button[type=submit]");
  await page.waitForSelector(`#status[data-state="online"]`);
  await page.click(`button[data-case="${peggy}"]`);
  await page.waitForSelector("#narrative");
  await page.waitForSelector(".note");
  await page.evaluate(() => navigator.serviceWorker.ready);

  await context.setOffline(true);
  await page.reload();
  await page.waitForSelector("#status");
  assert.equal(await page.textContent("#status"), "offline");
  await page.click(`button[data-case="${peggy}"]`);
  await page.waitForSelector(".note");
  const text = `Written offline on Ward 7 ${Date.now()}: settled overnight.`;
  await page.fill("#note-text", text);
  await page.selectOption("#note-kind", "visit");
  await page.click("#add-note button[type=submit]");
  await page.waitForSelector(`.note[data-status="draft"] >> text=${text}`);
  mkdirSync(ARTEFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTEFACTS, "offline-note.png"), fullPage: true });

  const sam = cliDevice(server, "Sam Kowalski");
  await context.setOffline(false);
  await page.waitForSelector(`#status[data-state="online"]`, { timeout: 20_000 });
  await until("the CLI device to receive the note written offline", () => {
    sam.sync();
    return JSON.stringify(sam.show(peggy).notes).includes(text);
  });
  await page.screenshot({ path: path.join(ARTEFACTS, "after-reconnect.png"), fullPage: true });
  assert.ok(!consoleText.some(l => l.includes("settled overnight")), "note text in the browser console");
  assert.ok(!server.logs().includes("settled overnight"), "note text in the server's log");
});
