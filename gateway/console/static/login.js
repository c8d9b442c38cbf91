// Sign-in: exchange an admin token for a session cookie (set by the server, HttpOnly), or single
// sign-on through the company's identity provider when the gateway has one configured.
"use strict";

fetch("/console/api/signin-options", { credentials: "same-origin" })
  .then((response) => (response.ok ? response.json() : { sso: false }))
  .then((options) => { document.getElementById("sso-choice").hidden = !options.sso; })
  .catch(() => {});

document.getElementById("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const field = document.getElementById("token");
  const error = document.getElementById("signin-error");
  error.hidden = true;
  const response = await fetch("/console/api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: field.value }),
    credentials: "same-origin",
  });
  if (response.ok) {
    window.location.assign("/console/");
    return;
  }
  let message = "Sign-in failed.";
  try {
    message = (await response.json()).error.message;
  } catch (_) {
    // keep the generic message
  }
  if (response.status === 429) {
    message = "Too many wrong tokens from this address. Try again in " +
      (response.headers.get("retry-after") || "a few") + " seconds.";
  }
  field.value = "";
  error.textContent = message;
  error.hidden = false;
});
