// The Teams page: every team's budget now (its current period) and the team budget form.
// Loaded before console.js, whose helpers (api, el, money, usageBar, teamLink) it calls once the
// page runs.
"use strict";

let teamSettings = new Map(); // team -> its budget as the Teams page last showed it

async function loadTeams() {
  renderTeamTable(await api("/console/api/teams"));
}

function renderTeamTable(data) {
  teamSettings = new Map(data.data.map((row) => [row.team, row]));
  document.getElementById("team-names").replaceChildren(...data.data.map((row) => el("option", { value: row.team })));
  const body = document.querySelector("#team-table tbody");
  body.replaceChildren();
  for (const b of data.data) {
    const edit = el("button", { type: "button", class: "small", text: "Edit" });
    edit.addEventListener("click", () => editTeam(b.team));
    const use = el("td", { "data-field": "budget_use" }, usageBar(b.used_ratio, b.exhausted));
    if (b.resets_at) use.title = "Resets " + b.resets_at.replace("T", " ").replace("Z", " UTC");
    const budget = money({ class: "num", "data-field": "budget_usd" }, b.budget_usd);
    if (b.budget_usd !== null) budget.append(el("span", { class: "muted period", text: " / " + b.period }));
    body.append(el("tr", { "data-team": b.team, class: b.exhausted ? "exhausted" : "" },
      el("td", {}, teamLink(b.team)),
      budget,
      money({ class: "num", "data-field": "period_spent_usd" }, b.spent_usd),
      money({ class: "num", "data-field": "reserved_usd" }, b.reserved_usd),
      money({ class: "num", "data-field": "remaining_usd" }, b.remaining_usd),
      use,
      el("td", { class: "actions" }, ...(permissions.has("team_settings") ? [edit] : []))));
  }
  if (!data.data.length) body.append(el("tr", {}, el("td", { colspan: "7", class: "muted", text: "No teams yet." })));
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
  teamFormMessage(null, `Saved ${saved.team}: ${budget}.` + (saved.warning ? " " + saved.warning : ""));
  await loadTeams();
}
