// The dashboard page: polls /api/ every 2 s and renders with textContent only, so
// task names, errors and arguments can never become markup. The server keeps no
// state: the chart's series lives here, bounded to WINDOW_MS of points.
"use strict";

const POLL_MS = 2000;
const POOLS_EVERY = 5; // polls between two WorkerPool reads
const WINDOW_MS = 10 * 60 * 1000;
const TASKS_SHOWN = 25; // per page of recent tasks ("Older" pages on)
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  readOnly: true,
  series: [], // {t, backlog, throughput}
  lastSettled: null, // {t, byQueue: {queue: settled}}
  rates: {},
  filters: { state: "", task: "", since: "", id: "" },
  before: null, // cursor of the shown page of tasks; null: the newest
  nextBefore: null,
  detail: null, // the task id shown in the detail panel
  polls: 0,
  errors: {},
};

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function cell(row, text, cls) {
  row.appendChild(el("td", text === null || text === undefined ? "-" : text, cls));
}

function replaceRows(body, rows) {
  body.replaceChildren(...rows);
}

function ago(iso, now) {
  if (!iso) return "-";
  const seconds = Math.max(0, Math.round((Date.parse(now) - Date.parse(iso)) / 1000));
  if (seconds < 120) return seconds + "s";
  if (seconds < 7200) return Math.floor(seconds / 60) + "m";
  if (seconds < 172800) return Math.floor(seconds / 3600) + "h";
  return Math.floor(seconds / 86400) + "d";
}

