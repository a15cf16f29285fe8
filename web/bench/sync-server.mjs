// automerge-repo's own sync server, as @automerge/automerge-repo-sync-server sets it up: a Repo
// with the WebSocket server adapter and Node filesystem storage, sharing nothing unasked. The
// baseline of bench.mjs. Prints "listening on PORT" and serves until killed.
import { WebSocketServer } from "ws";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketServerAdapter } from "@automerge/automerge-repo-network-websocket";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";

const dir = process.argv[2];
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
await new Promise(r => wss.on("listening", r));
new Repo({
  network: [new WebSocketServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: "sync-server",
  sharePolicy: async () => false,
});
console.log(`listening on ${wss.address().port}`);
