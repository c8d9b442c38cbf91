// Sign-in: exchange the admin token for a session cookie (set by the server, HttpOnly).
"use strict";

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
