// The inspection dashboard (/__partykit/) in headless Chromium, against a server with an
// admin token and one room with two connections, driven by the Rust test over stdin/stdout.
// The second connection's id is markup (`<img … onerror=…>`): connection ids are the
// clients' `_pk`, so the page must show them as text.
//
// Usage: node browser-dashboard.mjs <host:port> <token> <party> <room> <connection id>
//          <markup connection id> <bursts> <messages> <chromium> <screenshot dir>
//          <screenshot name>
// Checks:
// - a wrong token is refused (401) and the token form comes back with a message;
// - with the right token, the room is in the rooms table with 2 connections;
// - the chart is redrawn every second: after each redraw the script asks for a burst of
//   messages ("burst" on stdout), which the Rust test sends, each answered twice, before
//   it says "sent"; after <bursts> bursts of <messages> messages in all, the chart has
//   counted exactly those messages in and twice as many out, and drawn its three lines;
// - clicking the room shows both connections, the markup id as text (no element made of
//   it, no script run), and its storage key; clicking the key shows the stored value;
// - after the screenshot, the connection's Close button closes it: the script says
//   "close-clicked" and the Rust test checks the code and reason its client got; the row
//   then goes away.
// Every page request stays on the server under test and the page logs no error.

import { check, deadline, done, expectLine, fail, tell } from "./harness.mjs";
import { STEP_MS, launch, openPage, screenshot, step } from "./browser.mjs";

const args = process.argv.slice(2);
const [host, token, party, room, connection, markup, bursts, messages, chromium, shots, shotName] =
  args;
if (!shotName) {
  console.error(
    "usage: node browser-dashboard.mjs <host:port> <token> <party> <room> <connection id> " +
      "<markup connection id> <bursts> <messages> <chromium> <screenshot dir> <screenshot name>",
  );
  process.exit(2);
}
deadline(45_000);
const browser = await launch(chromium);
const PATH = "/__partykit/";

/** Types `value` into the token form and submits it. */
async function signIn(page, value) {
  await step("the token form is shown", page.waitForSelector("[data-testid=token-input]"));
  await page.fill("[data-testid=token-input]", value);
  await page.click("[data-testid=token-submit]");
}

// A wrong token, in a page of its own: its 401s are the expected console errors, so this
// page is not one of openPage's checked pages.
{
  const context = await browser.newContext();
  context.setDefaultTimeout(STEP_MS);
  const page = await context.newPage();
  page.on("pageerror", (error) => fail(`an error in the page: ${error.message}`));
  await page.goto(`http://${host}${PATH}`);
  await signIn(page, `${token}-wrong`);
  await step(
    "a wrong token brings the token form back with a message",
    page.waitForFunction(() => {
      const message = document.querySelector("[data-testid=token-message]");
      const input = document.querySelector("[data-testid=token-input]");
      return message.textContent.includes("refused") && input.checkVisibility();
    }),
  );
  check(
    (await page.evaluate(() => sessionStorage.length)) === 0,
    "the refused token is not kept in session storage",
  );
  await context.close();
}

const page = await openPage(browser, host, PATH, "dashboard");
await page.setViewportSize({ width: 1000, height: 700 });
await signIn(page, token);

const row = `[data-testid=room-row][data-party="${party}"][data-room="${room}"]`;
await step(
  `the rooms table lists ${party}/${room} with 2 connections`,
  page.waitForFunction(
    (row) => document.querySelector(`${row} [data-testid=room-connections]`)?.textContent === "2",
    row,
  ),
);
check(
  (await page.evaluate(() => sessionStorage.length)) === 1,
  "the accepted token is kept in session storage",
);

/** Waits until the chart has been redrawn since it showed `seen` updates; returns the count. */
async function chartRedrawn(seen, what) {
  const handle = await step(
    what,
    page.waitForFunction((seen) => {
      const updates = Number(document.querySelector("[data-testid=chart-updated]").textContent);
      return updates > seen && updates;
    }, seen),
  );
  return handle.jsonValue();
}

