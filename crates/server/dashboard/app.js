// shoplake's dashboard: one page, hash-routed (#/page?filters), reading everything through the
// HTTP API with the signed-in token. Filters live in the URL, so a link shows the same view.
// Charts are Apache ECharts (an npm package embedded in the binary); every chart exports PNG
// and every table CSV.
"use strict";

const PAGES = ["overview", "visitors", "carts", "categories", "brands", "live", "sql", "data"];
const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const FILTERS = ["from", "to", "tz", "humans", "level"];

// ---------- state: the URL ----------

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  return { page: PAGES.includes(page) ? page : "overview", params };
}

function filters() {
  const p = route().params;
  return {
    from: p.get("from") || "",
    to: p.get("to") || "",
    tz: p.get("tz") || "UTC",
    humans: p.get("humans") !== "0",
    level: p.get("level") || "1",
  };
}

function go(page, changes) {
  const p = route().params;
  for (const [k, v] of Object.entries(changes || {})) {
    if (v === "" || v === null || v === undefined) p.delete(k); else p.set(k, v);
  }
  const q = p.toString();
  location.hash = "#/" + page + (q ? "?" + q : "");
}

function setParam(key, value) { go(route().page, { [key]: value }); }

// ---------- the API ----------

const TOKEN_KEY = "shoplake.token";
function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

class SignInNeeded extends Error {}

// A busy server (429: every query turn taken; 503: delivery behind) says when to come back;
// a read is asked again then, a few times, before the page shows the error.
const BUSY_RETRIES = 4;

async function api(path, options) {
  const o = options || {};
  const headers = Object.assign({ Authorization: "Bearer " + token() }, o.headers || {});
  // Reads: GETs, and SQL (the query API runs only SELECTs).
  const read = !o.method || o.method === "GET" || path === "/v1/query";
  let r = await fetch(path, Object.assign({}, o, { headers }));
  for (let tries = 0; read && (r.status === 429 || r.status === 503) && tries < BUSY_RETRIES; tries++) {
    const after = Math.min(Math.max(Number(r.headers.get("Retry-After")) || 1, 1), 10);
    await new Promise((done) => setTimeout(done, after * 1000));
    r = await fetch(path, Object.assign({}, o, { headers }));
  }
  if (r.status === 401) { signIn(); throw new SignInNeeded("sign in"); }
  if (r.status === 204) return null;
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text }; }
  if (!r.ok) throw new Error((body && body.error) || r.status + " " + r.statusText);
  return body;
}

function reportQuery(extra) {
  const f = filters();
  const p = new URLSearchParams();
  if (f.from) p.set("from", f.from);
  if (f.to) p.set("to", f.to);
  p.set("tz", f.tz);
  if (!f.humans) p.set("all_traffic", "true");
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return p.toString();
}

function report(kind, extra) { return api("/v1/reports/" + kind + "?" + reportQuery(extra)); }

// ---------- building blocks ----------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const num = new Intl.NumberFormat("en-US");
const num2 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
function fmt(v) {
  if (typeof v === "number") return Number.isInteger(v) ? num.format(v) : num2.format(v);
  return v === null || v === undefined ? "" : String(v);
}
function pct(v) { return v === null || v === undefined || isNaN(v) ? "–" : (v * 100).toFixed(1) + " %"; }

function download(name, blob) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

// Rich-text tooltips read `{style|text}` as markup: names are shown without braces.
function plain(v) { return String(v === null || v === undefined ? "" : v).replace(/[{}]/g, ""); }

