// The `partysocket` npm client through two cluster nodes (tests/tests/cluster.rs): two
// sockets in one room of the `main` counter party of tests/src/bin/cluster-node.rs, one
// through each node, exchange messages; an increment reaches both.
//
// Usage: node cluster-partysocket.mjs <host:port of node A> <host:port of node B> <room>

import PartySocket from "partysocket";
import WS from "ws";

import { check, deadline, done, nextEvent } from "./harness.mjs";

const [hostA, hostB, room] = process.argv.slice(2);
if (!hostA || !hostB || !room) {
  console.error("usage: node cluster-partysocket.mjs <hostA> <hostB> <room>");
  process.exit(2);
}
deadline(20_000);

function socket(host, name) {
  const socket = new PartySocket({ host, room, party: "main", WebSocket: WS });
  socket.name = name;
  return socket;
}

// The first socket's node owns the room; the second is relayed to it.
const a = socket(hostA, "A");
const countA = await nextEvent(a, "message", "A: the count on connect");
check(countA.data === "0", `A (through ${hostA}) got the count ${countA.data}`);
const b = socket(hostB, "B");
const countB = await nextEvent(b, "message", "B: the count on connect");
check(countB.data === "0", `B (through ${hostB}) got the count ${countB.data}`);

async function exchange(from, to, text) {
  const heard = nextEvent(to, "message", `${to.name} hears ${from.name}`);
  const echoed = nextEvent(from, "message", `${from.name} hears itself`);
  from.send(text);
  check((await heard).data === text, `${to.name} received ${from.name}'s ${JSON.stringify(text)}`);
  check((await echoed).data === text, `${from.name} received its own broadcast`);
}
await exchange(a, b, "hello from a");
await exchange(b, a, "hello from b");

const incA = nextEvent(a, "message", "A hears the increment");
const incB = nextEvent(b, "message", "B hears the increment");
b.send("inc");
check((await incA).data === "1" && (await incB).data === "1", "an increment through B reached both");

a.close();
b.close();
done("ok: partysocket through two nodes");
