// The console's pages: Overview (spend by team for a range of days), Keys, and the plumbing every
// page shares; the Teams page (budgets) is teams.js, a team's own page team.js. Plain DOM, no
// framework, no build step; every value is inserted as text, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f4e79", "#e07b39", "#2a9d8f", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"];
let csrfToken = "";
let permissions = new Set(); // what the session's role may do: read, keys, team_settings, ...

// -- plumbing --------------------------------------------------------------------------------------

async function api(path, options = {}) {
  const method = options.method || "GET";
  const headers = {};
  if (method !== "GET") {
    headers["X-CSRF-Token"] = csrfToken;
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (response.status === 401) {
    window.location.assign("/console/login");
    throw new Error("Your session has ended; sign in again.");
  }
  const payload = await response.json();
  if (!response.ok) {
    const problem = payload.error || { message: "Request failed." };
    throw new Error(problem.param ? `${problem.param}: ${problem.message}` : problem.message);
  }
  return payload;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function showError(error) {
  const banner = document.getElementById("page-error");
  banner.textContent = error ? error.message || String(error) : "";
  banner.hidden = !error;
}

// A budget's use: a bar of spent over budget, and "exhausted" once it refuses calls for lack of
// money (spent reached it, or what is left cannot cover a call), whatever the bar says.
function usageBar(ratio, exhausted) {
  if (ratio === null || ratio === undefined) return el("span", { class: "muted", text: "no budget" });
  const over = exhausted || ratio >= 1;
  const bar = el("span", { class: "bar" + (over ? " over" : ratio >= 0.8 ? " warn" : "") }, el("span"));
  bar.firstChild.style.width = (exhausted ? 100 : Math.min(100, ratio * 100)).toFixed(1) + "%";
  const shown = el("span", {}, bar, el("span", { class: "pct", text: (ratio * 100).toFixed(1) + "%" }));
  if (exhausted) shown.append(" ", el("span", { class: "status exhausted", "data-field": "exhausted", text: "exhausted" }));
  return shown;
}

// Amounts arrive as the ledger's exact decimal strings ("0.486000"): shown to the cent ($0.49),
// the exact value on hover and in data-exact. Integer micro-dollars: no float rounding on the way.
// A margin may be negative ("-0.040000": a channel that costs more than the price): -$0.04.
function cents(exact) {
  const text = String(exact);
  const negative = text.startsWith("-");
  const [whole, frac = ""] = text.replace(/^-/, "").split(".");
  const micros = Number(whole) * 1e6 + Number((frac + "000000").slice(0, 6));
  const rounded = Math.round(micros / 1e4); // cents, half up (of the amount without its sign)
  const shown = (rounded / 100).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  return (negative && rounded ? "-$" : "$") + shown;
}

function money(attrs, exact) {
  if (exact === null || exact === undefined) return el("td", { ...attrs, text: "—" });
  return el("td", { ...attrs, text: cents(exact), title: `$${exact} exactly`, "data-exact": exact });
}

// A report row's amounts, as every spend table shows them: calls, images, spend, cost, margin.
function amountCells(row) {
  return [
    el("td", { class: "num", "data-field": "calls", text: String(row.calls) }),
    el("td", { class: "num", "data-field": "images", text: String(row.images) }),
    money({ class: "num", "data-field": "spend_usd" }, row.spend_usd),
    money({ class: "num", "data-field": "cost_usd" }, row.cost_usd),
    money({ class: "num" + (row.margin_micros < 0 ? " negative" : ""), "data-field": "margin_usd" }, row.margin_usd),
  ];
}

// -- the range of days (From, To) that Overview and a team's page show --------------------------------

function monthBounds(now = new Date()) {
  const first = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const last = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 0));
  return [first.toISOString().slice(0, 10), last.toISOString().slice(0, 10)];
}

function rangeQuery() {
  const from = document.getElementById("from"), to = document.getElementById("to");
  if (!from.value || !to.value) [from.value, to.value] = monthBounds(); // this UTC month
  return "start=" + encodeURIComponent(from.value) + "&end=" + encodeURIComponent(to.value);
}

// Stable per team: the same colour whichever other teams appear in the range.
function teamColor(team) {
  let hash = 0;
  for (const char of team) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return COLORS[hash % COLORS.length];
}