function csvOf(columns, rows) {
  const cell = (v) => {
    let s = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
    // A text that a spreadsheet would run as a formula is kept as text (OWASP's advice).
    if (typeof v !== "number" && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  };
  return [columns.map(cell).join(",")].concat(rows.map((r) => columns.map((c) => cell(r[c])).join(","))).join("\n") + "\n";
}

// A card with a title, tools and a body.
function card(title, body, opts) {
  const o = opts || {};
  const tools = el("span", { class: "tools" }, o.tools || []);
  return el("section", { class: "card" + (o.wide ? " wide" : ""), "data-card": o.id || title }, el("h3", {}, title, tools), body);
}

let charts = [];
function chartCard(title, option, opts) {
  const o = opts || {};
  const box = el("div", { class: "chart" + (o.tall ? " tall" : ""), "data-chart": o.id || title });
  const png = el("button", { type: "button", "data-export": "png" }, "PNG");
  const c = card(title, box, { wide: o.wide, id: o.id, tools: [png] });
  // Laid out first, then drawn at its size.
  requestAnimationFrame(() => {
    const chart = echarts.init(box, null, { renderer: "canvas" });
    chart.setOption(Object.assign({ animation: false, grid: { left: 56, right: 24, top: 36, bottom: 36 } }, option, {
      // Tooltips are drawn on the canvas, never as HTML: brand and category names come from
      // events anyone with an ingest token may send.
      tooltip: Object.assign({ trigger: "axis" }, option.tooltip || {}, { renderMode: "richText", confine: true }),
    }));
    box.dataset.points = String(countPoints(option));
    charts.push(chart);
    png.addEventListener("click", () => {
      const url = chart.getDataURL({ type: "png", pixelRatio: 2, backgroundColor: "#fff" });
      fetch(url).then((r) => r.blob()).then((b) => download(slug(title) + ".png", b));
    });
  });
  return c;
}

function countPoints(option) {
  return (option.series || []).reduce((n, s) => n + ((s.data || []).length), 0);
}

function slug(s) { return s.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, ""); }

// A table of objects; `columns` are [key, label, kind?]; a CSV button exports every row.
function tableCard(title, columns, rows, opts) {
  const o = opts || {};
  const keys = columns.map((c) => c[0]);
  const csv = el("button", { type: "button", "data-export": "csv" }, "CSV");
  csv.addEventListener("click", () => download(slug(title) + ".csv", new Blob([csvOf(keys, rows)], { type: "text/csv" })));
  const head = el("tr", {}, columns.map(([, label, kind]) => el("th", { class: kind === "num" ? "num" : "" }, label)));
  const shown = o.limit ? rows.slice(0, o.limit) : rows;
  const body = shown.map((r) => el("tr", {}, columns.map(([k, , kind, render]) =>
    el("td", { class: kind === "num" ? "num" : "" }, render ? render(r[k], r) : fmt(r[k])))));
  const table = el("table", { "data-rows": String(rows.length) }, el("thead", {}, head), el("tbody", {}, body));
  const note = o.limit && rows.length > o.limit ? el("p", { class: "muted" }, `${o.limit} of ${fmt(rows.length)} rows shown; CSV has all`) : null;
  return card(title, el("div", { class: "scroll" }, table, note), { wide: o.wide, id: o.id, tools: [csv].concat(o.tools || []) });
}

function tiles(list) {
  return el("div", { class: "tiles" }, list.map(([label, value, id]) =>
    el("div", { class: "tile", "data-tile": id }, el("div", { class: "label" }, label), el("div", { class: "value" }, value))));
}

function message(text, isError) {
  const m = document.getElementById("message");
  m.textContent = text || "";
  m.className = isError ? "error" : "";
}

// ---------- pages ----------

// Visitors per day for the page's filters, and all traffic beside humans only: in UTC the
// humans-only days plus the users flagged that day (exact, and fast: no scan of events);
// in another zone flags (UTC days) do not line up with local days, so all traffic is asked for.
async function visitorsBoth() {
  const f = filters();
  if (f.humans && f.tz === "UTC") {
    // Both at once: the bot counts do not wait for the humans' days.
    const [humans, botDays] = await Promise.all([report("visitors", { all_traffic: "false" }), report("bots")]);
    const bots = new Map(botDays.map((b) => [b.day, b.flagged_users]));
    const days = new Set(humans.map((d) => d.day).concat(Array.from(bots.keys())));
    const humanBy = new Map(humans.map((d) => [d.day, d.visitors]));
    const all = Array.from(days).sort().map((day) => ({ day, visitors: (humanBy.get(day) || 0) + (bots.get(day) || 0) }));
    return { shown: humans, humans, all };
  }
  const [humans, all] = await Promise.all([report("visitors", { all_traffic: "false" }), report("visitors", { all_traffic: "true" })]);
  return { shown: f.humans ? humans : all, humans, all };
}

