// Two `y-partykit` providers on different cluster nodes (tests/tests/cluster.rs), on the
// `yjs` party of tests/src/bin/cluster-node.rs: concurrent edits converge, and a third
// provider through the first node receives the whole document.
//
// Usage: node cluster-yjs.mjs <host:port of node A> <host:port of node B> <room>

import * as Y from "yjs";
import YPartyKitProvider from "y-partykit/provider";
import WS from "ws";

import { check, deadline, done, waitFor } from "./harness.mjs";

const [hostA, hostB, room] = process.argv.slice(2);
if (!hostA || !hostB || !room) {
  console.error("usage: node cluster-yjs.mjs <hostA> <hostB> <room>");
  process.exit(2);
}
deadline(30_000);

const providers = [];
function provider(host, name) {
  const doc = new Y.Doc();
  const connection = new YPartyKitProvider(host, room, doc, {
    party: "yjs",
    WebSocketPolyfill: WS,
  });
  connection.name = name;
  providers.push(connection);
  return connection;
}
const synced = (p) => waitFor(() => p.synced, `${p.name} synced`, 10_000);
const text = (p) => p.doc.getText("content");

const a = provider(hostA, "A");
await synced(a);
const b = provider(hostB, "B");
await synced(b);
check(b.url.includes(`/parties/yjs/${room}`), `provider URL ${b.url}`);

// Concurrent: neither has heard of the other's edit yet.
text(a).insert(0, "[from a]");
text(b).insert(0, "[from b]");
await waitFor(
  () =>
    text(a).toString() === text(b).toString() &&
    text(a).toString().includes("[from a]") &&
    text(a).toString().includes("[from b]"),
  "A and B, on different nodes, converge",
  10_000,
);

const c = provider(hostA, "C");
await synced(c);
await waitFor(() => text(c).toString() === text(a).toString(), "C received the whole document");

for (const p of providers) p.destroy();
done("ok: y-partykit through two nodes");
