// The web app in Debian's Chromium (never a downloaded browser), driven by playwright-core
// against a real casenote-server serving the built app (issue 14): sign in, open a case, go
// offline, reload (the service worker and IndexedDB carry the app and the records), add a note,
// come back online, and a CLI device receives the note; then file and amend it, and co-edit the
// plan narrative with the device. Screenshots are kept as artefacts in target/web/.
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
  await page.waitForSelector(`#status[data-state="offline"]`);
  await page.click(`button[data-case="${peggy}"]`);
  await page.waitForSelector(".note");
  const text = `Written offline on Ward 7 ${Date.now()}: settled overnight.`;
  await page.fill("#note-text", text);
  await page.selectOption("#note-kind", "visit");
  await page.click("#add-note button[type=submit]");
  await page.waitForSelector(`.note[data-status="draft"] >> text=${text}`);
  mkdirSync(ARTEFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTEFACTS, "offline-note.png"), fullPage: true });

  const sam = await cliDevice(server, "Sam Kowalski");
  await context.setOffline(false);
  await page.waitForSelector(`#status[data-state="online"]`, { timeout: 20_000 });
  await until("the CLI device to receive the note written offline", async () => {
    await sam.sync();
    return JSON.stringify((await sam.show(peggy)).notes).includes(text);
  });
  // File it, then amend it, in the browser: the device sees both.
  const note = page.locator(`.note[data-status="draft"]`, { hasText: text });
  await note.locator("button.file").click();
  await page.waitForSelector(`.note[data-status="filed"] >> text=${text}`);
  await page.locator(`.note[data-status="filed"]`, { hasText: text }).locator("button.amend").click();
  await page.fill(".amend-reason", "wrong bay");
  await page.fill(".amend-text", "Bay 4, not bay 3.");
  await page.click("form:has(.amend-reason) button[type=submit]");
  await page.waitForSelector(".amendment >> text=Bay 4, not bay 3.");
  await until("the CLI device to see the note filed and amended", async () => {
    await sam.sync();
    const notes = (await sam.show(peggy)).notes;
    const ours = notes.find(n => n.content.text === text);
    const amendment = notes.find(n => n.content.text === "Bay 4, not bay 3.");
    return ours?.content.status === "filed" && ours.content.note_kind === "visit" &&
      amendment?.content.amends?.note_id === ours.note_id && amendment.content.amends.reason === "wrong bay";
  });
  // The plan narrative, co-edited live: the device's edit appears, the browser's reaches it.
  await sam.run(["plan", "append", peggy, "--text", " Sam: transport booked."]);
  await sam.sync();
  await page.waitForFunction(() => document.querySelector("#narrative").value.endsWith(" Sam: transport booked."));
  await page.focus("#narrative");
  await page.keyboard.press("End");
  await page.keyboard.press("Control+End");
  await page.keyboard.type(" Grace: ready 10:00.");
  await until("the CLI device to see the browser's plan edit", async () => {
    await sam.sync();
    return (await sam.show(peggy)).plans[0].content.narrative.endsWith(" Sam: transport booked. Grace: ready 10:00.");
  });
  await page.screenshot({ path: path.join(ARTEFACTS, "after-reconnect.png"), fullPage: true });
  assert.ok(!consoleText.some(l => l.includes("settled overnight")), "note text in the browser console");
  assert.ok(!server.logs().includes("settled overnight"), "note text in the server's log");
});