async function overview(main) {
  const [both, activity, carts, open] = await Promise.all([
    visitorsBoth(),
    report("activity"),
    report("abandonment", { list: "1", top: "1" }),
    api("/v1/alerts?status=open"),
  ]);
  const { shown: daily, humans, all } = both;
  const sum = (rows, k) => rows.reduce((n, r) => n + (r[k] || 0), 0);
  const views = sum(activity, "views"), purchases = sum(activity, "purchases");
  const cartSessions = sum(carts.sessions, "cart_sessions"), abandoned = sum(carts.sessions, "abandoned_sessions");
  const last = daily.length ? daily[daily.length - 1] : null;
  const allVisitors = sum(all, "visitors");
  main.append(tiles([
    ["Visitors " + (last ? last.day : "today"), last ? fmt(last.visitors) : "–", "visitors"],
    ["Events per minute (live)", el("span", { id: "tile-epm" }, "–"), "epm"],
    ["Conversion (purchases / views)", pct(views ? purchases / views : null), "conversion"],
    ["Abandonment rate", pct(cartSessions ? abandoned / cartSessions : null), "abandonment"],
    ["Open incidents", fmt(open.length), "incidents"],
    ["Bot share of visitors", pct(allVisitors ? 1 - sum(humans, "visitors") / allVisitors : null), "bots"],
  ]));
  main.append(chartCard("Visitors per day", {
    xAxis: { type: "category", data: daily.map((d) => d.day) }, yAxis: { type: "value" },
    series: [{ name: "visitors", type: "line", data: daily.map((d) => d.visitors) }],
  }, { id: "overview-visitors" }));
  const byHour = Array.from({ length: 24 }, (_, h) => sum(activity.filter((c) => c.hour === h), "views"));
  main.append(chartCard("Views by hour of day", {
    xAxis: { type: "category", data: byHour.map((_, h) => String(h)) }, yAxis: { type: "value" },
    series: [{ name: "views", type: "bar", data: byHour }],
  }, { id: "overview-hours" }));
}

async function visitors(main) {
  const { shown, humans, all } = await visitorsBoth();
  const allBy = new Map(all.map((d) => [d.day, d]));
  const days = all.map((d) => d.day);
  const humanBy = new Map(humans.map((d) => [d.day, d]));
  main.append(chartCard("Unique visitors per day: humans only and all traffic", {
    legend: {}, xAxis: { type: "category", data: days }, yAxis: { type: "value" },
    series: [
      { name: "humans only", type: "line", data: days.map((d) => (humanBy.get(d) || {}).visitors || 0) },
      { name: "all traffic", type: "line", data: days.map((d) => allBy.get(d).visitors) },
    ],
  }, { wide: true, id: "visitors-humans-all" }));
  main.append(chartCard("Sessions and new visitors per day", {
    legend: {}, xAxis: { type: "category", data: shown.map((d) => d.day) }, yAxis: { type: "value" },
    series: [
      { name: "sessions", type: "line", data: shown.map((d) => d.sessions) },
      { name: "new visitors", type: "bar", data: shown.map((d) => d.new_visitors) },
    ],
  }, { id: "visitors-sessions" }));
  main.append(tableCard("Visitors by day", [
    ["day", "Day"], ["visitors", "Visitors", "num"], ["sessions", "Sessions", "num"],
    ["events", "Events", "num"], ["new_visitors", "New visitors", "num"],
  ], shown, { id: "visitors-table" }));
}

