// Shared helpers of the Node client scripts: checks that print what they verified, bounded
// waits, and line-based coordination with the Rust test through stdin/stdout.
//
// Every wait is bounded; a failed check or an expired wait prints `FAIL: …` and exits 1.

import { createInterface } from "node:readline";

/** Fails the whole script if it has not finished within `ms`. */
export function deadline(ms) {
  const timer = setTimeout(() => fail(`timed out after ${ms / 1000} s`), ms);
  timer.unref();
}

export function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

export function check(condition, message) {
  if (!condition) fail(message);
  console.log(`ok: ${message}`);
}

/**
 * Resolves once `predicate()` (which may be async) holds, polled every 10 ms, saying so;
 * fails after `ms`.
 */
export function waitFor(predicate, what, ms = 5_000) {
  return new Promise((resolve) => {
    const started = Date.now();
    const poll = async () => {
      let value;
      try {
        value = await predicate();
      } catch (error) {
        fail(`${what}: ${error}`);
      }
      if (value) {
        console.log(`ok: ${what}`);
        return resolve(value);
      }
      if (Date.now() - started > ms) fail(`${what}: not within ${ms / 1000} s`);
      setTimeout(poll, 10);
    };
    poll();
  });
}

/** Resolves with the next `type` event of `target` (an EventTarget); fails after `ms`. */
export function nextEvent(target, type, what, ms = 5_000) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => fail(`${what}: no ${type} event within ${ms / 1000} s`), ms);
    target.addEventListener(
      type,
      (event) => {
        clearTimeout(timer);
        resolve(event);
      },
      { once: true },
    );
  });
}

const stdinLines = [];
const stdinWaiters = [];
let stdinReader;

/** Resolves when the Rust test writes `line` to stdin; fails after `ms`. */
export function expectLine(line, ms = 10_000) {
  if (!stdinReader) {
    stdinReader = createInterface({ input: process.stdin });
    stdinReader.on("line", (received) => {
      stdinLines.push(received.trim());
      for (const waiter of [...stdinWaiters]) waiter();
    });
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => fail(`no "${line}" on stdin within ${ms / 1000} s`), ms);
    const attempt = () => {
      const index = stdinLines.indexOf(line);
      if (index === -1) return;
      stdinLines.splice(index, 1);
      stdinWaiters.splice(stdinWaiters.indexOf(attempt), 1);
      clearTimeout(timer);
      resolve();
    };
    stdinWaiters.push(attempt);
    attempt();
  });
}

/** Tells the Rust test something: one line on stdout. */
export function tell(line) {
  console.log(line);
}

/** Ends the script successfully (open sockets and timers would keep Node running). */
export function done(message) {
  console.log(message);
  stdinReader?.close();
  process.exit(0);
}
