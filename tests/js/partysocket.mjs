// The `partysocket` npm client against the `echo` test party of tests/tests/js_clients.rs.
//
// Usage: node partysocket.mjs <host:port> <room>
// Checks: binary frames both ways; custom `query` parameters reach `on_before_connect`
// (which refuses sockets without the token); `PartySocket.fetch` with a POST body; a socket
// and a fetch on a sub-path (`path` option).

import PartySocket from "partysocket";
import WS from "ws";

import { check, deadline, done, nextEvent } from "./harness.mjs";

const [host, room] = process.argv.slice(2);
if (!host || !room) {
  console.error("usage: node partysocket.mjs <host:port> <room>");
  process.exit(2);
}
deadline(15_000);

const party = "echo";
const token = "let-me-in";

/** The first message of a socket: the `hello` its `on_connect` sends. */
async function hello(socket, what) {
  const event = await nextEvent(socket, "message", `${what}: hello`);
  return JSON.parse(event.data);
}

// --- Custom query parameters reach on_before_connect -------------------------------------
const socket = new PartySocket({
  host,
  room,
  party,
  WebSocket: WS,
  query: { token, lang: "fr", empty: null },
});
socket.binaryType = "arraybuffer";
const greeting = await hello(socket, "query socket");
check(greeting.id === socket.id, `on_connect saw _pk ${greeting.id}`);
check(
  greeting.query === `_pk=${socket.id}&token=${token}&lang=fr`,
  `on_before_connect saw the query ${greeting.query} (null values dropped)`,
);

// Without the token, on_before_connect refuses the upgrade with 401.
const refused = new WS(`ws://${host}/parties/${party}/${room}?token=wrong`);
const status = await new Promise((resolve) => {
  refused.on("unexpected-response", (_request, response) => resolve(response.statusCode));
  refused.on("open", () => resolve(101));
  refused.on("error", () => {});
});
check(status === 401, `a socket with a wrong token was refused with ${status}`);

// --- Binary frames both ways ----------------------------------------------------------------
const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff);
socket.send(bytes);
const echoed = await nextEvent(socket, "message", "binary echo");
check(echoed.data instanceof ArrayBuffer, "the reply to a binary frame is a binary frame");
const reply = new Uint8Array(echoed.data);
check(
  reply.length === bytes.length && reply.every((byte, i) => byte === bytes[bytes.length - 1 - i]),
  "the server received the 300 bytes and sent them back reversed",
);
socket.send("plain text");
const text = await nextEvent(socket, "message", "text echo");
check(text.data === "echo:plain text", `text frames stay text (${text.data})`);

// --- PartySocket.fetch with a POST body -------------------------------------------------------
const response = await PartySocket.fetch(
  { host, room, party, query: { token, n: "1" } },
  { method: "POST", body: JSON.stringify({ hello: "world" }), headers: { "content-type": "application/json" } },
);
check(response.status === 200, `PartySocket.fetch POST answered ${response.status}`);
const seen = await response.json();
check(seen.method === "POST", `on_request saw method ${seen.method}`);
check(seen.body === '{"hello":"world"}', `on_request saw the body ${seen.body}`);
check(seen.query === `token=${token}&n=1`, `on_request saw the query ${seen.query} (no _pk)`);
check(seen.contentType === "application/json", `on_request saw content-type ${seen.contentType}`);

// --- A socket and a fetch on a sub-path (`path` option) ---------------------------------------
const sub = new PartySocket({ host, room, party, path: "notes/today", WebSocket: WS, query: { token } });
const subHello = await hello(sub, "sub-path socket");
check(sub.url.includes(`/parties/${party}/${room}/notes/today?_pk=`), `sub-path socket URL ${sub.url}`);
check(subHello.path === `/parties/${party}/${room}/notes/today`, `on_connect saw the path ${subHello.path}`);
check(subHello.connections === 2, `both sockets are in the same room (${subHello.connections})`);
const subFetch = await PartySocket.fetch({ host, room, party, path: "notes/today" });
const subSeen = await subFetch.json();
check(subSeen.path === `/parties/${party}/${room}/notes/today`, `on_request saw the path ${subSeen.path}`);
check(subSeen.method === "GET", "a fetch without init is a GET");

socket.close();
sub.close();
done("all partysocket checks passed");