async function cartsPage(main) {
  const r = await report("abandonment", { top: "10", list: "200" });
  main.append(chartCard("Cart abandonment rate by day", {
    xAxis: { type: "category", data: r.sessions.map((s) => s.day) },
    yAxis: { type: "value", axisLabel: { formatter: (v) => (v * 100).toFixed(0) + " %" } },
    series: [{ name: "abandonment rate", type: "line", data: r.sessions.map((s) => s.abandonment_rate) }],
  }, { id: "carts-rate" }));
  main.append(chartCard("Items: abandoned, recovered, pending (value)", {
    legend: {}, xAxis: { type: "category", data: r.items.map((i) => i.status) }, yAxis: [{ type: "value", name: "items" }, { type: "value", name: "value" }],
    series: [
      { name: "items", type: "bar", data: r.items.map((i) => i.items) },
      { name: "value", type: "bar", yAxisIndex: 1, data: r.items.map((i) => i.value) },
    ],
  }, { id: "carts-items" }));
  main.append(tableCard("Top abandoned products", [
    ["product_id", "Product"], ["brand", "Brand"], ["category", "Category"], ["items", "Items", "num"], ["value", "Value", "num"],
  ], r.top_products, { id: "carts-products" }));
  main.append(tableCard("Top abandoned brands", [["name", "Brand"], ["items", "Items", "num"], ["value", "Value", "num"]], r.top_brands, { id: "carts-brands" }));
  main.append(tableCard("Top abandoned categories", [["name", "Category"], ["items", "Items", "num"], ["value", "Value", "num"]], r.top_categories, { id: "carts-categories" }));
  main.append(tableCard(`Retargeting list (${fmt(r.retarget.length)} of ${fmt(r.retarget_total)}, oldest first)`, [
    ["user_id", "User"], ["product_id", "Product"], ["carted_at", "Carted at"], ["price", "Price", "num"],
  ], r.retarget, { id: "carts-retarget", limit: 100 }));
}

async function categories(main) {
  const p = route().params;
  const metric = p.get("metric") || "views";
  const by = p.get("by") || "hour";
  const f = filters();
  const [activity, rows] = await Promise.all([
    report("activity"),
    report("categories", { by, level: f.level, top: "5", metric }),
  ]);
  const heatMetric = metric === "visitors" ? "views" : metric;
  const data = activity.map((c) => [c.hour, c.weekday, c[heatMetric]]);
  const max = data.reduce((m, d) => Math.max(m, d[2]), 0);
  const select = el("select", { name: "metric", onchange: (e) => setParam("metric", e.target.value) },
    ["views", "carts", "purchases", "revenue", "visitors"].map((m) => el("option", { value: m, selected: m === metric }, m)));
  const bySelect = el("select", { name: "by", onchange: (e) => setParam("by", e.target.value) },
    ["hour", "weekday"].map((b) => el("option", { value: b, selected: b === by }, "by " + b)));
  main.append(el("div", { class: "tiles" }, el("label", {}, "Metric ", select), el("label", {}, "Top categories ", bySelect)));
  main.append(chartCard(`Hour × weekday: ${heatMetric}`, {
    tooltip: { position: "top" },
    grid: { left: 56, right: 24, top: 24, bottom: 72 },
    xAxis: { type: "category", data: Array.from({ length: 24 }, (_, h) => String(h)), splitArea: { show: true } },
    yAxis: { type: "category", data: WEEKDAYS, splitArea: { show: true } },
    visualMap: { min: 0, max: max || 1, calculable: true, orient: "horizontal", left: "center", bottom: 0 },
    series: [{ name: heatMetric, type: "heatmap", data }],
  }, { wide: true, tall: true, id: "categories-heatmap" }));
  main.append(tableCard(`Top 5 categories by ${by} (${metric}, level ${f.level})`, [
    ["bucket", by === "hour" ? "Hour" : "Weekday"], ["rank", "Rank", "num"], ["category", "Category"],
    ["views", "Views", "num"], ["carts", "Carts", "num"], ["purchases", "Purchases", "num"],
    ["revenue", "Revenue", "num"], ["visitors", "Visitors", "num"], ["share", "Share", "num", (v) => pct(v)],
  ], rows, { wide: true, id: "categories-top" }));
}

