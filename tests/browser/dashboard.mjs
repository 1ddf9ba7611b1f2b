// dashboard.mjs: opens the minibroker dashboard in headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core), reads what each page shows,
// and saves screenshots. Run by tests/e2e/test_dashboard.py, which produced
// the traffic and checks the JSON printed here against it.
//
//   node dashboard.mjs <base url> <artifact dir> <task id> [<task id>...]
//
// Prints one JSON object: {queues: {name: {ready, unacked, total, consumers}},
// tasks: {id: {state, name}}, detail: {id, state, result}, screenshots: [...]}.
import {chromium} from "playwright-core";
import path from "node:path";

const CHROMIUM = process.env.MB_CHROMIUM || "/usr/bin/chromium";
// Generous: the machine is shared, and the dashboard polls every 2 s.
const WAIT_MS = 30000;
// Let the overview collect a few polls so its charts have lines to draw.
const OVERVIEW_POLLS = 4;
const POLL_MS = 2000;

const [baseUrl, artifactDir, ...taskIds] = process.argv.slice(2);
if (!baseUrl || !artifactDir || taskIds.length === 0) {
  console.error("usage: node dashboard.mjs <base url> <artifact dir> <task id>...");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  // --no-sandbox: test containers run as root, where Chromium's sandbox cannot start.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const out = {queues: {}, tasks: {}, detail: null, screenshots: [], console_errors: []};
try {
  const page = await browser.newPage({viewport: {width: 1280, height: 860}});
  page.on("pageerror", (e) => out.console_errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text()); });
  page.on("response", (r) => { if (r.status() >= 400) out.console_errors.push(`${r.status()} ${r.url()}`); });
  const shot = async (name) => {
    const file = path.join(artifactDir, `dashboard-${name}.png`);
    await page.screenshot({path: file, fullPage: true});
    out.screenshots.push(file);
  };

  // Overview: totals and two live charts.
  await page.goto(`${baseUrl}/#/overview`);
  await page.waitForSelector("#totals .card", {timeout: WAIT_MS});
  await page.waitForTimeout(OVERVIEW_POLLS * POLL_MS);
  // "attached": a flat line at zero has no height, which Playwright counts as invisible.
  await page.waitForSelector("#rates svg polyline", {state: "attached", timeout: WAIT_MS});
  await shot("overview");

  // Queues: the counts in each row.
  await page.goto(`${baseUrl}/#/queues`);
  await page.waitForSelector("tr[data-queue]", {timeout: WAIT_MS});
  for (const row of await page.$$("tr[data-queue]")) {
    const name = await row.getAttribute("data-queue");
    const cell = async (cls) => Number((await row.$eval(`td.${cls}`, (td) => td.textContent)).replace(/,/g, ""));
    out.queues[name] = {ready: await cell("ready"), unacked: await cell("unacked"), total: await cell("total"),
                        consumers: await cell("consumers")};
  }
  await shot("queues");

  // Tasks: every expected task in the list, then one task's detail page.
  await page.goto(`${baseUrl}/#/tasks`);
  for (const id of taskIds) {
    const row = await page.waitForSelector(`tr[data-task-id="${id}"]`, {timeout: WAIT_MS});
    out.tasks[id] = {
      state: (await row.$eval(".badge", (b) => b.textContent)).trim(),
      name: (await row.$eval("a", (a) => a.textContent)).trim(),
    };
  }
  await shot("tasks");
  await page.click(`tr[data-task-id="${taskIds[0]}"] a`);
  await page.waitForSelector("#task-detail table.detail", {timeout: WAIT_MS});
  out.detail = await page.$$eval("#task-detail table.detail tr", (rows) =>
    Object.fromEntries(rows.map((r) => [r.querySelector("th").textContent, r.querySelector("td").textContent.trim()])));
  await shot("task-detail");

  await page.goto(`${baseUrl}/#/workers`);
  await page.waitForSelector("tr[data-worker]", {timeout: WAIT_MS});
  out.workers = await page.$$eval("tr[data-worker]", (rows) =>
    Object.fromEntries(rows.map((r) => [r.dataset.worker, r.querySelector(".badge").textContent.trim()])));
  await shot("workers");
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