let updates = 0;
for (let burst = 1; burst <= Number(bursts); burst += 1) {
  updates = await chartRedrawn(updates, `the chart is redrawn before burst ${burst}`);
  tell("burst");
  await expectLine("sent");
}
await step(
  `the chart counts the ${messages} messages in and ${2 * messages} out, with 2 connections`,
  page.waitForFunction(
    (messages) => {
      const canvas = document.querySelector("[data-testid=chart-canvas]");
      const updates = document.querySelector("[data-testid=chart-updated]").textContent;
      return (
        canvas.dataset.updates === updates &&
        Number(canvas.dataset.received) === messages &&
        Number(canvas.dataset.sent) === 2 * messages &&
        Number(canvas.dataset.peakIn) > 0 &&
        Number(canvas.dataset.peakOut) > Number(canvas.dataset.peakIn) &&
        Number(canvas.dataset.peakConnections) === 2
      );
    },
    Number(messages),
  ),
);

// What the canvas shows: pixels of each series' colour inside the plot (the legend's
// swatches are above it), so the lines were drawn, not only counted.
const drawn = await page.evaluate(() => {
  const canvas = document.querySelector("[data-testid=chart-canvas]");
  const style = getComputedStyle(document.documentElement);
  const ctx = canvas.getContext("2d");
  const ratio = canvas.width / canvas.clientWidth;
  const top = Math.round(26 * ratio);
  const { data } = ctx.getImageData(0, top, canvas.width, canvas.height - top);
  const counts = {};
  for (const name of ["--series-in", "--series-out", "--series-connections"]) {
    const probe = document.createElement("canvas").getContext("2d");
    probe.fillStyle = style.getPropertyValue(name).trim();
    probe.fillRect(0, 0, 1, 1);
    const [r, g, b] = probe.getImageData(0, 0, 1, 1).data;
    let count = 0;
    for (let i = 0; i < data.length; i += 4) {
      const close = Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b);
      if (data[i + 3] > 200 && close < 30) count += 1;
    }
    counts[name] = count;
  }
  return counts;
});
for (const [series, count] of Object.entries(drawn)) {
  check(count > 0, `the chart draws the ${series} line (${count} pixels)`);
}

// The room's details.
await page.click(`${row} button`);
const connectionRow = `[data-testid=connection-row][data-id="${connection}"]`;
await step(
  "the room's details show its connection",
  page.waitForSelector(`[data-testid=room-detail] ${connectionRow}`),
);
check(
  (await page.textContent(`${connectionRow} td:nth-child(2)`)).includes(`/parties/${party}/${room}`),
  "the connection's uri is its upgrade request's",
);
const markupRow = await step(
  "the room's details show the connection whose id is markup",
  page.waitForFunction((markup) => {
    const rows = document.querySelectorAll("[data-testid=room-detail] [data-testid=connection-row]");
    return [...rows].find((row) => row.dataset.id === markup);
  }, markup),
);
check(
  (await markupRow.evaluate((row) => row.cells[0].textContent)) === markup,
  "the markup id is shown as text",
);
check(
  (await page.evaluate(() => [document.querySelectorAll("#detail img").length, window.__xss])).join() ===
    "0,",
  "no element was made of the markup id and its script did not run",
);
const storageRow = '[data-testid=storage-row][data-key="messages"]';
await step("the room's details list its storage key", page.waitForSelector(storageRow));
await page.click(`${storageRow} button`);
await step(
  "clicking the key shows its JSON value",
  page.waitForFunction(() => /^\d+$/.test(document.querySelector("[data-testid=storage-value]").textContent)),
);
const stored = await page.textContent("[data-testid=storage-value]");
check(stored === messages, `the key's value is the room's message count, ${messages} (${stored})`);

// The picture: the chart and the table at the top, the room's details below.
await page.evaluate(() => window.scrollTo(0, 0));
await screenshot(page, shots, shotName);
page.assertClean();

// Closing the connection from the dashboard.
await page.click(`${connectionRow} [data-testid=connection-close]`);
tell("close-clicked");
await step(
  "the closed connection leaves the room's details",
  page.waitForSelector(connectionRow, { state: "detached" }),
);
await step(
  "the dashboard says the connection was closed",
  page.waitForFunction(
    (connection) =>
      document.querySelector("[data-testid=action-status]").textContent === `Closed connection ${connection}.`,
    connection,
  ),
);
page.assertClean();
await browser.close().catch((error) => fail(`cannot close the browser: ${error.message}`));
done("browser dashboard: all checks passed");