async function brands(main) {
  const p = route().params;
  const rows = await report("brands", { min_views: p.get("min_views") || "100" });
  const cats = Array.from(new Set(rows.map((r) => r.category))).sort();
  const cat = p.get("category") || cats[0] || "";
  const select = el("select", { name: "category", onchange: (e) => setParam("category", e.target.value) },
    cats.map((c) => el("option", { value: c, selected: c === cat }, c)));
  main.append(el("div", { class: "tiles" }, el("label", {}, "Category ", select)));
  const inCat = rows.filter((r) => r.category === cat);
  const classes = ["under-exposed", "under-converting", "star", "weak"];
  main.append(chartCard(`Brands in ${cat || "–"}: view share vs conversion`, {
    legend: {}, tooltip: { trigger: "item", formatter: (x) => `${plain(x.data[2])}\nview share ${pct(x.data[0])}\nconversion ${pct(x.data[1])}` },
    xAxis: { type: "value", name: "view share", axisLabel: { formatter: (v) => (v * 100).toFixed(1) + "%" } },
    yAxis: { type: "value", name: "conversion", axisLabel: { formatter: (v) => (v * 100).toFixed(1) + "%" } },
    series: classes.map((c) => ({
      name: c, type: "scatter", symbolSize: 10,
      data: inCat.filter((r) => r.class === c).map((r) => [r.view_share, r.conversion, r.brand]),
    })),
  }, { wide: true, tall: true, id: "brands-quadrant" }));
  const ranked = rows.filter((r) => r.opportunity !== null && r.opportunity > 0);
  main.append(tableCard("Brands that need more marketing (by opportunity)", [
    ["brand", "Brand"], ["category", "Category"], ["class", "Class"], ["views", "Views", "num"],
    ["purchases", "Purchases", "num"], ["conversion", "Conversion", "num", (v) => pct(v)],
    ["view_share", "View share", "num", (v) => pct(v)], ["opportunity", "Opportunity", "num"],
  ], ranked, { wide: true, id: "brands-table", limit: 200 }));
}

// The live feed: one streaming request per signed-in page, shared by every listener.
const liveListeners = new Set();
let liveStarted = false;
async function startLive() {
  if (liveStarted) return;
  liveStarted = true;
  for (;;) {
    try {
      const r = await fetch("/v1/events/stream", { headers: { Authorization: "Bearer " + token() } });
      if (!r.ok || !r.body) throw new Error("stream " + r.status);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (!data) continue;
          let msg;
          try { msg = JSON.parse(data); } catch (_) { continue; }
          for (const f of liveListeners) f(msg);
        }
      }
    } catch (_) {
      // The server went away or restarted: try again shortly.
    }
    await new Promise((res) => setTimeout(res, 2000));
  }
}

liveListeners.add((m) => {
  if (m.type !== "rate") return;
  document.getElementById("live-rate").textContent = fmt(Math.round(m.events_per_second)) + " events/s";
  const t = document.getElementById("tile-epm");
  if (t) t.textContent = fmt(Math.round(m.events_per_second * 60));
});

