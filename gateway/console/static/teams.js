// The overview's team table (the month's spend, each team's budget now) and the team budget form.
// Loaded before console.js, whose helpers (api, el, usageBar) it calls once the page runs.
"use strict";

let teamSettings = new Map(); // team -> its budget as the overview last showed it

function money(value) {
  return value === null || value === undefined ? "—" : value;
}

function renderTeamTable(data) {
  document.getElementById("month-head").textContent = data.month + " (UTC)";
  teamSettings = new Map(data.teams.map((row) => [row.team, row.budget]));
  document.getElementById("team-names").replaceChildren(...data.teams.map((row) => el("option", { value: row.team })));
  const body = document.querySelector("#team-table tbody");
  body.replaceChildren();
  for (const row of data.teams) {
    const b = row.budget;
    const edit = el("button", { type: "button", class: "small", text: "Edit" });
    edit.addEventListener("click", () => editTeam(row.team));
    const use = el("td", { "data-field": "budget_use" }, usageBar(b.used_ratio));
    if (b.resets_at) use.title = "Resets " + b.resets_at.replace("T", " ").replace("Z", " UTC");
    body.append(el("tr", { "data-team": row.team },
      el("td", { text: row.team }),
      el("td", { class: "num", "data-field": "calls", text: String(row.calls) }),
      el("td", { class: "num", "data-field": "images", text: String(row.images) }),
      el("td", { class: "num", "data-field": "spend_usd", text: row.spend_usd }),
      el("td", { class: "num", "data-field": "budget_usd", text: b.budget_usd === null ? "—" : `${b.budget_usd} / ${b.period}` }),
      el("td", { class: "num", "data-field": "period_spent_usd", text: b.spent_usd }),
      el("td", { class: "num", "data-field": "reserved_usd", text: b.reserved_usd }),
      el("td", { class: "num", "data-field": "remaining_usd", text: money(b.remaining_usd) }),
      use,
      el("td", { class: "actions" }, ...(permissions.has("team_settings") ? [edit] : []))));
  }
  if (!data.teams.length) body.append(el("tr", {}, el("td", { colspan: "10", class: "muted", text: "No teams yet." })));
  const t = data.totals;
  document.querySelector("#team-table tfoot").replaceChildren(el("tr", { "data-team": "TOTAL" },
    el("td", { text: "Total" }),
    el("td", { class: "num", "data-field": "calls", text: String(t.calls) }),
    el("td", { class: "num", "data-field": "images", text: String(t.images) }),
    el("td", { class: "num", "data-field": "spend_usd", text: t.spend_usd }),
    el("td", { colspan: "6" })));
}

function teamFormMessage(error, done) {
  const problem = document.getElementById("team-form-error");
  problem.textContent = error ? error.message || String(error) : "";
  problem.hidden = !error;
  const saved = document.getElementById("team-form-done");
  saved.textContent = done || "";
  saved.hidden = !done;
}

// Fill the form with a team's current settings, ready to change (or clear) one of them.
function editTeam(team) {
  const b = teamSettings.get(team);
  const form = document.getElementById("team-form");
  form.elements.team.value = team;
  form.elements.budget_usd.value = b.budget_usd || "";
  form.elements.budget_period.value = b.budget_period;
  form.elements.images_per_day.value = b.images_per_day === null ? "" : String(b.images_per_day);
  form.elements.alert_thresholds.value = (b.alert_thresholds || []).join(", ");
  teamFormMessage(null, null);
  form.scrollIntoView({ block: "center" });
  form.elements.budget_usd.focus();
}

// Every field is sent: an empty one is null, which clears it (PUT /admin/v1/teams/{team}'s rule).
// Values go as typed; the gateway validates them and names the field it refuses.
function teamSpec(form) {
  const fields = new FormData(form);
  const text = (name) => fields.get(name).trim();
  const thresholds = text("alert_thresholds").split(/[\s,]+/).filter(Boolean);
  return {
    budget_usd: text("budget_usd") || null,
    budget_period: fields.get("budget_period"),
    images_per_day: text("images_per_day") || null,
    alert_thresholds: thresholds.length ? thresholds : null,
  };
}

async function saveTeam(event) {
  event.preventDefault();
  const form = event.target;
  const team = form.elements.team.value.trim();
  teamFormMessage(null, null);
  let saved;
  try {
    saved = await api("/console/api/teams/" + encodeURIComponent(team), { method: "PUT", body: teamSpec(form) });
  } catch (error) {
    teamFormMessage(error, null);
    return;
  }
  const budget = saved.budget_usd === null ? "no budget" : `budget ${saved.budget_usd} / ${saved.budget_period}`;
  teamFormMessage(null, `Saved ${saved.team}: ${budget}.`);
  await loadOverview();
}
