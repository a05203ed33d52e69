// Page load of the dashboard's report pages, as a user sees it: a fresh page load of each
// (HTML, scripts, API calls, charts drawn), in Debian's Chromium driven by playwright-core.
//   node page-load.mjs BASE_URL TOKEN [RUNS]
// Prints per page the median and the slowest of RUNS loads (default 5), in milliseconds, from
// navigation to the page marking itself loaded (every API answer in and every chart drawn).
import { chromium } from "playwright-core";

const [base, token, runsArg] = process.argv.slice(2);
const runs = Number(runsArg || 5);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
await page.goto(`${base}/`);
await page.evaluate((t) => localStorage.setItem("shoplake.token", t), token);
const query = process.env.FILTERS || "";
for (const p of ["overview", "visitors", "carts", "categories", "brands"]) {
  const times = [];
  for (let i = 0; i < runs + 1; i++) {
    const t = Date.now();
    await page.goto(`${base}/?run=${i}#/${p}${query ? "?" + query : ""}`);
    await page.waitForSelector('main[data-loading="false"], main[data-loading="error"]', { timeout: 120000 });
    // Charts draw on the frame after the data arrives.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    const state = await page.getAttribute("main", "data-loading");
    if (state !== "false") throw new Error(`${p}: ${await page.textContent("#message")}`);
    if (i > 0) times.push(Date.now() - t); // the first load warms the browser's cache
  }
  times.sort((a, b) => a - b);
  console.log(`${p.padEnd(11)} median ${String(times[Math.floor(times.length / 2)]).padStart(6)} ms, slowest ${String(times[times.length - 1]).padStart(6)} ms (${runs} loads)`);
}
await browser.close();