async function live(main) {
  const points = [];
  const box = chartCard("Events accepted per second (live)", {
    xAxis: { type: "time" }, yAxis: { type: "value" },
    series: [{ name: "events/s", type: "line", showSymbol: false, data: points }],
  }, { wide: true, id: "live-rate" });
  main.append(box);
  const feed = el("div", { class: "scroll" });
  main.append(card("Incidents", feed, { wide: true, id: "live-incidents" }));
  const render = async () => {
    const list = await api("/v1/alerts?status=all&order=newest&limit=500");
    list.sort((a, b) => (b.updated_at > a.updated_at ? 1 : -1));
    const act = (i, what) => async () => {
      try {
        if (what === "allow") {
          const keyType = i.key_type === "client_ip" ? "client_ip" : "user_id";
          await api("/v1/lists/allow", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ key_type: keyType, key: i.key }) });
          message(`${keyType} ${i.key} allow-listed`);
        } else {
          await api(`/v1/alerts/${i.id}/${what}`, { method: "POST" });
          message(`incident ${i.id}: ${what === "ack" ? "acknowledged" : "resolved"}`);
        }
        await render();
      } catch (e) { if (!(e instanceof SignInNeeded)) message(e.message, true); }
    };
    const rows = list.slice(0, 200).map((i) => el("tr", { "data-incident": i.id, "data-key": i.key, "data-status": i.status },
      el("td", {}, i.updated_at), el("td", { class: "sev-" + i.severity }, i.severity), el("td", {}, i.rule),
      el("td", {}, i.key_type + " " + i.key), el("td", { class: "num" }, fmt(i.peak)), el("td", { class: "num" }, fmt(i.events)),
      el("td", {}, i.status + (i.acknowledged_by ? " by " + i.acknowledged_by : "")),
      el("td", {},
        el("button", { type: "button", "data-action": "ack", disabled: i.status !== "open", onclick: act(i, "ack") }, "Acknowledge"), " ",
        el("button", { type: "button", "data-action": "resolve", disabled: i.status === "resolved", onclick: act(i, "resolve") }, "Resolve"), " ",
        (i.key_type === "user_id" || i.key_type === "client_ip") ? el("button", { type: "button", "data-action": "allow", onclick: act(i, "allow") }, "Allow") : null)));
    feed.replaceChildren(el("table", { "data-rows": String(list.length) },
      el("thead", {}, el("tr", {}, ["Last seen", "Severity", "Rule", "Key", "Peak", "Events", "Status", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)));
  };
  await render();
  let pending = null;
  const listener = (m) => {
    if (!document.body.contains(feed)) { liveListeners.delete(listener); return; }
    if (m.type === "rate") {
      points.push([m.at, m.events_per_second]);
      if (points.length > 300) points.shift();
      const chart = charts.find((c) => c.getDom().dataset.chart === "live-rate");
      if (chart) { chart.setOption({ series: [{ data: points }] }); chart.getDom().dataset.points = String(points.length); }
    } else if (m.type === "incident" && m.change !== "updated" && !pending) {
      pending = setTimeout(() => { pending = null; render().catch(() => {}); }, 300);
    }
  };
  liveListeners.add(listener);
}

async function sql(main) {
  const p = route().params;
  const area = el("textarea", { name: "sql", spellcheck: "false" },
    p.get("q") || "SELECT event_type, COUNT(*) AS events, COUNT(DISTINCT user_id) AS users\nFROM events GROUP BY event_type ORDER BY events DESC");
  const out = el("div", { id: "sql-result" });
  const run = el("button", { type: "submit", class: "primary" }, "Run");
  const form = el("form", { onsubmit: async (e) => {
    e.preventDefault();
    run.disabled = true;
    out.replaceChildren(el("p", { class: "muted" }, "running…"));
    try {
      const r = await api("/v1/query", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sql: area.value, limit: 10000 }) });
      const cols = r.columns.map((c) => [c.name, c.name, /Int|Float|Decimal/.test(c.type) ? "num" : ""]);
      out.replaceChildren(el("p", { class: "muted" }, `${fmt(r.rows.length)}${r.truncated ? "+" : ""} rows in ${r.seconds.toFixed(3)} s` + (r.truncated ? " (the first 10,000 are shown)" : "")),
        tableCard("Result", cols, r.rows, { wide: true, id: "sql-table", limit: 1000 }));
    } catch (e2) {
      if (!(e2 instanceof SignInNeeded)) out.replaceChildren(el("p", { class: "error", id: "sql-error" }, e2.message));
    } finally { run.disabled = false; }
  } }, area, el("p", {}, run, " ", el("span", { class: "muted" }, "One read-only statement; tables: events, quarantine, imports, bot_flags and the marts.")));
  main.append(card("SQL", el("div", {}, form, out), { wide: true, id: "sql" }));
}

