// A `partysocket` client across a server restart on the same address.
//
// Usage: node partysocket-restart.mjs <host:port> <room>
// Protocol with the Rust test: once connected this prints `ready-for-restart`; the test
// stops the server (sockets close with 1001), serves again on the same port and writes
// `restarted` to stdin. The socket must reconnect by itself, with the same `_pk`, and with
// its `query` function evaluated again.

import PartySocket from "partysocket";
import WS from "ws";

import { check, deadline, done, expectLine, nextEvent, tell } from "./harness.mjs";

const [host, room] = process.argv.slice(2);
if (!host || !room) {
  console.error("usage: node partysocket-restart.mjs <host:port> <room>");
  process.exit(2);
}
deadline(20_000);

let attempts = 0;
const socket = new PartySocket({
  host,
  room,
  party: "echo",
  WebSocket: WS,
  // Evaluated on every (re)connect.
  query: async () => ({ token: "let-me-in", attempt: String(++attempts) }),
  // Retry quickly: the restart takes a moment.
  minReconnectionDelay: 100,
  maxReconnectionDelay: 500,
  connectionTimeout: 2_000,
});

const first = JSON.parse((await nextEvent(socket, "message", "first hello")).data);
check(first.id === socket.id, `connected as ${first.id}`);
check(first.query.endsWith("&attempt=1"), `first query ${first.query}`);

const closed = nextEvent(socket, "close", "close on server shutdown", 10_000);
tell("ready-for-restart");
const close = await closed;
check(close.code === 1001, `the server's shutdown closed the socket with ${close.code}`);

const second = JSON.parse((await nextEvent(socket, "message", "hello after reconnecting", 10_000)).data);
await expectLine("restarted");
check(second.id === first.id, `reconnected with the same _pk ${second.id}`);
check(socket.id === first.id, "the client kept its id");
const attempt = Number(new URLSearchParams(second.query).get("attempt"));
check(attempt >= 2, `the query function ran again (attempt ${attempt})`);

socket.send("after restart");
const echo = await nextEvent(socket, "message", "echo after reconnecting");
check(echo.data === "echo:after restart", "the reconnected socket works");

socket.close();
done("partysocket reconnection checks passed");
