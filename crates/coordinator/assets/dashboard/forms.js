// The dashboard's submit form: upload a module, pick an export, submit a task with its arguments.
// Loaded after app.js, whose helpers ($, api, el, say) and task list it uses.
"use strict";

// The module last uploaded (`POST /v1/modules`'s answer), whose exports the form offers.
let uploaded = null;

async function uploadModule() {
  const file = $("module").files[0];
  const entry = $("entry");
  uploaded = null;
  entry.replaceChildren();
  entry.disabled = true;
  $("submit-button").disabled = true;
  $("module-info").textContent = "";
  if (!file) return;
  if (token === null) {
    say("Connect first: enter the API token.");
    return;
  }
  say("Uploading " + file.name + "…");
  const type = file.name.endsWith(".wat") ? "text/wat" : "application/wasm";
  try {
    const info = await api("/v1/modules", {
      method: "POST",
      headers: { "Content-Type": type },
      body: await file.arrayBuffer(),
    });
    uploaded = info;
    entry.replaceChildren(
      ...info.exports.map((x) => {
        const option = el("option", x.signature);
        option.value = x.name;
        return option;
      }),
    );
    entry.disabled = info.exports.length === 0;
    $("submit-button").disabled = info.exports.length === 0;
    $("module-info").textContent =
      file.name + ": " + info.cid_v1 + ", " + info.size_bytes + " bytes, " + info.exports.length + " exports";
    say("Uploaded " + file.name + "; pick an export.");
  } catch (e) {
    say("Upload failed: " + e.message);
  }
}

async function submitTask(event) {
  event.preventDefault();
  if (!uploaded) {
    say("Upload a module first.");
    return;
  }
  let args;
  try {
    args = JSON.parse($("args").value || "[]");
    if (!Array.isArray(args)) throw new Error("not an array");
  } catch (e) {
    say("Arguments must be a JSON array, such as [12] (" + e.message + ").");
    $("args").setAttribute("aria-invalid", "true");
    $("args").focus();
    return;
  }
  $("args").removeAttribute("aria-invalid");
  const body = { wasm_cid: uploaded.cid_v1, input: { entry: $("entry").value, args } };
  try {
    const t = await api("/v1/tasks", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    tasks.set(t.task_id, t);
    renderTasks();
    say("Submitted task " + t.task_id + ".");
    showTask(t.task_id, false);
  } catch (e) {
    say("Submit failed: " + e.message);
  }
}
