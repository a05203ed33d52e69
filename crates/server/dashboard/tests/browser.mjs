// The dashboard in a real browser (Debian's Chromium driven by playwright-core), against a
// running `shoplake serve` over a lake with history, bot flags and a live log:
//   node browser.mjs BASE_URL TOKEN [SCREENSHOT_DIR]
// Checks: every page loads with no console errors and every chart has data; changing a filter
// changes the numbers and the URL keeps it; an attack sent now shows in the Live feed within
// 5 s and can be acknowledged; a SQL query returns rows; CSV and PNG exports download.
// Exits 1 with the reasons on any failure.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const [base, token, shots] = process.argv.slice(2);
if (!base || !token) {
  console.error("usage: node browser.mjs BASE_URL TOKEN [SCREENSHOT_DIR]");
  process.exit(2);
}
if (shots) mkdirSync(shots, { recursive: true });
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const failures = [];
const check = (ok, what) => {
  if (!ok) failures.push(what);
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
};

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1400, height: 1000 } });
const page = await context.newPage();
const errors = [];
page.on("console", (m) => { if (m.type() === "error") errors.push(`${page.url()}: ${m.text()}`); });
page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));

// Every navigation renders a fresh <main>: wait for the one not seen yet to finish (the page
// before may still be shown, finished, when the wait starts), then mark it seen.
async function loaded(what) {
  const fresh = 'main:not([data-seen])';
  await page.waitForSelector(`${fresh}[data-loading="false"], ${fresh}[data-loading="error"]`, { timeout: 20000 });
  const state = await page.getAttribute(fresh, "data-loading");
  const msg = (await page.textContent("#message")) || "";
  await page.$eval(fresh, (m) => m.setAttribute("data-seen", ""));
  check(state === "false", `${what} loads${state === "false" ? "" : ": " + msg}`);
  // Charts draw on the next frame.
  await page.waitForTimeout(300);
}

async function chartsHaveData(what) {
  const charts = await page.$$eval("[data-chart]", (els) => els.map((e) => [e.dataset.chart, Number(e.dataset.points || 0)]));
  for (const [name, points] of charts) check(points > 0, `${what}: chart ${name} has data (${points} points)`);
  return charts.length;
}

async function shot(name) {
  if (shots) await page.screenshot({ path: join(shots, `${name}.png`), fullPage: false });
}

// Sign in.
await page.goto(`${base}/#/overview`);
await page.waitForSelector("dialog#signin[open]");
await page.fill('#signin-form input[name="token"]', "not-a-token");
await page.click('#signin-form button[type="submit"]');
await page.waitForFunction(() => document.querySelector("#signin-error").textContent.length > 0);
check(true, "an unknown token is refused at sign-in");
// The browser logs the refused request (401) itself: expected here, and only here.
check(errors.every((e) => e.includes("401")), `the only console error so far is the refused token (${errors.length})`);
errors.length = 0;
await page.fill('#signin-form input[name="token"]', token);
await page.click('#signin-form button[type="submit"]');
await loaded("overview");

// Every page, every chart.
for (const p of ["overview", "visitors", "carts", "categories", "brands", "data", "sql"]) {
  // The same address again renders nothing new: the page shown is loaded afresh instead.
  if (page.url().endsWith(`#/${p}`)) await page.reload();
  else await page.goto(`${base}/#/${p}`);
  await loaded(p);
  const n = await chartsHaveData(p);
  if (["overview", "visitors", "carts", "categories", "brands"].includes(p)) check(n > 0, `${p} has charts`);
  await shot(p);
}
const tiles = await page.goto(`${base}/#/overview`).then(() => loaded("overview again")).then(() =>
  page.$$eval("[data-tile] .value", (els) => els.map((e) => e.textContent)));
check(tiles.length === 6 && tiles.every((t) => t.length > 0), `overview shows six tiles (${tiles.join(" | ")})`);

// A busy server (429 + Retry-After) is asked again, not shown as an error.
let busy = 0;
await page.route("**/v1/reports/visitors*", (r) => {
  if (busy++ === 0) return r.fulfill({ status: 429, headers: { "Retry-After": "1", "content-type": "application/json" }, body: '{"error":"busy"}' });
  return r.continue();
});
await page.goto(`${base}/#/carts`);
await loaded("carts");
await page.goto(`${base}/#/visitors`);
await loaded("visitors after a busy answer");
check(busy >= 2, `the busy report was asked again (${busy} requests)`);
await page.goto(`${base}/#/carts`);
await loaded("carts again");
await page.unrouteAll();
// The browser logs the 429 itself: expected here, and only here.
const others = errors.filter((e) => !e.includes("429"));
errors.length = 0;
errors.push(...others);