async function data(main) {
  const [catalog, imports, quarantine] = await Promise.all([
    api("/v1/catalog"), api("/v1/imports"), api("/v1/quarantine?limit=500"),
  ]);
  main.append(tableCard("Catalog", [
    ["name", "Table"], ["exists", "Exists"], ["version", "Version", "num"], ["files", "Files", "num"],
    ["rows", "Rows", "num"], ["bytes", "Bytes", "num"], ["location", "Location"],
  ], catalog, { wide: true, id: "data-catalog" }));
  const profile = (p) => el("details", {}, el("summary", {}, "profile"), el("pre", {}, JSON.stringify(p, null, 2)));
  main.append(tableCard("Import history and data-quality profiles", [
    ["import_id", "Import"], ["source", "Source"], ["rows_read", "Read", "num"], ["rows_accepted", "Accepted", "num"],
    ["rows_rejected", "Rejected", "num"], ["duplicates", "Duplicates", "num"], ["seconds", "Seconds", "num"],
    ["profile", "Profile", "", profile],
  ], imports, { wide: true, id: "data-imports" }));
  main.append(tableCard("Quarantine (newest first)", [
    ["source", "Source"], ["line", "Line", "num"], ["field", "Field"], ["reason", "Reason"], ["raw", "Raw"],
  ], quarantine, { wide: true, id: "data-quarantine", limit: 500 }));
}

const RENDER = { overview, visitors, carts: cartsPage, categories, brands, live, sql, data };

// ---------- the frame ----------

let renderSeq = 0;
async function render() {
  const { page } = route();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  const f = filters();
  const form = document.getElementById("filters");
  form.from.value = f.from; form.to.value = f.to; form.tz.value = f.tz;
  form.humans.checked = f.humans; form.level.value = f.level;
  if (!token()) { signIn(); return; }
  startLive();
  const seq = ++renderSeq;
  for (const c of charts) c.dispose();
  charts = [];
  const main = document.getElementById("page");
  const fresh = el("main", { id: "page", "data-page": page, "data-loading": "true" });
  main.replaceWith(fresh);
  message("");
  try {
    await RENDER[page](fresh);
    if (seq === renderSeq) fresh.dataset.loading = "false";
  } catch (e) {
    if (e instanceof SignInNeeded) return;
    message(e.message, true);
    fresh.dataset.loading = "error";
  }
}

function signIn() {
  const d = document.getElementById("signin");
  if (!d.open) d.showModal();
}

document.getElementById("signin-form").addEventListener("submit", async (e) => {
  const input = e.target.token;
  const t = input.value.trim();
  e.preventDefault();
  const r = await fetch("/openapi.json", { headers: { Authorization: "Bearer " + t } }).catch(() => null);
  if (!r || r.status === 401) {
    document.getElementById("signin-error").textContent = "That token is not known to this server.";
    return;
  }
  localStorage.setItem(TOKEN_KEY, t);
  input.value = "";
  document.getElementById("signin").close();
  render();
});

document.getElementById("signout").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  location.reload();
});

document.getElementById("filters").addEventListener("change", (e) => {
  const t = e.target;
  if (!FILTERS.includes(t.name)) return;
  const value = t.type === "checkbox" ? (t.checked ? "" : "0") : t.value;
  setParam(t.name, t.name === "tz" && value === "UTC" ? "" : value);
});

window.addEventListener("hashchange", render);
window.addEventListener("resize", () => charts.forEach((c) => c.resize()));
render();
