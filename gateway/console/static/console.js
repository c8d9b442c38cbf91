// The console's pages: Overview (spend by team for a month; its team table and team budget form
// are in teams.js) and Keys. Plain DOM, no framework, no build step; every value is inserted as
// text, never as HTML.
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

function usageBar(ratio) {
  if (ratio === null || ratio === undefined) return el("span", { class: "muted", text: "no budget" });
  const bar = el("span", { class: "bar" + (ratio >= 1 ? " over" : ratio >= 0.8 ? " warn" : "") }, el("span"));
  bar.firstChild.style.width = Math.min(100, ratio * 100).toFixed(1) + "%";
  return el("span", {}, bar, el("span", { class: "pct", text: (ratio * 100).toFixed(1) + "%" }));
}

function currentMonth() {
  return new Date().toISOString().slice(0, 7); // UTC
}

// -- overview --------------------------------------------------------------------------------------

async function loadOverview() {
  const input = document.getElementById("month");
  if (!input.value) input.value = currentMonth();
  const month = input.value;
  document.getElementById("download-csv").href = "/console/api/spend.csv?month=" + encodeURIComponent(month);
  const data = await api("/console/api/overview?month=" + encodeURIComponent(month));
  renderTeamTable(data);
  renderChart(data);
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

// Stacked bars: one column per day of the month, one colour per team.
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
    teams.forEach((team, t) => {
      const micros = perDay.get(day).get(team) || 0;
      if (!micros) return;
      const h = (micros / 1e6 / yMax) * plotH;
      y -= h;
      const rect = svg("rect", { x: left + i * slot + slot * 0.15, y, width: slot * 0.7, height: h, fill: COLORS[t % COLORS.length] });
      const tip = svg("title");
      tip.textContent = `${day} · ${team}: $${(micros / 1e6).toFixed(6)}`;
      rect.append(tip);
      chart.append(rect);
    });
    if (i % 2 === 0 || data.days.length <= 16) {
      const label = svg("text", { x: left + (i + 0.5) * slot, y: height - 6, "text-anchor": "middle", class: "axis" });
      label.textContent = day.slice(8);
      chart.append(label);
    }
  });
  const legend = el("figcaption", { class: "legend" });
  const spent = new Set(data.daily.map((point) => point.team));
  teams.forEach((team, t) => {
    if (!spent.has(team)) return; // the table lists every team; the legend, those in the chart
    const swatch = el("i");
    swatch.style.background = COLORS[t % COLORS.length];
    legend.append(el("span", {}, swatch, team));
  });
  figure.append(chart, legend);
}

// -- keys ------------------------------------------------------------------------------------------

async function loadKeys() {
  const filter = document.getElementById("team-filter");
  const team = filter.value;
  const data = await api("/console/api/keys" + (team ? "?team=" + encodeURIComponent(team) : ""));
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
    body.append(el("tr", { "data-key-id": key.key_id },
      el("td", {}, el("code", { text: key.key_id })),
      el("td", { text: key.team }),
      el("td", { text: key.name }),
      el("td", {}, el("span", { class: "status " + key.status, "data-field": "status", text: key.status })),
      el("td", { class: "num", "data-field": "spent_usd", text: key.spent_usd + " / " + key.spent_period }),
      el("td", { class: "num", "data-field": "budget_usd", text: key.budget_usd ? key.budget_usd + " / " + key.budget_period : "—" }),
      el("td", {}, usageBar(key.used_ratio)),
      actions));
  }
  if (!data.data.length) body.append(el("tr", {}, el("td", { colspan: "8", class: "muted", text: "No keys yet." })));
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

function route() {
  const page = window.location.hash === "#keys" ? "keys" : "overview";
  for (const name of ["overview", "keys"]) {
    document.getElementById(name).hidden = name !== page;
    document.getElementById("nav-" + name).classList.toggle("active", name === page);
  }
  showError(null);
  (page === "keys" ? loadKeys() : loadOverview()).catch(showError);
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
  document.getElementById("month").addEventListener("change", () => loadOverview().catch(showError));
  document.getElementById("team-filter").addEventListener("change", () => loadKeys().catch(showError));
  document.getElementById("create-form").addEventListener("submit", (e) => createKey(e).catch(showError));
  document.getElementById("team-form").addEventListener("submit", (e) => saveTeam(e).catch(showError));
  document.getElementById("copy-secret").addEventListener("click", () => copySecret());
  document.getElementById("dismiss-secret").addEventListener("click", () => { document.getElementById("secret-panel").hidden = true; });
  window.addEventListener("hashchange", route);
  route();
}

start().catch(showError);
