// The yjs example's page in headless Chromium: two pages of one document see each other's
// typing.
//
// Usage: node browser-yjs.mjs <host:port> <room> <chromium> <screenshot dir>
// Checks: both pages load from the server only (the vendored yjs and y-partykit modules,
// no CDN), connect, sync and count two people (awareness); what is typed in page A
// appears in page B's editor and the other way round; the server's HTTP view of the
// text is the same. Screenshots: yjs-a.png and yjs-b.png.

import { check, done } from "./harness.mjs";
import { screenshot, step, twoPages } from "./browser.mjs";

const { host, room, shots, browser, a, b } = await twoPages("browser-yjs.mjs");
for (const page of [a, b]) {
  // The editor is enabled once the provider synced with the server.
  await step(`page ${page.name} synced`, page.waitForSelector("#editor:not([disabled])"));
  check((await page.textContent("#status")) === "connected", `page ${page.name} is connected`);
  check((await page.textContent("#room")) === room, `page ${page.name} edits room ${room}`);
  check((await page.inputValue("#editor")) === "", `page ${page.name} starts empty`);
}
for (const page of [a, b]) {
  await step(
    `page ${page.name} counts 2 people (awareness)`,
    page.waitForFunction(() => document.getElementById("people").textContent === "2 people here"),
  );
}

/** Waits until `page`'s editor holds exactly `text`. */
async function shows(page, text) {
  await step(
    `page ${page.name}'s editor reads ${JSON.stringify(text)}`,
    page.waitForFunction((text) => document.getElementById("editor").value === text, text),
  );
}

// Typed key by key (an input event each), as a person types.
const fromA = "Hello from A.";
await a.click("#editor");
await a.keyboard.type(fromA);
check((await a.inputValue("#editor")) === fromA, "page A's editor holds what was typed");
await shows(b, fromA);

const both = `${fromA} And from B.`;
await b.click("#editor");
await b.keyboard.press("Control+End");
await b.keyboard.type(" And from B.");
await shows(a, both);
await shows(b, both);

// The server's document (GET /parties/main/<room>) holds the same text.
const response = await fetch(`http://${host}/parties/main/${encodeURIComponent(room)}`, {
  signal: AbortSignal.timeout(5_000),
});
const served = await response.text();
check(response.status === 200 && served === both, `the server's text is ${JSON.stringify(served)}`);

await screenshot(a, shots, "yjs-a");
await screenshot(b, shots, "yjs-b");
a.assertClean();
b.assertClean();

await browser.close();
done("browser yjs: all checks passed");