// Filters change the numbers, and live in the URL.
await page.goto(`${base}/#/visitors`);
await loaded("visitors (humans only)");
const total = () => page.$$eval('[data-card="visitors-table"] tbody tr', (rows) =>
  rows.reduce((n, r) => n + Number(r.children[1].textContent.replace(/,/g, "")), 0));
const humans = await total();
await page.uncheck('#filters input[name="humans"]');
await loaded("visitors (all traffic)");
const all = await total();
check(all > humans, `all traffic counts more visitors than humans only (${all} > ${humans})`);
check(page.url().includes("humans=0"), "the humans-only switch is kept in the URL");
const days = await page.$$eval('[data-card="visitors-table"] tbody tr td:first-child', (tds) => tds.map((t) => t.textContent));
check(days.length >= 2, `several days of visitors (${days.length})`);
await page.fill('#filters input[name="from"]', days[1]);
await page.dispatchEvent('#filters input[name="from"]', "change");
await loaded("visitors from the second day");
const fewer = await page.$$eval('[data-card="visitors-table"] tbody tr', (r) => r.length);
check(fewer === days.length - 1, `a later start day leaves ${days.length - 1} days (${fewer})`);
const link = page.url();
const second = await context.newPage();
second.on("console", (m) => { if (m.type() === "error") errors.push(`${second.url()}: ${m.text()}`); });
await second.goto(link);
await second.waitForSelector('main[data-loading="false"]', { timeout: 20000 });
const again = await second.$$eval('[data-card="visitors-table"] tbody tr', (r) => r.length);
check(again === fewer && (await second.isChecked('#filters input[name="humans"]')) === false, "a link shows the same view");
await second.close();

// Categories: the metric changes the heatmap.
await page.goto(`${base}/#/categories`);
await loaded("categories by views");
const title1 = await page.textContent('[data-card="categories-heatmap"] h3');
await page.selectOption('select[name="metric"]', "purchases");
await loaded("categories by purchases");
const title2 = await page.textContent('[data-card="categories-heatmap"] h3');
check(title1 !== title2 && page.url().includes("metric=purchases"), "the metric selector changes the heatmap and the URL");
await chartsHaveData("categories by purchases");

// CSV and PNG exports.
const [csv] = await Promise.all([page.waitForEvent("download"), page.click('[data-card="categories-top"] [data-export="csv"]')]);
const csvText = readFileSync(await csv.path(), "utf8");
check(csv.suggestedFilename().endsWith(".csv") && csvText.startsWith("bucket,rank,category"), `CSV export downloads (${csv.suggestedFilename()})`);
const [png] = await Promise.all([page.waitForEvent("download"), page.click('[data-card="categories-heatmap"] [data-export="png"]')]);
const pngBytes = readFileSync(await png.path());
check(png.suggestedFilename().endsWith(".png") && pngBytes.subarray(1, 4).toString() === "PNG", `PNG export downloads (${png.suggestedFilename()}, ${pngBytes.length} bytes)`);

// Live: an attack now appears in the feed within 5 s and can be acknowledged.
await page.goto(`${base}/#/live`);
await loaded("live");
const attacker = 4242000000 + Math.floor(Math.random() * 99999);
const now = new Date().toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
const body = Array.from({ length: 12 }, (_, k) => JSON.stringify({
  event_time: now, event_type: "view", product_id: 7000000 + k, category_id: 1, category_code: "",
  brand: "", price: 1.5, user_id: attacker, user_session: `attack-${attacker}`,
})).join("\n") + "\n";
const sent = Date.now();
const r = await fetch(`${base}/v1/events`, { method: "POST", headers: { Authorization: `Bearer ${token}`, "content-type": "application/x-ndjson" }, body });
check(r.status === 200, `the attack is accepted (${r.status})`);
const row = `tr[data-key="${attacker}"]`;
let seen = true;
await page.waitForSelector(row, { timeout: 5000 }).catch(() => { seen = false; });
check(seen, `the attack shows in the Live feed within 5 s (${Date.now() - sent} ms)`);
if (seen) {
  await page.click(`${row} [data-action="ack"]`);
  await page.waitForSelector(`tr[data-key="${attacker}"][data-status="acknowledged"]`, { timeout: 5000 }).then(() => check(true, "the incident is acknowledged from the feed"), () => check(false, "the incident is acknowledged from the feed"));
}
await page.waitForFunction(() => Number(document.querySelector('[data-chart="live-rate"]').dataset.points || 0) > 0, null, { timeout: 5000 })
  .then(() => check(true, "the live rate chart gets points every second"), () => check(false, "the live rate chart gets points every second"));
