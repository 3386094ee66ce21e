// The cursors example's page in headless Chromium: two pages of one room see each other's
// cursor.
//
// Usage: node browser-cursors.mjs <host:port> <room> <chromium> <screenshot dir>
// Checks: both pages load from the server only and connect; the mouse moved in page A
// shows A's cursor in page B where it is in A (the pages have the same size), and the
// other way round; closing A removes its cursor from B. Screenshots: cursors-a.png and
// cursors-b.png, each showing the other page's cursor.

import { check, done } from "./harness.mjs";
import { screenshot, step, twoPages } from "./browser.mjs";

const { room, shots, browser, a, b } = await twoPages("browser-cursors.mjs");
for (const page of [a, b]) {
  await step(`page ${page.name} is connected`, page.waitForSelector("#status.connected"));
  check((await page.textContent("#room")) === room, `page ${page.name} is in room ${room}`);
}

/**
 * Waits until `page` renders exactly one other cursor, with its arrow's tip (the
 * element's top left corner) within 2 px of (x, y), once its transition has finished.
 */
async function seesCursorAt(page, x, y, whose) {
  await step(
    `page ${page.name} shows ${whose}'s cursor at (${x}, ${y})`,
    page.waitForFunction(
      ([x, y]) => {
        const cursors = document.querySelectorAll("#cursors .cursor");
        if (cursors.length !== 1) return false;
        const box = cursors[0].getBoundingClientRect();
        return Math.abs(box.left - x) <= 2 && Math.abs(box.top - y) <= 2 && box.width > 0;
      },
      [x, y],
    ),
  );
  check((await page.textContent("#count")) === "1", `page ${page.name} counts 1 other cursor`);
}

// Nobody has moved yet: no cursors.
for (const page of [a, b]) {
  const shown = await page.locator("#cursors .cursor").count();
  check(shown === 0, `page ${page.name} shows no cursor before anyone moves (${shown})`);
}

// A moves (pointermove events, as a real mouse makes them): B sees it.
await a.mouse.move(100, 100);
await a.mouse.move(200, 150, { steps: 5 });
await seesCursorAt(b, 200, 150, "A");

// B moves: A sees B, and B still sees A where A left it.
await b.mouse.move(300, 300);
await b.mouse.move(560, 420, { steps: 5 });
await seesCursorAt(a, 560, 420, "B");
await seesCursorAt(b, 200, 150, "A");

// A's cursor carries a colour: the arrow is drawn in it.
const fill = await b.getAttribute("#cursors .cursor svg", "fill");
check(/^(#|hsl|rgb)/.test(fill ?? ""), `A's cursor is drawn in page B in its colour ${fill}`);

await screenshot(a, shots, "cursors-a");
await screenshot(b, shots, "cursors-b");
a.assertClean();
b.assertClean();

// A leaves: its cursor goes away in B.
await a.context().close();
await step(
  "page B removes A's cursor when A closes",
  b.waitForFunction(() => document.querySelectorAll("#cursors .cursor").length === 0),
);
check((await b.textContent("#count")) === "0", "page B counts 0 other cursors");
b.assertClean();

await browser.close();
done("browser cursors: all checks passed");
