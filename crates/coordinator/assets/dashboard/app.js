// The wasm-exec dashboard: plain JavaScript against the coordinator's API, same origin.
//
// Every call sends the token as `Authorization: Bearer`. The live stream is GET /v1/events read
// with fetch() as a stream, not EventSource: EventSource cannot send that header, and a token in
// the query string would end up in access logs, proxies and the browser's history.
// Text from the API (ids, output, messages) is always set as text, never parsed as HTML.
"use strict";

const TOKEN_KEY = "wasm-exec-token";
const STATES = ["pending", "fetching", "running", "succeeded", "failed", "quarantined", "cancelled"];
const FINISHED = new Set(["succeeded", "failed", "quarantined", "cancelled"]);
const SHOWN_ROWS = 200;
const PAGE = 1000;
const MAX_PAGES = 20;

const $ = (id) => document.getElementById(id);
const tasks = new Map();
let token = null;
let stream = null;
let selected = null;
// Set when the tenant has more tasks than the list reads (PAGE * MAX_PAGES).
let capped = false;

function say(text) {
  $("status").textContent = text;
}

function headers(extra) {
  const h = Object.assign({}, extra);
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

// An API call; resolves to the parsed JSON body, throws an Error carrying the API's message.
async function api(path, options) {
  const opts = Object.assign({}, options);
  opts.headers = headers(opts.headers);
  const response = await fetch(path, opts);
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : text || response.statusText;
    const e = new Error(response.status + ": " + message);
    e.status = response.status;
    throw e;
  }
  return body;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function resultText(task) {
  const r = task.result;
  if (!r) return task.state === "cancelled" ? "cancelled" : "";
  if (r.ok) return JSON.stringify(r.result);
  return r.error ? r.error.kind : "error";
}

function time(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "";
}

// --- the header: counts, throughput, health -------------------------------------------------

function renderSummary() {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  const now = Date.now();
  let lastMinute = 0;
  for (const t of tasks.values()) {
    counts[t.state] = (counts[t.state] || 0) + 1;
    if (FINISHED.has(t.state) && now - t.updated_at_ms <= 60000) lastMinute += 1;
  }
  const list = $("counts");
  list.replaceChildren(
    ...STATES.map((s) => {
      const item = el("li", null, "count state-" + s);
      item.append(el("span", s + " "), el("strong", String(counts[s])));
      item.dataset.state = s;
      return item;
    }),
  );
  $("throughput").textContent = lastMinute + " finished in the last minute";
}

async function checkHealth() {
  try {
    const response = await fetch("/readyz");
    $("health").textContent = (await response.text()).trim();
    $("health").className = response.ok ? "good" : "bad";
  } catch (e) {
    $("health").textContent = "unreachable";
    $("health").className = "bad";
  }
}

// --- the task list ----------------------------------------------------------------------------

function renderTasks() {
  const filter = $("filter").value;
  const shown = [...tasks.values()]
    .filter((t) => !filter || t.state === filter)
    .sort((a, b) => b.created_at_ms - a.created_at_ms || (a.task_id < b.task_id ? 1 : -1))
    .slice(0, SHOWN_ROWS);
  const rows = shown.map((t) => {
    const row = el("tr");
    row.dataset.taskId = t.task_id;
    const idCell = el("td", null, "task-id");
    idCell.dataset.label = "Task";
    const open = el("button", t.task_id, "link");
    open.type = "button";
    open.setAttribute("aria-label", "Show task " + t.task_id);
    open.addEventListener("click", () => showTask(t.task_id, true));
    idCell.append(open);
    const cells = [
      ["State", t.state, "state state-" + t.state],
      ["Entry", (t.task.input && t.task.input.entry) || t.task.entry || "", ""],
      ["Result", resultText(t), "result"],
      ["Created", time(t.created_at_ms), ""],
    ].map(([label, text, cls]) => {
      const cell = el("td", text, cls);
      cell.dataset.label = label;
      return cell;
    });
    const actions = el("td");
    actions.dataset.label = "Actions";
    if (!FINISHED.has(t.state) && t.origin === "api") {
      const cancel = el("button", "Cancel", "cancel");
      cancel.type = "button";
      cancel.setAttribute("aria-label", "Cancel task " + t.task_id);
      cancel.addEventListener("click", () => cancelTask(t.task_id));
      actions.append(cancel);
    }
    row.append(idCell, ...cells, actions);
    return row;
  });
  // Keep focus on a control that is redrawn (a row's buttons are replaced on every change).
  const focused = document.activeElement;
  const focusId = focused && focused.closest && focused.closest("tr[data-task-id]");
  const focusKey = focusId ? [focusId.dataset.taskId, focused.className] : null;
  $("task-rows").replaceChildren(...rows);
  if (focusKey) {
    const row = [...$("task-rows").children].find((r) => r.dataset.taskId === focusKey[0]);
    const again = row && [...row.querySelectorAll("button")].find((b) => b.className === focusKey[1]);
    if (again) again.focus();
  }
  const total = [...tasks.values()].filter((t) => !filter || t.state === filter).length;
  $("live").textContent =
    (stream ? "Live. " : "") + "Showing " + shown.length + " of " + total + " tasks" +
    (filter ? " in state " + filter : "") + "." +
    (capped ? " Only the first " + PAGE * MAX_PAGES + " tasks by id were read; counts cover those and newer ones." : "");
  renderSummary();
}

// Every task of this token's tenant (the API shows no others), page by page, up to
// PAGE * MAX_PAGES of them (then the list says so); new ones arrive over the stream.
async function loadTasks() {
  let after = null;
  capped = false;
  for (let page = 0; page < MAX_PAGES; page += 1) {
    const query = "?limit=" + PAGE + (after ? "&after=" + encodeURIComponent(after) : "");
    const body = await api("/v1/tasks" + query);
    for (const t of body.tasks) tasks.set(t.task_id, t);
    if (!body.next) break;
    after = body.next;
    capped = page === MAX_PAGES - 1;
  }
  renderTasks();
}

async function refreshTask(id) {
  try {
    const t = await api("/v1/tasks/" + encodeURIComponent(id));
    tasks.set(t.task_id, t);
    renderTasks();
    if (selected === id) renderDetail(t);
  } catch (e) {
    say("Could not read task " + id + ": " + e.message);
  }
}

// --- the live stream ----------------------------------------------------------------------------

// Reads GET /v1/events as Server-Sent Events: `task` events update that task, `lagged` (this
// client fell behind) reloads the list. Reconnects after a pause when the stream ends.
async function follow() {
  const controller = new AbortController();
  stream = controller;
  try {
    const response = await fetch("/v1/events", { headers: headers(), signal: controller.signal });
    if (!response.ok) throw new Error(response.status + " " + (await response.text()));
    renderTasks();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (e) {
    if (controller.signal.aborted) return;
    say("The live stream stopped (" + e.message + "); reconnecting.");
  }
  if (stream !== controller) return;
  stream = null;
  renderTasks();
  setTimeout(() => {
    if (stream === null && token !== null) {
      follow();
      loadTasks().catch((e) => say("Could not list tasks: " + e.message));
    }
  }, 2000);
}

function dispatch(frame) {
  let event = "message";
  let data = "";
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    if (field === "data") data += value;
  }
  if (event === "task") {
    const change = JSON.parse(data);
    refreshTask(change.task_id);
  } else if (event === "lagged") {
    loadTasks().catch((e) => say("Could not list tasks: " + e.message));
  }
}

// --- a task's detail ------------------------------------------------------------------------------

async function showTask(id, focus) {
  selected = id;
  $("detail").hidden = false;
  $("detail-title").textContent = "Task " + id;
  await refreshTask(id);
  if (focus) $("detail").focus();
}

function renderDetail(t) {
  $("detail-state").textContent = t.state + (t.waiting ? " (" + waitText(t.waiting) + ")" : "");
  $("detail-input").textContent = JSON.stringify(
    { wasm_cid: t.task.wasm_cid, input: t.task.input, limits: t.task.limits },
    null,
    2,
  );
  const r = t.result;
  $("detail-result").textContent = r
    ? JSON.stringify(
        { ok: r.ok, result: r.result, error: r.error, duration_ms: r.duration_ms, result_hash: t.result_hash },
        null,
        2,
      )
    : t.cancelled
      ? "cancelled by " + t.cancelled.by + " at " + time(t.cancelled.at_ms)
      : "not finished yet";
  $("detail-stdout").textContent = r ? r.stdout : "";
  $("detail-stderr").textContent = r ? r.stderr : "";
  $("detail-timeline").replaceChildren(
    ...(t.timeline || []).map((s) => el("li", time(s.at_ms) + " " + s.state + " (attempt " + s.attempt + ")")),
  );
  const cancel = $("detail-cancel");
  cancel.hidden = FINISHED.has(t.state) || t.origin !== "api";
  $("detail-receipt").textContent = "";
  if (r && selected === t.task_id) {
    api("/v1/tasks/" + encodeURIComponent(t.task_id) + "/receipt")
      .then((receipt) => {
        if (selected === t.task_id) $("detail-receipt").textContent = JSON.stringify(receipt, null, 2);
      })
      .catch((e) => {
        $("detail-receipt").textContent = "no receipt: " + e.message;
      });
  }
}

function waitText(w) {
  if (w.reason === "queued") return "queued behind " + w.ahead;
  return w.reason.replaceAll("_", " ");
}

async function cancelTask(id) {
  say("Cancelling " + id + "…");
  try {
    const t = await api("/v1/tasks/" + encodeURIComponent(id) + "/cancel", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
    });
    tasks.set(t.task_id, t);
    renderTasks();
    if (selected === id) renderDetail(t);
    say("Task " + id + " is " + t.state + ".");
  } catch (e) {
    say("Could not cancel " + id + ": " + e.message);
  }
}

// --- connecting ---------------------------------------------------------------------------------------

async function connect(given) {
  token = given;
  sessionStorage.setItem(TOKEN_KEY, given);
  if (stream) stream.abort();
  stream = null;
  tasks.clear();
  selected = null;
  $("detail").hidden = true;
  say("Connecting…");
  try {
    // Checked before the stream opens, so a wrong token is said once.
    await api("/v1/tasks?limit=1");
  } catch (e) {
    say(e.status === 401 ? "That token is not accepted; check it." : "Could not connect: " + e.message);
    renderTasks();
    return;
  }
  follow();
  try {
    await loadTasks();
    say("Connected.");
  } catch (e) {
    say("Could not list tasks: " + e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    connect($("token").value.trim());
  });
  $("module").addEventListener("change", uploadModule);
  $("submit-form").addEventListener("submit", submitTask);
  $("filter").addEventListener("change", renderTasks);
  $("detail-cancel").addEventListener("click", () => selected && cancelTask(selected));
  renderSummary();
  checkHealth();
  setInterval(checkHealth, 10000);
  setInterval(renderSummary, 5000);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved !== null) {
    $("token").value = saved;
    connect(saved);
  } else {
    say("Enter your API token and press Connect.");
  }
});