await shot("live");

// SQL.
await page.goto(`${base}/#/sql`);
await loaded("sql");
await page.fill('textarea[name="sql"]', "SELECT event_type, COUNT(*) AS n FROM events GROUP BY 1 ORDER BY 2 DESC");
await page.click('button[type="submit"]');
await page.waitForSelector('#sql-result table, #sql-error', { timeout: 20000 });
const sqlRows = await page.$$eval("#sql-result tbody tr", (r) => r.length);
check(sqlRows >= 3, `a SQL query returns rows (${sqlRows})`);
const [sqlCsv] = await Promise.all([page.waitForEvent("download"), page.click('#sql-result [data-export="csv"]')]);
check(readFileSync(await sqlCsv.path(), "utf8").startsWith("event_type,n"), "the SQL result exports CSV");
await shot("sql");

// Hostile names (events are anyone's to send) are shown as text and never run: the brand's
// tooltip is shown for every point, and nothing the names hold executes or becomes an element.
const hostileBrand = process.env.SHOPLAKE_HOSTILE_BRAND;
const hostileCategory = process.env.SHOPLAKE_HOSTILE_CATEGORY;
const headers = (await fetch(`${base}/`)).headers;
const csp = headers.get("content-security-policy") || "";
check(csp.includes("default-src 'self'") && csp.includes("frame-ancestors 'none'") && !csp.includes("unsafe-inline"),
  `the page is served with a content policy without inline script (${csp})`);
check(headers.get("x-content-type-options") === "nosniff" && headers.get("referrer-policy") === "no-referrer",
  "nosniff and no-referrer are sent");
if (hostileBrand && hostileCategory) {
  await page.goto(`${base}/#/brands`);
  await loaded("brands");
  const options = await page.$$eval('select[name="category"] option', (os) => os.map((o) => o.textContent));
  check(options.includes(hostileCategory), `the hostile category is listed as text (${options.length} categories)`);
  await page.selectOption('select[name="category"]', hostileCategory);
  await loaded("brands in the hostile category");
  const shown = await page.evaluate(() => {
    const box = document.querySelector('[data-chart="brands-quadrant"]');
    const chart = echarts.getInstanceByDom(box);
    let n = 0;
    chart.getOption().series.forEach((s, si) => s.data.forEach((_, di) => {
      chart.dispatchAction({ type: "showTip", seriesIndex: si, dataIndex: di });
      n += 1;
    }));
    return n;
  });
  check(shown > 0, `the hostile brand's tooltips were shown (${shown} points)`);
  for (const p of ["categories", "carts", "overview"]) {
    await page.goto(`${base}/#/${p}`);
    await loaded(`${p} with hostile names`);
  }
  await page.waitForTimeout(300);
  const pwned = await page.evaluate(() => window.__pwned);
  const planted = await page.$$eval('img[src="x"], svg[onload]', (els) => els.length);
  check(pwned === undefined && planted === 0, `nothing in a brand or category name runs or becomes markup (${pwned}, ${planted})`);
}
// CSV exports keep a text that a spreadsheet would run as a formula as text.
await page.goto(`${base}/#/sql`);
await loaded("sql for formula cells");
await page.fill('textarea[name="sql"]', "SELECT '=HYPERLINK(1)' AS a, '-2+3' AS b, '@x' AS c, 5 AS n");
await page.click('button[type="submit"]');
await page.waitForSelector("#sql-result table", { timeout: 20000 });
const [formulaCsv] = await Promise.all([page.waitForEvent("download"), page.click('#sql-result [data-export="csv"]')]);
const formulaText = readFileSync(await formulaCsv.path(), "utf8");
check(formulaText === "a,b,c,n\n'=HYPERLINK(1),'-2+3,'@x,5\n", `formula cells are neutralised in CSV (${JSON.stringify(formulaText)})`);

for (const e of errors) console.log(`console error: ${e}`);
check(errors.length === 0, `no console errors (${errors.length})`);
await browser.close();
if (failures.length) {
  console.error(`${failures.length} check(s) failed:\n  ${failures.join("\n  ")}`);
  process.exit(1);
}
console.log("every dashboard check passed");
