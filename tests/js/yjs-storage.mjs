// partykit-rs's Yjs storage layout checked against y-partykit's own storage code
// (`y-partykit/storage`), run here over a copy of the room's storage.
//
// Usage: node yjs-storage.mjs <host:port>
// The `layout` test party (tests/tests/js_clients.rs) shows its storage at
// `GET /parties/layout/<room>/storage` and takes entries at `PUT …/storage` (hex values).
// 1. What partykit-rs stored (a 300 KB text, so values are split at 128 KiB), compacted
//    when the provider left, reads back with y-partykit's `YPartyKitStorage.getYDoc`.
// 2. What `YPartyKitStorage` writes (updates, a compaction, one more update) is what
//    partykit-rs loads: a provider then sees the same text.

import * as Y from "yjs";
import YPartyKitProvider from "y-partykit/provider";
import { YPartyKitStorage } from "y-partykit/storage";
import WS from "ws";

import { check, deadline, done, waitFor } from "./harness.mjs";

const [host] = process.argv.slice(2);
if (!host) {
  console.error("usage: node yjs-storage.mjs <host:port>");
  process.exit(2);
}
deadline(20_000);

/** Party.Storage as y-partykit uses it, over a Map. */
class MapStorage {
  constructor(entries = new Map()) {
    this.entries = entries;
  }
  async get(key) {
    return this.entries.get(key);
  }
  async put(key, value) {
    this.entries.set(key, value);
  }
  async delete(keys) {
    for (const key of Array.isArray(keys) ? keys : [keys]) this.entries.delete(key);
  }
  async list({ start, end, reverse = false, limit } = {}) {
    let keys = [...this.entries.keys()]
      .filter((key) => (start === undefined || key >= start) && (end === undefined || key < end))
      .sort();
    if (reverse) keys.reverse();
    if (limit !== undefined) keys = keys.slice(0, limit);
    return new Map(keys.map((key) => [key, this.entries.get(key)]));
  }
  async transaction(body) {
    return body(this);
  }
}

const storageUrl = (room) => `http://${host}/parties/layout/${room}/storage`;
const text = (doc) => doc.getText("content").toString();
let big = "";
for (let i = 0; i < 300_000; i++) big += String.fromCharCode(97 + ((i * 31) % 26));

// --- 1. partykit-rs writes, y-partykit reads ---------------------------------------------
{
  const room = "written-by-rust";
  const provider = new YPartyKitProvider(host, room, new Y.Doc(), {
    party: "layout",
    WebSocketPolyfill: WS,
  });
  await waitFor(() => provider.synced, "provider synced");
  const content = provider.doc.getText("content");
  content.insert(0, big);
  content.insert(0, "partykit-rs wrote this: ");
  const expected = text(provider.doc);
  // Read back through the server, so both updates are stored before the provider leaves.
  await waitFor(
    async () => (await (await fetch(`http://${host}/parties/layout/${room}`)).text()) === expected,
    "the server has both updates",
  );
  provider.destroy();

  const updateKey = new RegExp(`^"v1"#"${room}"#"update"#\\d{9}#\\d{3}$`);
  let entries;
  await waitFor(async () => {
    entries = Object.entries(await (await fetch(storageUrl(room))).json());
    const clocks = new Set(entries.map(([key]) => key.split("#")[3]).filter((clock) => clock));
    // Compacted: one update, at the clock after the two stored ones.
    return clocks.size === 1 && clocks.has("000000002");
  }, "the updates were compacted into one snapshot when the provider left");
  const keys = entries.map(([key]) => key);
  check(
    keys.every((key) => updateKey.test(key) || key === `"v1_sv"#"${room}"#000`),
    `every key is in y-partykit's layout: ${keys.join(", ")}`,
  );
  check(keys.length === 4, "the 300 KB snapshot is split over 3 values, plus the state vector");
  check(
    entries.every(([, hex]) => hex.length / 2 <= 128 * 1024),
    "no value is over 128 KiB",
  );

  const storage = new MapStorage(
    new Map(entries.map(([key, hex]) => [key, new Uint8Array(Buffer.from(hex, "hex"))])),
  );
  const doc = await new YPartyKitStorage(storage).getYDoc(room);
  check(text(doc) === expected, "y-partykit's getYDoc reads partykit-rs's document");
  const stored = Y.decodeStateVector(await new YPartyKitStorage(storage).getStateVector(room));
  const actual = Y.decodeStateVector(Y.encodeStateVector(doc));
  check(
    stored.size === actual.size && [...actual].every(([client, clock]) => stored.get(client) === clock),
    "the stored state vector is current for y-partykit",
  );
}

// --- 2. y-partykit writes, partykit-rs reads -----------------------------------------------
{
  const room = "written-by-y-partykit";
  const storage = new MapStorage();
  const writer = new YPartyKitStorage(storage);
  const source = new Y.Doc();
  const content = source.getText("content");
  const updates = [];
  source.on("update", (update) => updates.push(update));
  content.insert(0, big);
  content.insert(0, "y-partykit wrote this: ");
  for (const update of updates.splice(0)) await writer.storeUpdate(room, update);
  await writer.compactUpdateLog(room, 0, 0);
  content.insert(content.length, " (and one more update)");
  for (const update of updates.splice(0)) await writer.storeUpdate(room, update);
  await writer.tr;
  // y-partykit deletes compacted updates without waiting for it.
  await new Promise((resolve) => setTimeout(resolve, 50));

  const dump = Object.fromEntries(
    [...storage.entries].map(([key, value]) => [key, Buffer.from(value).toString("hex")]),
  );
  check(Object.keys(dump).length > 4, `y-partykit wrote ${Object.keys(dump).length} values`);
  const put = await fetch(storageUrl(room), { method: "PUT", body: JSON.stringify(dump) });
  check(put.status === 200, `the party stored them (${put.status})`);

  const provider = new YPartyKitProvider(host, room, new Y.Doc(), {
    party: "layout",
    WebSocketPolyfill: WS,
  });
  await waitFor(() => provider.synced, "provider synced");
  check(text(provider.doc) === text(source), "partykit-rs loaded y-partykit's document");
  provider.destroy();
}

done("y-partykit storage layout checks passed");
