// The Yjs example driven by the real `y-partykit` provider (with `ws` as WebSocket).
//
// Usage: node yjs.mjs <host:port> <room>
// Checks: concurrent edits converge; a late joiner gets the whole document; awareness
// reaches the others and is removed when a connection drops; a document over 1 MB
// syncs (the provider sends it in y-pk-batch chunks; the server broadcasts it whole);
// the server's HTTP view of the text matches.

import * as Y from "yjs";
import YPartyKitProvider from "y-partykit/provider";
import WS from "ws";

import { check, deadline, done, waitFor } from "./harness.mjs";

const [host, room] = process.argv.slice(2);
if (!host || !room) {
  console.error("usage: node yjs.mjs <host:port> <room>");
  process.exit(2);
}
deadline(30_000);

const providers = [];
function provider(name) {
  const doc = new Y.Doc();
  const connection = new YPartyKitProvider(host, room, doc, { WebSocketPolyfill: WS });
  connection.name = name;
  providers.push(connection);
  return connection;
}
const synced = (p) => waitFor(() => p.synced, `${p.name} synced`);
const text = (p) => p.doc.getText("content");
const count = (haystack, needle) => haystack.split(needle).length - 1;

// --- Two providers converge on concurrent edits -----------------------------------------
const a = provider("A");
const b = provider("B");
await Promise.all([synced(a), synced(b)]);
check(a.url.includes(`/parties/main/${room}?_pk=`), `provider URL ${a.url}`);
check(text(a).toString() === "", "the room starts empty");

// Within one tick neither provider has heard of the other's edits: they are concurrent.
const tokens = [];
for (let i = 0; i < 40; i++) {
  for (const [p, tag] of [[a, "a"], [b, "b"]]) {
    const token = `[${tag}${i}]`;
    tokens.push(token);
    const t = text(p);
    t.insert(i % 2 === 0 ? 0 : t.length, token);
  }
}
await waitFor(
  () => text(a).toString() === text(b).toString() && text(a).length === tokens.join("").length,
  "A and B converge after 80 concurrent inserts",
);
const converged = text(a).toString();
check(tokens.every((token) => count(converged, token) === 1), "every insert is there exactly once");

// A concurrent delete and insert.
const firstToken = converged.slice(0, converged.indexOf("]") + 1);
text(a).delete(0, firstToken.length);
text(b).insert(text(b).length, "[tail]");
await waitFor(
  () => text(a).toString() === text(b).toString() && text(a).toString().endsWith("[tail]"),
  "A and B converge after a concurrent delete and insert",
);
check(!text(b).toString().startsWith(firstToken), `B saw A's delete of ${firstToken}`);

// --- A third provider joining later receives the whole document -------------------------
const c = provider("C");
await synced(c);
check(text(c).toString() === text(a).toString(), "C, joining later, received the full document");

// --- Awareness ---------------------------------------------------------------------------
a.awareness.setLocalState({ user: "ada" });
b.awareness.setLocalState({ user: "bob" });
const sees = (p, q, user) => p.awareness.getStates().get(q.doc.clientID)?.user === user;
await waitFor(() => sees(b, a, "ada") && sees(c, a, "ada"), "B and C see A's awareness");
await waitFor(() => sees(a, b, "bob") && sees(c, b, "bob"), "A and C see B's awareness");
console.log("ok: awareness updates reached the other providers");

// A's connection drops without a goodbye (no null state sent): the server removes A's
// state and tells the others.
a.shouldConnect = false;
a.ws.terminate();
await waitFor(
  () => !b.awareness.getStates().has(a.doc.clientID) && !c.awareness.getStates().has(a.doc.clientID),
  "the server removed A's awareness for B and C after A disconnected",
);
check(sees(c, b, "bob"), "B's awareness is still there");
a.destroy();

// --- A document over 1 MB ----------------------------------------------------------------
let big = "";
const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 ";
for (let i = 0; i < 1_300_000; i++) big += alphabet[(i * 7919) % alphabet.length];
const before = text(b).length;
text(b).insert(before, big);
const expectedLength = before + big.length;
await waitFor(() => text(c).length === expectedLength, "C received B's 1.3 MB insert", 15_000);
check(text(c).toString() === text(b).toString(), "C's text equals B's after the 1.3 MB update");

const d = provider("D");
await waitFor(() => d.synced, "D synced a 1.3 MB document", 15_000);
check(text(d).toString() === text(b).toString(), "D, joining later, received the 1.3 MB document");

// --- The server's own view -----------------------------------------------------------------
const response = await fetch(`http://${host}/parties/main/${room}`);
check(response.status === 200, `GET the room answered ${response.status}`);
check((await response.text()) === text(b).toString(), "the server's text equals the providers'");

for (const p of providers) p.destroy();
done("all y-partykit checks passed");