function when(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// API ------------------------------------------------------------------------------------

async function call(path, options) {
  let response;
  try {
    response = await fetch(path, Object.assign({ credentials: "same-origin", cache: "no-store" }, options || {}));
  } catch (err) {
    throw new Error("the dashboard server is not reachable");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    const why = body && body.error ? body.error : "the server answered " + response.status;
    const error = new Error(why);
    error.status = response.status;
    throw error;
  }
  return body;
}

function post(path, body) {
  return call(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function report(part, err) {
  if (err) state.errors[part] = err.message;
  else delete state.errors[part];
  const messages = [...new Set(Object.values(state.errors))];
  const banner = $("banner");
  banner.textContent = messages.join(" ");
  banner.hidden = messages.length === 0;
}

// Queues and the chart ---------------------------------------------------------------------

function renderQueues(data) {
  const t = Date.parse(data.now);
  const settled = {};
  for (const q of data.queues) settled[q.queue] = q.settled;
  const last = state.lastSettled;
  if (last && t > last.t) {
    state.rates = {};
    for (const q of data.queues) {
      if (q.queue in last.byQueue) {
        state.rates[q.queue] = Math.max(0, q.settled - last.byQueue[q.queue]) / ((t - last.t) / 1000);
      }
    }
  }
  state.lastSettled = { t, byQueue: settled };
  const rows = data.queues.map((q) => {
    const row = el("tr");
    row.dataset.queue = q.queue;
    cell(row, q.queue);
    for (const field of ["waiting", "in_flight", "delayed", "dead_letters"]) {
      const td = el("td", q[field], "num");
      td.dataset.field = field;
      row.appendChild(td);
    }
    const rate = state.rates[q.queue];
    const td = el("td", rate === undefined ? "-" : rate.toFixed(1) + "/s", "num");
    td.dataset.field = "rate";
    row.appendChild(td);
    return row;
  });
  replaceRows($("queue-rows"), rows);
  $("queues-empty").hidden = rows.length > 0;

  const backlog = data.queues.reduce((sum, q) => sum + q.waiting, 0);
  const known = data.queues.filter((q) => q.queue in state.rates);
  const throughput = known.length ? known.reduce((sum, q) => sum + state.rates[q.queue], 0) : null;
  state.series.push({ t, backlog, throughput });
  while (state.series.length && state.series[0].t < t - WINDOW_MS) state.series.shift();
  $("backlog-now").textContent = "now " + backlog;
  $("throughput-now").textContent = throughput === null ? "" : "now " + throughput.toFixed(1) + "/s";
  drawChart($("backlog-chart"), "backlog", t);
  drawChart($("throughput-chart"), "throughput", t);
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(chart, key, now) {
  const W = 480, H = 140, left = 40, right = 8, top = 10, bottom = 20;
  const points = state.series.filter((p) => p[key] !== null);
  const max = Math.max(1, ...points.map((p) => p[key]));
  // The span shown grows with the series, from one minute up to the whole window.
  const oldest = points.length ? points[0].t : now;
  const span = Math.min(WINDOW_MS, Math.max(60 * 1000, now - oldest));
  const x = (t) => left + ((t - (now - span)) / span) * (W - left - right);
  const y = (v) => H - bottom - (v / max) * (H - top - bottom);
  const nodes = [
    svg("line", { class: "axis", x1: left, y1: H - bottom, x2: W - right, y2: H - bottom }),
    svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: H - bottom }),
    svg("text", { class: "label", x: left - 4, y: top + 8, "text-anchor": "end" }, fmt(max)),
    svg("text", { class: "label", x: left - 4, y: H - bottom, "text-anchor": "end" }, "0"),
    svg("text", { class: "label", x: left, y: H - 4 }, "-" + spanText(span)),
    svg("text", { class: "label", x: W - right, y: H - 4, "text-anchor": "end" }, "now"),
  ];
  if (points.length) {
    const coords = points.map((p) => x(p.t).toFixed(1) + "," + y(p[key]).toFixed(1)).join(" ");
    nodes.push(svg("polyline", { class: key, points: coords }));
  }
  chart.replaceChildren(...nodes);
  chart.dataset.points = String(points.length);
}

function spanText(ms) {
  const seconds = Math.round(ms / 1000);
  return seconds < 120 ? seconds + " s" : Math.round(seconds / 60) + " min";
}

function fmt(v) {
  return v >= 100 ? String(Math.round(v)) : String(Math.round(v * 10) / 10);
}

// Workers --------------------------------------------------------------------------------

function renderWorkers(data) {
  const rows = data.workers.map((w) => {
    const row = el("tr");
    row.dataset.worker = w.name;
    cell(row, w.name);
    cell(row, w.queues.join(", "));
    cell(row, w.pool + " x" + w.concurrency);
    cell(row, w.running, "num");
    cell(row, w.succeeded, "num");
    cell(row, w.failed, "num");
    cell(row, w.state);
    cell(row, ago(w.started, data.now), "num");
    cell(row, ago(w.seen, data.now), "num");
    return row;
  });
  replaceRows($("worker-rows"), rows);
  $("workers-empty").hidden = rows.length > 0;
  $("worker-count").textContent = "(" + rows.length + ")";
}

// Dead letters ---------------------------------------------------------------------------

function renderDeadLetters(data) {
  const rows = data.dead_letters.map((d) => {
    const row = el("tr");
    row.dataset.ref = d.ref;
    cell(row, d.queue);
    cell(row, d.task);
    const id = el("td", d.task_id || "-");
    if (d.task_id) {
      id.className = "link";
      row.classList.add("clickable");
      row.addEventListener("click", () => showTask(d.task_id));
    }
    row.appendChild(id);
    cell(row, d.reason);
    const error = el("td", (d.error || "-").split("\n")[0], "clip");
    error.title = d.error || "";
    row.appendChild(error);
    cell(row, when(d.stored));
    const actions = el("td", null, "writes");
    if (!state.readOnly) {
      const button = el("button", "Replay");
      button.type = "button";
      button.dataset.ref = d.ref;
      button.addEventListener("click", (event) => {
        event.stopPropagation();
        replay(d.ref, button);
      });
      actions.appendChild(button);
    }
    row.appendChild(actions);
    return row;
  });
  replaceRows($("dead-letter-rows"), rows);
  $("dead-letters-empty").hidden = rows.length > 0;
  const shown = data.dead_letters.length;
  $("dead-letter-total").textContent =
    "(" + data.total + (data.total > shown ? ", newest " + shown + " shown" : "") + ")";
  const queues = [...new Set(data.dead_letters.map((d) => d.queue))].sort();
  const buttons = state.readOnly ? [] : queues.map((q) => {
    const button = el("button", "Purge " + q, "danger");
    button.type = "button";
    button.dataset.queue = q;
    button.addEventListener("click", () => purge(q));
    return button;
  });
  $("purge-buttons").replaceChildren(...buttons);
}

async function replay(ref, button) {
  button.disabled = true;
  try {
    const done = await post("/api/dead-letters/replay", { ref });
    if (done.outcome === "skipped") report("replay", new Error("not replayed: " + done.why));
    else report("replay", null);
  } catch (err) {
    report("replay", err);
  }
  await pollNow();
}

async function purge(queue) {
  if (!window.confirm("Delete every dead letter of queue " + queue + "?")) return;
  try {
    await post("/api/dead-letters/purge", { queue });
    report("purge", null);
  } catch (err) {
    report("purge", err);
  }
  await pollNow();
}

// Tasks ----------------------------------------------------------------------------------

function taskQuery() {
  const q = new URLSearchParams({ limit: String(TASKS_SHOWN) });
  const f = state.filters;
  if (f.state) q.set("state", f.state);
  if (f.task) q.set("task", f.task);
  if (f.since) q.set("since", new Date(Date.now() - Number(f.since) * 1000).toISOString());
  if (state.before !== null) q.set("before", String(state.before));
  return q.toString();
}

function renderTasks(data) {
  const rows = data.tasks.map((t) => {
    const row = el("tr", null, "clickable");
    row.dataset.task = t.id;
    cell(row, t.id);
    cell(row, t.task);
    cell(row, t.state, "state-" + t.state);
    cell(row, t.worker);
    cell(row, t.retries, "num");
    cell(row, when(t.written));
    row.addEventListener("click", () => showTask(t.id));
    return row;
  });
  replaceRows($("task-rows"), rows);
  state.nextBefore = data.next_before;
  $("tasks-note").textContent = rows.length
    ? "Read " + data.scanned + " stored records for these."
    : "No task matches among the " + data.scanned + " newest stored records.";
  $("older").hidden = data.next_before === null;
  $("newest").hidden = state.before === null;
}

async function findById(id) {
  try {
    const data = await call("/api/tasks/" + encodeURIComponent(id));
    renderTasks({ tasks: [Object.assign({ written: data.task.written }, data.task)], scanned: 1, next_before: null });
    report("tasks", null);
  } catch (err) {
    if (err.status === 404) {
      replaceRows($("task-rows"), []);
      $("tasks-note").textContent = err.message;
      report("tasks", null);
    } else report("tasks", err);
  }
}

// Task detail ----------------------------------------------------------------------------

function json(value) {
  return JSON.stringify(value, null, 2);
}

function field(list, name, value) {
  if (value === null || value === undefined || value === "") return;
  list.appendChild(el("dt", name));
  const dd = el("dd", typeof value === "string" ? value : json(value));
  dd.dataset.field = name;
  list.appendChild(dd);
}

function renderDetail(task) {
  $("task-detail").hidden = false;
  $("detail-id").textContent = task.id;
  const fields = $("detail-fields");
  fields.replaceChildren();
  field(fields, "state", task.state);
  field(fields, "task", task.task);
  field(fields, "worker", task.worker);
  field(fields, "retries", String(task.retries || 0));
  field(fields, "args", task.args === null ? "not stored" : task.args);
  field(fields, "kwargs", task.kwargs === null ? "not stored" : task.kwargs);
  if (task.dead_letter) {
    field(fields, "dead letter", task.dead_letter.ref + " (" + task.dead_letter.reason + ", " +
      task.dead_letter.deliveries + " deliveries)");
  }
  if (task.children) field(fields, "group members", task.children.join(", "));
  const steps = (task.timeline || []).map((s) => el("li", when(s.time) + "  " + s.state + " (" + s.what + ")"));
  $("detail-timeline").replaceChildren(...steps);
  const outcome = [];
  if (task.error) outcome.push(el("h3", "Error"), el("pre", task.error));
  else if (task.state === "SUCCESS") outcome.push(el("h3", "Result"), el("pre", json(task.result)));
  const traceback = task.traceback || (task.dead_letter && task.dead_letter.traceback);
  if (traceback) outcome.push(el("h3", "Traceback"), el("pre", traceback));
  $("detail-outcome").replaceChildren(...outcome);
  const final = ["SUCCESS", "FAILURE", "REVOKED"].includes(task.state);
  $("detail-revoke").hidden = state.readOnly || final;
}

async function showTask(id) {
  state.detail = id;
  await refreshDetail();
  $("task-detail").scrollIntoView({ block: "nearest" });
}

async function refreshDetail() {
  if (state.detail === null) return;
  const id = state.detail;
  try {
    const data = await call("/api/tasks/" + encodeURIComponent(id));
    if (state.detail === id) renderDetail(data.task);
    report("detail", null);
  } catch (err) {
    if (err.status === 404) {
      renderDetail({ id, state: "PENDING", error: err.message, timeline: [] });
      report("detail", null);
    } else report("detail", err);
  }
}

// WorkerPools ----------------------------------------------------------------------------

function renderPools(data) {
  const table = $("pools-table");
  if (!data.connected) {
    $("pools-status").textContent = "Not connected to Kubernetes: " + (data.why || "unknown reason") + ".";
    table.hidden = true;
    return;
  }
  $("pools-status").textContent = data.pools.length ? "" : "No WorkerPools.";
  table.hidden = data.pools.length === 0;
  replaceRows($("pool-rows"), data.pools.map((p) => {
    const row = el("tr");
    cell(row, p.namespace);
    cell(row, p.name);
    cell(row, p.backlog, "num");
    cell(row, p.desired, "num");
    cell(row, p.ready, "num");
    cell(row, p.last_scale_reason, "wrap");
    cell(row, when(p.last_scale_time));
    return row;
  }));
}

// Polling --------------------------------------------------------------------------------

async function part(name, path, render) {
  try {
    render(await call(path));
    report(name, null);
  } catch (err) {
    report(name, err);
  }
}

let polling = null;

// After an action or a new filter: a poll that starts now, not one already under way.
async function pollNow() {
  if (polling) await polling.catch(() => null);
  await poll();
}

async function poll() {
  if (polling) return polling;
  polling = (async () => {
    const parts = [
      part("queues", "/api/queues", renderQueues),
      part("workers", "/api/workers", renderWorkers),
      part("dead-letters", "/api/dead-letters", renderDeadLetters),
      refreshDetail(),
    ];
    if (state.filters.id) parts.push(findById(state.filters.id));
    else parts.push(part("tasks", "/api/tasks?" + taskQuery(), renderTasks));
    if (state.polls % POOLS_EVERY === 0) parts.push(part("pools", "/api/pools", renderPools));
    await Promise.all(parts);
    state.polls += 1;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.polls = String(state.polls);
  })();
  try {
    await polling;
  } finally {
    polling = null;
  }
}

function wire() {
  $("task-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    state.filters = {
      state: form.get("state") || "",
      task: (form.get("task") || "").trim(),
      since: form.get("since") || "",
      id: (form.get("id") || "").trim(),
    };
    state.before = null;
    pollNow();
  });
  $("older").addEventListener("click", () => {
    state.before = state.nextBefore;
    pollNow();
  });
  $("newest").addEventListener("click", () => {
    state.before = null;
    pollNow();
  });
  $("detail-close").addEventListener("click", () => {
    state.detail = null;
    $("task-detail").hidden = true;
  });
  $("detail-revoke").addEventListener("click", async () => {
    if (state.detail === null || !window.confirm("Revoke task " + state.detail + "?")) return;
    try {
      await post("/api/tasks/" + encodeURIComponent(state.detail) + "/revoke", {});
      report("revoke", null);
    } catch (err) {
      report("revoke", err);
    }
    await pollNow();
  });
}

async function start() {
  wire();
  try {
    const config = await call("/api/config");
    state.readOnly = config.read_only;
    $("nats-url").textContent = config.nats_url + " · celeriac " + config.version;
    report("config", null);
  } catch (err) {
    report("config", err);
  }
  $("read-only").hidden = !state.readOnly;
  document.body.classList.toggle("read-only", state.readOnly);
  await poll();
  setInterval(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
