// The test harness: a real casenote-server (the demo loaded, listening on 127.0.0.1:0), real
// CLI devices (the `casenote` binary with their own stores), and automerge-repo clients over
// the real WebSocket adapter. Binaries: target/debug unless CASENOTE_SERVER_BIN / CASENOTE_CLI_BIN
// name others.
import { spawn, execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";

export const ROOT = path.resolve(import.meta.dirname, "../..");
const TARGET = process.env.CARGO_TARGET_DIR ?? path.join(ROOT, "target");
export const SERVER_BIN = process.env.CASENOTE_SERVER_BIN ?? path.join(TARGET, "debug/casenote-server");
export const CLI_BIN = process.env.CASENOTE_CLI_BIN ?? path.join(TARGET, "debug/casenote");

/** Waits until `check()` returns a truthy value (polling), or fails after `ms`. */
export async function until(what, check, ms = 20_000, every = 50) {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await check();
    if (got) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise(r => setTimeout(r, every));
  }
}

/** A server on the demo data. `stop()` ends it (SIGTERM) and removes its directory. */
export async function startServer({ appDir } = {}) {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "casenote-web-"));
  const data = path.join(tmp, "server");
  const demo = JSON.parse(execFileSync(SERVER_BIN, ["demo", "--data", data, "--json"], { encoding: "utf8" }));
  const args = ["serve", "--data", data, "--listen", "127.0.0.1:0"];
  if (appDir) args.push("--app-dir", appDir);
  const proc = spawn(SERVER_BIN, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: "debug" } });
  let logs = "";
  proc.stderr.on("data", d => { logs += d; });
  const url = await new Promise((resolve, reject) => {
    let out = "";
    proc.stdout.on("data", d => {
      out += d;
      const m = out.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) resolve(m[1]);
    });
    proc.on("exit", code => reject(new Error(`the server exited (${code}): ${logs}`)));
  });
  const token = name => demo.tokens.find(t => t.staff === name).token;
  const caseId = label => demo.cases.find(c => c.label === label).case_id;
  return {
    url, tmp, data, demo, token, caseId, proc,
    logs: () => logs,
    wsUrl: tok => `${url.replace("http", "ws")}/v1/repo?token=${encodeURIComponent(tok)}`,
    async caseload(tok) {
      const r = await fetch(`${url}/v1/caseload`, { headers: { authorization: `Bearer ${tok}` } });
      if (!r.ok) throw new Error(`caseload: ${r.status}`);
      return r.json();
    },
    admin(args) {
      return execFileSync(SERVER_BIN, ["admin", "--server", url, ...args], {
        encoding: "utf8", env: { ...process.env, CASENOTE_ADMIN_TOKEN: demo.admin_token },
      });
    },
    /** The audit log's entries (through the admin API). */
    audit() {
      return JSON.parse(execFileSync(SERVER_BIN, ["audit", "show", "--server", url, "--json"], {
        encoding: "utf8", env: { ...process.env, CASENOTE_ADMIN_TOKEN: demo.admin_token },
      }));
    },
    async stop() {
      proc.kill("SIGTERM");
      await new Promise(r => (proc.exitCode !== null ? r() : proc.on("exit", r)));
      rmSync(tmp, { recursive: true, force: true });
    },
  };
}

const devices = new Map();

/**
 * A CLI device (the real `casenote` binary) signed in to `server` as demo staff `name`, and
 * synced once (one per server and name). Its commands run asynchronously: a test that polls a
 * device must not block node's event loop, on which the automerge-repo clients send and receive.
 */
export async function cliDevice(server, name) {
  const key = `${server.url} ${name}`;
  if (!devices.has(key)) devices.set(key, newCliDevice(server, name));
  return devices.get(key);
}

/** Runs the CLI with `args` and resolves to its trimmed stdout; rejects with its stderr. */
function runCli(args, env) {
  return new Promise((resolve, reject) => {
    execFile(CLI_BIN, args, { encoding: "utf8", env }, (err, stdout, stderr) => {
      if (err) reject(new Error(`casenote ${args.slice(2).join(" ")}: ${err.message}\n${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

async function newCliDevice(server, name) {
  const store = path.join(server.tmp, `cli-${name.replace(/\W+/g, "-")}`);
  const env = { ...process.env, XDG_CONFIG_HOME: `${store}.config`, CASENOTE_TOKEN: server.token(name) };
  const run = args => runCli(["--store", store, ...args], env);
  await run(["login", "--server", server.url]);
  await run(["sync"]);
  return {
    run,
    json: async args => JSON.parse(await run(args)),
    sync: async () => JSON.parse(await run(["sync", "--json"])),
    show: async caseId => JSON.parse(await run(["show", caseId, "--json"])),
  };
}

/** An automerge-repo client (no storage) connected to the server's /v1/repo with `token`. */
export function repoClient(server, token) {
  const adapter = new WebSocketClientAdapter(server.wsUrl(token), 500);
  const repo = new Repo({ network: [adapter] });
  return { repo, adapter, close: () => repo.shutdown() };
}
