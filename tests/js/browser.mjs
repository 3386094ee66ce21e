// Shared helpers of the browser scripts (browser-*.mjs): headless Chromium (the Debian
// package's binary) driven by playwright-core, pages that may only talk to the server
// under test, and bounded waits that say what they waited for.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

import { check, deadline, fail } from "./harness.mjs";

/** The longest one wait for the page (a selector, a function, a navigation) may take. */
export const STEP_MS = 10_000;

/** Every page's problems, "<page>: <problem>", to explain a failed wait. */
const allProblems = [];

/** The flags the tests run Chromium with: headless, and nothing that reaches the network. */
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Launches the Chromium at `executablePath` (bounded by `STEP_MS`). */
export async function launch(executablePath) {
  try {
    const browser = await chromium.launch({
      executablePath,
      headless: true,
      args: ARGS,
      timeout: STEP_MS,
    });
    check(true, `launched ${executablePath} (Chromium ${browser.version()})`);
    return browser;
  } catch (error) {
    fail(`cannot launch ${executablePath}: ${error.message}`);
  }
}

/**
 * A page of its own browser context (like a window of another browser: no shared
 * storage), 800×600, that loads `http://<host><path>`. Requests to any other origin are
 * aborted and recorded, as are page errors and WebSockets to another host: `assertClean`
 * fails if there were any.
 */
export async function openPage(browser, host, path, name) {
  const origin = `http://${host}`;
  const context = await browser.newContext({ viewport: { width: 800, height: 600 } });
  context.setDefaultTimeout(STEP_MS);
  const problems = [];
  const problem = (what) => {
    problems.push(what);
    allProblems.push(`${name}: ${what}`);
  };
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url === origin || url.startsWith(`${origin}/`)) return route.continue();
    problem(`a request to another origin: ${url}`);
    return route.abort();
  });
  const page = await context.newPage();
  page.name = name;
  page.on("pageerror", (error) => problem(`an error in the page: ${error.message}`));
  page.on("websocket", (socket) => {
    if (!socket.url().startsWith(`ws://${host}/`)) {
      problem(`a WebSocket to another host: ${socket.url()}`);
    }
  });
  page.on("console", (message) => {
    if (message.type() === "error") problem(`console error: ${message.text()}`);
  });
  page.assertClean = () =>
    check(
      problems.length === 0,
      `page ${name} loaded everything from ${origin} without errors${problems.length ? `: ${problems.join("; ")}` : ""}`,
    );
  const response = await step(`page ${name} loads ${path}`, page.goto(`${origin}${path}`));
  check(response.status() === 200, `page ${name}: ${path} answered ${response.status()}`);
  return page;
}

/**
 * Awaits `promise` (a Playwright wait, bounded by its timeout), saying what it was; a
 * failure lists what went wrong in the pages so far.
 */
export async function step(what, promise) {
  try {
    const value = await promise;
    console.log(`ok: ${what}`);
    return value;
  } catch (error) {
    const seen = allProblems.length ? `; in the pages: ${allProblems.join("; ")}` : "";
    fail(`${what}: ${error.message.split("\n")[0]}${seen}`);
  }
}

/** Writes a screenshot (the viewport) of `page` to `<dir>/<name>.png`. */
export async function screenshot(page, dir, name) {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await step(`screenshot of page ${page.name} in ${path}`, page.screenshot({ path }));
  return path;
}

/**
 * The common start of a two-page test: reads `<host:port> <room> <chromium> <screenshot
 * dir>` from the command line (exits 2 with the usage otherwise), arms the script's
 * deadline, launches Chromium and opens two pages, A and B, of the example's page for
 * `room`.
 */
export async function twoPages(script) {
  const [host, room, chromium, shots] = process.argv.slice(2);
  if (!host || !room || !chromium || !shots) {
    console.error(`usage: node ${script} <host:port> <room> <chromium> <screenshot dir>`);
    process.exit(2);
  }
  deadline(45_000);
  const browser = await launch(chromium);
  const path = `/?room=${encodeURIComponent(room)}`;
  const a = await openPage(browser, host, path, "A");
  const b = await openPage(browser, host, path, "B");
  return { host, room, shots, browser, a, b };
}
