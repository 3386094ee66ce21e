// One session of the persisted Yjs example, between server restarts.
//
// Usage: node yjs-persist.mjs <host:port> <room> <expected text> [text to append]
// A new provider must see exactly <expected text>. With [text to append], it appends it
// and waits until a second provider has received it: the server stores an update before
// it broadcasts it, so what the second provider saw is durable when this script ends.

import * as Y from "yjs";
import YPartyKitProvider from "y-partykit/provider";
import WS from "ws";

import { check, deadline, done, waitFor } from "./harness.mjs";

const [host, room, expected, append = ""] = process.argv.slice(2);
if (!host || !room || expected === undefined) {
  console.error("usage: node yjs-persist.mjs <host:port> <room> <expected text> [text to append]");
  process.exit(2);
}
deadline(15_000);

function provider() {
  return new YPartyKitProvider(host, room, new Y.Doc(), { WebSocketPolyfill: WS });
}

const writer = provider();
await waitFor(() => writer.synced, "a new provider synced");
const text = writer.doc.getText("content");
check(text.toString() === expected, `a new provider sees ${JSON.stringify(text.toString())}`);

if (append) {
  const reader = provider();
  await waitFor(() => reader.synced, "a second provider synced");
  text.insert(text.length, append);
  const goal = expected + append;
  const seen = reader.doc.getText("content");
  await waitFor(() => seen.toString() === goal, `the second provider sees ${JSON.stringify(goal)}`);
  reader.destroy();
}

writer.destroy();
done("y-partykit persistence checks passed");
