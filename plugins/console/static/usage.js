// Usage charts from the observability plugin's ledger (GET /-/usage). Without that plugin
// the route answers 404 and the page says what to enable.
import { ApiError, api, el, showError } from "./common.js";

const $ = (id) => document.getElementById(id);
const uPlot = window.uPlot;
const TIME_KEYS = ["day", "date", "bucket", "bucket_start", "start", "period", "time", "timestamp"];
const PALETTE = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#4b5563"];

function rowsOf(body) {
  if (Array.isArray(body)) return body;
  for (const key of ["data", "rows", "usage", "buckets"]) if (Array.isArray(body && body[key])) return body[key];
  return [];
}

function timeOf(row) {
  for (const key of TIME_KEYS) {
    const v = row[key];
    if (v === undefined || v === null) continue;
    if (typeof v === "number") return v > 1e11 ? v / 1000 : v;
    const parsed = Date.parse(v);
    if (!Number.isNaN(parsed)) return parsed / 1000;
  }
  return null;
}

const tokensOf = (r) => r.total_tokens ?? ((r.input_tokens || 0) + (r.output_tokens || 0));
const requestsOf = (r) => r.requests ?? r.runs ?? r.count ?? 0;

const DAY = 86400;
const dayLabel = (t) => new Date(t * 1000).toLocaleDateString("en", { month: "short", day: "numeric", timeZone: "UTC" });
const MIN_DAYS = 7;

/** The times to plot: for daily buckets every day from a week before the newest (days without usage are 0). */
function timeline(rows) {
  const times = [...new Set(rows.map(timeOf))].sort((a, b) => a - b);
  if (!times.length || !times.every((t) => t % DAY === 0)) return times;
  const last = times[times.length - 1];
  const first = Math.min(times[0], last - (MIN_DAYS - 1) * DAY);
  return Array.from({ length: (last - first) / DAY + 1 }, (_, i) => first + i * DAY);
}

/** {x: [times], series: {name: [values]}} summing `value` per time and `group`. */
function pivot(rows, group, value) {
  const times = timeline(rows);
  const index = new Map(times.map((t, i) => [t, i]));
  const series = {};
  for (const row of rows) {
    const name = String(group(row) ?? "—");
    series[name] ??= new Array(times.length).fill(0);
    series[name][index.get(timeOf(row))] += value(row) || 0;
  }
  return { x: times, series };
}

function chart(title, { x, series }) {
  const box = el("section", { class: "card chart" }, el("h2", { text: title }));
  $("us-charts").append(box);
  const names = Object.keys(series);
  if (!x.length || !names.length) { box.append(el("p", { class: "muted", text: "No usage recorded yet." })); return; }
  const daily = x.every((t) => t % DAY === 0);
  const opts = {
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    width: Math.min(920, box.clientWidth - 32), height: 240,
    series: [{}, ...names.map((name, i) => ({ label: name, stroke: PALETTE[i % PALETTE.length], width: 2,
      points: { show: x.length < 40 } }))],
    // Daily buckets are UTC days: label them as dates, one tick per day (or week, month when crowded).
    axes: [daily ? { incrs: [DAY, 7 * DAY, 28 * DAY], values: (_u, splits) => splits.map(dayLabel) } : {},
      { size: 60 }],
    scales: { y: { range: (_u, _min, max) => [0, max > 0 ? Math.ceil(max * 1.1) : 1] } },
  };
  new uPlot(opts, [x, ...names.map((n) => series[n])], box);
}

function agentTable(rows) {
  const box = el("section", { class: "card" }, el("h2", { text: "Per agent (the whole period)" }));
  $("us-charts").append(box);
  if (!rows.length) { box.append(el("p", { class: "muted", text: "No usage recorded yet." })); return; }
  const totals = new Map();
  for (const r of rows) {
    const name = String(r.agent ?? "—");
    const t = totals.get(name) || { tokens: 0, requests: 0 };
    t.tokens += tokensOf(r) || 0;
    t.requests += requestsOf(r) || 0;
    totals.set(name, t);
  }
  const table = el("table", {}, el("tr", {}, el("th", { text: "agent" }), el("th", { text: "runs" }),
    el("th", { text: "tokens" })));
  for (const [name, t] of totals) {
    table.append(el("tr", {}, el("td", { text: name }), el("td", { text: String(t.requests) }),
      el("td", { text: String(t.tokens) })));
  }
  box.append(table);
}

async function load() {
  let byDay;
  let byAgent;
  try {
    // The ledger groups by one dimension besides the key: days for the charts, agents for the table.
    [byDay, byAgent] = await Promise.all([api("/-/usage?group_by=day"), api("/-/usage?group_by=agent")]);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) { $("us-notice").hidden = false; return; }
    if (e instanceof ApiError && e.status === 403) e.message = `Usage is for admins: ${e.message}`;
    showError($("us-error"), e);
    return;
  }
  const rows = rowsOf(byDay).filter((r) => timeOf(r) !== null);
  const key = (r) => r.principal ?? r.key ?? r.api_key;
  chart("Tokens per key", pivot(rows, key, tokensOf));
  chart("Requests per key", pivot(rows, key, requestsOf));
  agentTable(rowsOf(byAgent));
}

if (document.readyState === "complete") load(); else window.addEventListener("load", load);
