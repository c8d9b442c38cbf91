// A team's page (#team/<name>): its budget now, and its keys, models, end users and upstream channels
// with calls, images, spend, cost and margin for the range of days, each table downloadable as the
// ledger's CSV.
// Loaded before console.js, whose helpers (api, el, money, amountCells, usageBar, rangeQuery) it calls.
"use strict";

const TEAM_TABLES = {
  keys: (row) => [el("td", {}, el("code", { text: row.key_id })), el("td", { text: row.key_name })],
  models: (row) => [el("td", { text: row.model })],
  users: (row) => [row.user ? el("td", { text: row.user }) : el("td", { class: "muted", text: "(none)" })],
  channels: (row) => [row.channel ? el("td", { text: row.channel }) : el("td", { class: "muted", text: "(none)" })],
};

async function loadTeam(team) {
  const query = rangeQuery();
  const base = "/console/api/teams/" + encodeURIComponent(team);
  document.getElementById("team-title").textContent = "Team " + team;
  const data = await api(base + "/report?" + query);
  renderTeamBudget(data.budget);
  for (const [table, cells] of Object.entries(TEAM_TABLES)) {
    document.getElementById(`team-${table}-csv`).href = `${base}/${table}.csv?${query}`;
    renderTeamReportTable(table, data[table], cells, data.totals);
  }
}

function renderTeamBudget(b) {
  const line = document.getElementById("team-budget");
  if (b.budget_usd === null) {
    line.replaceChildren(el("span", { class: "muted", text: "No team budget: only its keys' own budgets limit it." }));
    return;
  }
  const use = el("span", { "data-field": "budget_use" }, usageBar(b.used_ratio, b.exhausted));
  if (b.resets_at) use.title = "Resets " + b.resets_at.replace("T", " ").replace("Z", " UTC");
  const amount = (field, value) => {
    const cell = money({ "data-field": field }, value);
    return el("strong", { title: cell.title, "data-field": field, "data-exact": value, text: cell.textContent });
  };
  line.replaceChildren(`Budget now (this ${b.period}): `, amount("budget_usd", b.budget_usd), ", spent ",
    amount("period_spent_usd", b.spent_usd), ", remaining ", amount("remaining_usd", b.remaining_usd), " ", use);
}

function renderTeamReportTable(table, rows, cells, totals) {
  const body = document.querySelector(`#team-${table} tbody`);
  body.replaceChildren(...rows.map((row) => el("tr", {}, ...cells(row), ...amountCells(row))));
  const width = cells(rows[0] || { key_id: "", key_name: "", model: "", user: "", channel: "" }).length;
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: String(width + 5), class: "muted", text: "No calls in these days." })));
  document.querySelector(`#team-${table} tfoot`).replaceChildren(el("tr", { "data-team": "TOTAL" },
    el("td", { colspan: String(width), text: "Total" }), ...amountCells(totals)));
}