// -- overview --------------------------------------------------------------------------------------

async function loadOverview() {
  const query = rangeQuery();
  document.getElementById("download-csv").href = "/console/api/spend.csv?" + query;
  document.getElementById("download-channels-csv").href = "/console/api/spend.csv?by=channel&" + query;
  const data = await api("/console/api/overview?" + query);
  renderSpendTable(data);
  renderChannelTable(data);
  renderChart(data);
}

function teamLink(team) {
  return el("a", { href: "#team/" + encodeURIComponent(team), text: team });
}

function renderSpendTable(data) {
  const body = document.querySelector("#spend-table tbody");
  body.replaceChildren(...data.teams.map((row) => el("tr", { "data-team": row.team },
    el("td", {}, teamLink(row.team)), ...amountCells(row))));
  if (!data.teams.length) body.append(el("tr", {}, el("td", { colspan: "6", class: "muted", text: "No teams yet." })));
  document.querySelector("#spend-table tfoot").replaceChildren(el("tr", { "data-team": "TOTAL" },
    el("td", { text: "Total" }), ...amountCells(data.totals)));
}

// What each upstream channel cost the company for the days chosen ("" is the calls that reached none).
function renderChannelTable(data) {
  const body = document.querySelector("#channel-table tbody");
  body.replaceChildren(...data.channels.map((row) => el("tr", { "data-channel": row.channel },
    row.channel ? el("td", { text: row.channel }) : el("td", { class: "muted", text: "(none)" }), ...amountCells(row))));
  if (!data.channels.length) body.append(el("tr", {}, el("td", { colspan: "6", class: "muted", text: "No calls in these days." })));
  document.querySelector("#channel-table tfoot").replaceChildren(el("tr", { "data-channel": "TOTAL" },
    el("td", { text: "Total" }), ...amountCells(data.totals)));
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

function niceStep(max) {
  const rough = max / 4;
  const power = Math.pow(10, Math.floor(Math.log10(rough)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= rough) return m * power;
  return 10 * power;
}

// Stacked bars: one column per day (per month for a range over two months), a colour per team.
function renderChart(data) {
  const figure = document.getElementById("chart");
  figure.replaceChildren();
  const teams = data.teams.map((t) => t.team);
  const perDay = new Map(data.days.map((d) => [d, new Map()]));
  for (const point of data.daily) perDay.get(point.day).set(point.team, point.spend_micros);
  const totals = data.days.map((d) => [...perDay.get(d).values()].reduce((a, b) => a + b, 0));
  const maxMicros = Math.max(...totals, 0);
  const width = 1080, height = 260, left = 64, bottom = 24, top = 10;
  const plotH = height - bottom - top, slot = (width - left) / data.days.length;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Spend per day by team" });
  const step = maxMicros > 0 ? niceStep(maxMicros / 1e6) : 1;
  const yMax = maxMicros > 0 ? Math.ceil(maxMicros / 1e6 / step) * step : 1;
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    const y = top + plotH - (v / yMax) * plotH;
    chart.append(svg("line", { x1: left, x2: width, y1: y, y2: y, class: "grid" }));
    const label = svg("text", { x: left - 8, y: y + 4, "text-anchor": "end", class: "axis" });
    label.textContent = "$" + (step < 0.01 ? v.toFixed(4) : step < 1 ? v.toFixed(2) : v.toFixed(0));
    chart.append(label);
  }
  data.days.forEach((day, i) => {
    let y = top + plotH;
    teams.forEach((team) => {
      const micros = perDay.get(day).get(team) || 0;
      if (!micros) return;
      const h = (micros / 1e6 / yMax) * plotH;
      y -= h;
      const rect = svg("rect", { x: left + i * slot + slot * 0.15, y, width: slot * 0.7, height: h, fill: teamColor(team) });
      const tip = svg("title");
      tip.textContent = `${day} · ${team}: $${(micros / 1e6).toFixed(6)}`;
      rect.append(tip);
      chart.append(rect);
    });
    if (i % Math.ceil(data.days.length / 16) === 0) {
      const label = svg("text", { x: left + (i + 0.5) * slot, y: height - 6, "text-anchor": "middle", class: "axis" });
      label.textContent = data.bucket === "month" ? day : day.slice(8);
      chart.append(label);
    }
  });
  const legend = el("figcaption", { class: "legend" });
  const spent = new Set(data.daily.map((point) => point.team));
  teams.forEach((team) => {
    if (!spent.has(team)) return; // the table lists every team; the legend, those in the chart
    const swatch = el("i");
    swatch.style.background = teamColor(team);
    legend.append(el("span", {}, swatch, team));
  });
  figure.append(chart, legend);
}

// -- keys ------------------------------------------------------------------------------------------

let keysPage = 1;
let keysAsked = 0; // answers to an older query (a search typed on) are dropped

async function loadKeys() {
  const asked = ++keysAsked;
  const filter = document.getElementById("team-filter");
  const team = filter.value;
  const params = new URLSearchParams({ page: String(keysPage) });
  if (team) params.set("team", team);
  const search = document.getElementById("key-search").value.trim();
  if (search) params.set("q", search);
  const data = await api("/console/api/keys?" + params);
  if (asked !== keysAsked) return;
  filter.replaceChildren(el("option", { value: "", text: "All teams" }), ...data.teams.map((t) => el("option", { value: t, text: t })));
  filter.value = team;
  const body = document.querySelector("#keys-table tbody");
  body.replaceChildren();
  for (const key of data.data) {
    const actions = el("td", { class: "actions" });
    if (key.status === "active" && permissions.has("keys")) {
      const rotate = el("button", { type: "button", class: "small", text: "Rotate" });
      rotate.addEventListener("click", () => rotateKey(key).catch(showError));
      const revoke = el("button", { type: "button", class: "small danger", text: "Revoke" });
      revoke.addEventListener("click", () => revokeKey(key).catch(showError));
      actions.append(rotate, " ", revoke);
    }
    const spent = money({ class: "num", "data-field": "spent_usd" }, key.spent_usd);
    spent.append(el("span", { class: "muted period", text: " / " + key.spent_period }));
    const budget = money({ class: "num", "data-field": "budget_usd" }, key.budget_usd);
    if (key.budget_usd) budget.append(el("span", { class: "muted period", text: " / " + key.budget_period }));
    body.append(el("tr", { "data-key-id": key.key_id },
      el("td", {}, teamLink(key.team)),
      el("td", { text: key.name }),
      el("td", {}, el("code", { text: key.key_id })),
      el("td", {}, el("span", { class: "status " + key.status, "data-field": "status", text: key.status })),
      spent, budget,
      el("td", { "data-field": "budget_use" }, usageBar(key.used_ratio, key.exhausted)),
      actions));
  }
  if (!data.data.length) body.append(el("tr", {}, el("td", { colspan: "8", class: "muted", text: search || team ? "No key matches." : "No keys yet." })));
  const first = data.total ? (data.page - 1) * data.per_page + 1 : 0;
  const last = (data.page - 1) * data.per_page + data.data.length;
  document.getElementById("keys-shown").textContent = `${first}–${last} of ${data.total.toLocaleString("en-US")}`;
  document.getElementById("keys-previous").disabled = data.page <= 1;
  document.getElementById("keys-next").disabled = !data.has_more;
}

function keysFrom(page) {
  keysPage = page;
  loadKeys().catch(showError);
}

function showSecret(title, secret) {
  document.getElementById("secret-title").textContent = title;
  document.getElementById("secret-value").textContent = secret;
  document.getElementById("secret-panel").hidden = false;
}

async function copySecret() {
  const value = document.getElementById("secret-value").textContent;
  const button = document.getElementById("copy-secret");
  try {
    await navigator.clipboard.writeText(value);
    button.textContent = "Copied";
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents(document.getElementById("secret-value"));
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
}

function formSpec(form) {
  const fields = new FormData(form);
  const spec = { team: fields.get("team").trim(), name: fields.get("name").trim() };
  const budget = fields.get("budget_usd").trim();
  if (budget) { spec.budget_usd = budget; spec.budget_period = fields.get("budget_period"); }
  for (const name of ["images_per_day", "rpm", "max_concurrent"]) {
    const value = fields.get(name).trim();
    if (value) spec[name] = Number(value);
  }
  const models = fields.get("models").split(",").map((m) => m.trim()).filter(Boolean);
  if (models.length) spec.models = models;
  return spec;
}

async function createKey(event) {
  event.preventDefault();
  const form = event.target;
  const created = await api("/console/api/keys", { method: "POST", body: formSpec(form) });
  form.reset();
  showSecret(`New key ${created.key_id} (${created.team} / ${created.name})`, created.key);
  await loadKeys();
}

async function revokeKey(key) {
  if (!window.confirm(`Revoke key ${key.key_id} (${key.team} / ${key.name})? It stops working at once.`)) return;
  await api(`/console/api/keys/${encodeURIComponent(key.key_id)}/revoke`, { method: "POST", body: {} });
  await loadKeys();
}

async function rotateKey(key) {
  if (!window.confirm(`Rotate key ${key.key_id}? The old secret keeps working for one hour.`)) return;
  const rotated = await api(`/console/api/keys/${encodeURIComponent(key.key_id)}/rotate`, { method: "POST", body: { grace_seconds: 3600 } });
  showSecret(`New secret for ${rotated.key_id}`, rotated.key);
  await loadKeys();
}

// -- pages and session -----------------------------------------------------------------------------

const PAGES = ["overview", "teams", "keys", "team"];

function route() {
  const hash = window.location.hash;
  const page = hash.startsWith("#team/") ? "team" : PAGES.includes(hash.slice(1)) ? hash.slice(1) : "overview";
  for (const name of PAGES) {
    document.getElementById(name).hidden = name !== page;
    const link = document.getElementById("nav-" + name);
    if (link) link.classList.toggle("active", name === page || (page === "team" && name === "teams"));
  }
  document.getElementById("range").hidden = page !== "overview" && page !== "team";
  showError(null);
  const loads = {
    overview: loadOverview,
    teams: loadTeams,
    keys: loadKeys,
    team: () => loadTeam(decodeURIComponent(hash.slice("#team/".length))),
  };
  loads[page]().catch(showError);
}

// A new range: the page shows it, and what an earlier one left (a refused form's error) goes.
// A day moved past the other end, or more than a report's 400 days away from it, takes the
// other end to its own month's edge: a range that can be asked is always shown.
function rangeChanged(event) {
  const from = document.getElementById("from"), to = document.getElementById("to");
  const days = (Date.parse(to.value) - Date.parse(from.value)) / 86400000;
  if (from.value && to.value && (days < 0 || days >= 400)) {
    const moved = event && event.target === to ? to : from;
    const [first, last] = monthBounds(new Date(Date.parse(moved.value)));
    if (moved === from) to.value = last; else from.value = first;
  }
  showError(null);
  teamFormMessage(null, null);
  route();
}

async function signOut() {
  await api("/console/api/session", { method: "DELETE" });
  window.location.assign("/console/login");
}

async function start() {
  const session = await api("/console/api/session");
  csrfToken = session.csrf_token;
  permissions = new Set(session.permissions);
  for (const part of document.querySelectorAll("[data-needs]")) part.hidden = !permissions.has(part.dataset.needs);
  const ends = new Date(session.expires_at_ms).toISOString().slice(0, 16).replace("T", " ");
  const teams = session.teams ? " of " + session.teams.join(", ") : "";
  document.getElementById("session-who").textContent = session.display;
  document.getElementById("session-role").textContent = session.role + teams;
  document.getElementById("session-info").textContent = "Session ends " + ends + " UTC";
  document.getElementById("sign-out").addEventListener("click", () => signOut().catch(showError));
  for (const id of ["from", "to"]) document.getElementById(id).addEventListener("change", rangeChanged);
  document.getElementById("team-filter").addEventListener("change", () => keysFrom(1));
  let typing;
  document.getElementById("key-search").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => keysFrom(1), 200); // one query per pause in typing, not per key
  });
  document.getElementById("keys-previous").addEventListener("click", () => keysFrom(keysPage - 1));
  document.getElementById("keys-next").addEventListener("click", () => keysFrom(keysPage + 1));
  document.getElementById("create-form").addEventListener("submit", (e) => createKey(e).catch(showError));
  document.getElementById("team-form").addEventListener("submit", (e) => saveTeam(e).catch(showError));
  document.getElementById("copy-secret").addEventListener("click", () => copySecret());
  document.getElementById("dismiss-secret").addEventListener("click", () => { document.getElementById("secret-panel").hidden = true; });
  window.addEventListener("hashchange", route);
  route();
}

start().catch(showError);
