// The chat example driven by the real `partysocket` npm client under Node.
//
// Usage: node chat.mjs <host:port> <room>
// Exits 0 when every check passed; otherwise prints what failed and exits 1.

import PartySocket from "partysocket";
import WS from "ws";

const [host, room] = process.argv.slice(2);
if (!host || !room) {
  console.error("usage: node chat.mjs <host:port> <room>");
  process.exit(2);
}

const deadline = setTimeout(() => {
  console.error("FAIL: timed out after 15 s");
  process.exit(1);
}, 15_000);

function check(condition, message) {
  if (!condition) {
    console.error(`FAIL: ${message}`);
    process.exit(1);
  }
  console.log(`ok: ${message}`);
}

function opened(socket) {
  return new Promise((resolve) => socket.addEventListener("open", resolve, { once: true }));
}

function nextMessage(socket) {
  return new Promise((resolve) =>
    socket.addEventListener("message", (event) => resolve(event.data), { once: true }),
  );
}

// One socket with today's URL shape (/parties/main/<room>) ...
const current = new PartySocket({ host, room, party: "main", WebSocket: WS });
// ... and one with the legacy shape older clients used (/party/<room>).
const legacy = new PartySocket({ host, basePath: `party/${room}`, WebSocket: WS });

await Promise.all([opened(current), opened(legacy)]);
check(current.url.includes(`/parties/main/${room}?_pk=`), `current socket URL ${current.url}`);
check(legacy.url.includes(`/party/${room}?_pk=`), `legacy socket URL ${legacy.url}`);

let received = nextMessage(legacy);
current.send("hello from current");
check((await received) === "hello from current", "legacy socket received the current socket's broadcast");

received = nextMessage(current);
legacy.send("hello from legacy");
check((await received) === "hello from legacy", "current socket received the legacy socket's broadcast");

const response = await PartySocket.fetch({ host, room, party: "main" });
check(response.status === 200, `PartySocket.fetch answered ${response.status}`);
const info = await response.json();
check(info.room === room, `on_request saw room ${JSON.stringify(info.room)}`);
check(info.connections === 2, `on_request counted ${info.connections} connections`);

current.close();
legacy.close();
clearTimeout(deadline);
console.log("all partysocket checks passed");
