// The broker's dashboard: polls the admin endpoint once a second and shows
// what it answers. Plain JS, no build step, nothing loaded from elsewhere.
// Every value from the broker goes into the page as text (textContent,
// never HTML): order ids, reasons and worker ids come from the network.
"use strict";

/** How often the page asks the broker, in ms. */
const POLL_INTERVAL_MS = 1000;
/** A request unanswered after this is given up (the broker is "disconnected"). */
const REQUEST_TIMEOUT_MS = 3000;
/** Dead letters listed at most (the table says how many more there are). */
const DEAD_LETTERS_SHOWN_MAX = 100;
/** Where the token is kept: for this tab only, gone when it closes. */
const TOKEN_KEY = "orderly-admin-token";
/** An order no broker holds: asking to show it tells whether a token is right (404) or wrong (401). */
const TOKEN_PROBE_PATH = "/dlq/show?id=" + encodeURIComponent("orderly-dashboard/token-check");

const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY) || "";
/** Whether the broker accepted the token (null: not checked yet). */
let tokenAccepted = null;
/** The broker runs without --admin-token: no token can unlock the actions. */
let brokerHasNoToken = false;
/** Polls a rate spans at most: one second's delta alone jitters with the poll's timing. */
const RATE_WINDOW_SAMPLES = 5;

/** The latest /status counters and when they came ({at, acked, sealed}), oldest first, for the rates. */
let samples = [];
/** What the dead-letter table shows now, so it is rebuilt only when that changes. */
let deadSignature = "";
let lastAnswerAt = null;

// ---- talking to the broker -------------------------------------------------

/** One request; resolves to {status, text}, rejects when there is no answer. */
async function call(method, path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  try {
    const response = await fetch(path, { method, headers, cache: "no-store", signal: abort.signal });
    return { status: response.status, text: await response.text() };
  } finally {
    clearTimeout(timer);
  }
}

/** GET a JSON route; throws a `Refused` for a non-200 answer. */
async function getJson(path) {
  const answer = await call("GET", path);
  if (answer.status !== 200) throw new Refused(path, answer);
  return JSON.parse(answer.text);
}

class Refused extends Error {
  constructor(path, answer) {
    super(path + " answered " + answer.status + ": " + answer.text.trim());
    this.status = answer.status;
  }
}

// ---- formatting ------------------------------------------------------------

function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return (unit === 0 ? String(value) : value.toFixed(1)) + " " + units[unit];
}

function formatAge(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds < 1) return Math.round(seconds * 1000) + " ms";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return minutes + "m " + Math.floor(seconds % 60) + "s";
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return hours + "h " + (minutes % 60) + "m";
  return Math.floor(hours / 24) + "d " + (hours % 24) + "h";
}

/** A moment as HH:MM:SS today, else as YYYY-MM-DD HH:MM (local time). */
function formatMoment(unixMs) {
  const date = new Date(unixMs);
  const pad = (n) => String(n).padStart(2, "0");
  const time = pad(date.getHours()) + ":" + pad(date.getMinutes());
  if (date.toDateString() === new Date().toDateString()) return time + ":" + pad(date.getSeconds());
  return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " + time;
}

function formatRate(perSecond) {
  if (perSecond === null) return "–";
  return perSecond < 10 ? perSecond.toFixed(1) : String(Math.round(perSecond));
}

// ---- /metrics: the two numbers /status does not have ------------------------

/** Reads a Prometheus text exposition into [{name, labels, value}]. */
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    samples.push({ name: match[1], labels: parseLabels(match[3] || ""), value: Number(match[4]) });
  }
  return samples;
}

function parseLabels(text) {
  const labels = {};
  const pattern = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (let m = pattern.exec(text); m !== null; m = pattern.exec(text)) {
    labels[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
  }
  return labels;
}

// ---- the DOM: text only ----------------------------------------------------

/** A table cell holding `text` as text. */
function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  return td;
}

function setValue(id, text, tone) {
  const element = $(id);
  element.textContent = text;
  element.className = "value" + (tone ? " " + tone : "");
}

function showProblem(text) {
  const problem = $("problem");
  problem.hidden = !text;
  problem.textContent = text || "";
}

function setConnection(state, text) {
  const badge = $("connection");
  badge.dataset.state = state;
  badge.textContent = text;
}

// ---- the sections ----------------------------------------------------------

function counter(status, name) {
  // Counters sit in `counters` (the core's) or beside the other fields.
  const value = status.counters && name in status.counters ? status.counters[name] : status[name];
  return typeof value === "number" ? value : null;
}

function renderOverview(status, metrics, now) {
  const acked = counter(status, "orders_acked");
  const sealed = counter(status, "orders_sealed");
  // A counter that went down is a restarted broker: start again from it.
  const latest = samples[samples.length - 1];
  if (latest && (acked < latest.acked || sealed < latest.sealed)) samples = [];
  samples.push({ at: now, acked, sealed });
  if (samples.length > RATE_WINDOW_SAMPLES) samples.shift();
  let rates = { acked: null, sealed: null };
  const first = samples[0];
  if (samples.length > 1 && now > first.at) {
    const seconds = (now - first.at) / 1000;
    rates = { acked: (acked - first.acked) / seconds, sealed: (sealed - first.sealed) / seconds };
  }
  setValue("acked-rate", formatRate(rates.acked));
  setValue("sealed-rate", formatRate(rates.sealed));
  setValue("pending", String(status.pending_orders));
  setValue("in-flight", String(status.in_flight_orders));
  setValue("delayed", String(status.delayed_orders ?? 0));
  setValue("dead", String(status.dead_letters), status.dead_letters > 0 ? "warn" : "");
  const oldest = metrics ? metrics.find((s) => s.name === "orderly_oldest_pending_age_seconds") : undefined;
  setValue("oldest-age", oldest ? formatAge(oldest.value) : "–");
  setValue("journal-bytes", formatBytes(status.journal_bytes));
  setValue("disk", status.disk_full ? "FULL" : "ok", status.disk_full ? "bad" : "ok");
  const closed = status.intake_closed;
  setValue("intake", closed ? "closed: " + closed.reason : "open", closed ? "bad" : "ok");
  $("intake").title = closed ? closed.detail : "";
}

function workerState(worker) {
  if (worker.broken) return ["broken: " + worker.broken, "bad"];
  if (worker.draining) return ["draining", "warn"];
  return worker.ready ? ["ready", "ok"] : ["not ready", "warn"];
}

function renderWorkers(workers, metrics) {
  const heartbeatAge = new Map();
  for (const sample of metrics || []) {
    if (sample.name === "orderly_worker_heartbeat_age_seconds") heartbeatAge.set(sample.labels.worker, sample.value);
  }
  const rows = workers.map((worker) => {
    const row = document.createElement("tr");
    const [state, tone] = workerState(worker);
    row.append(
      cell(worker.id),
      cell(state, tone),
      cell(worker.capacity, "num"),
      cell(worker.credits, "num"),
      cell(worker.in_flight, "num"),
      cell(heartbeatAge.has(worker.id) ? formatAge(heartbeatAge.get(worker.id)) + " ago" : "–", "num"),
    );
    return row;
  });
  $("workers").querySelector("tbody").replaceChildren(...rows);
  $("workers-count").textContent = "(" + workers.length + ")";
  $("workers-empty").hidden = workers.length > 0;
}

function renderGroup(group) {
  $("group-section").hidden = !group;
  if (!group) return;
  const row = document.createElement("tr");
  row.append(
    cell(group.member),
    cell(group.leader ?? "none"),
    cell(group.term, "num"),
    cell(group.role, group.role === "leader" ? "ok" : ""),
    cell(group.commit, "num"),
    cell(group.applied, "num"),
    cell((group.voters || []).join(", ")),
    cell((group.learners || []).join(", ") || "–"),
  );
  $("group").querySelector("tbody").replaceChildren(row);
  // Only a leader tracks every member's log; a follower's page says so.
  const members = group.members || [];
  const memberRows = members.map((member) => {
    const tr = document.createElement("tr");
    const lag = Math.max(0, group.commit - member.matched);
    tr.append(
      cell(member.id),
      cell(member.role, member.role === "leader" ? "ok" : ""),
      cell(member.matched, "num"),
      cell(lag, lag > 0 ? "num warn" : "num"),
      cell(member.state),
      cell(member.active ? "yes" : "no", member.active ? "ok" : "bad"),
    );
    return tr;
  });
  $("group-members").querySelector("tbody").replaceChildren(...memberRows);
  $("group-members").hidden = members.length === 0;
  $("group-members-note").hidden = members.length > 0;
}

/** Why the dead-letter buttons are disabled, or "" when they are not. */
function actionsBlocked() {
  if (brokerHasNoToken) return "This broker runs without --admin-token, so show, retry and delete are off.";
  if (!token) return "Enter the admin token above to show, retry or delete dead letters.";
  if (tokenAccepted === false) return "The broker refused this admin token: enter the right one above.";
  return "";
}

function renderDeadLetters(page) {
  const blocked = actionsBlocked();
  const signature = JSON.stringify([page.dead_letters, blocked]);
  $("dead-count").textContent =
    page.total > page.dead_letters.length ? "(" + page.dead_letters.length + " of " + page.total + " shown)" : "";
  $("dead-empty").hidden = page.dead_letters.length > 0;
  $("actions-note").textContent = blocked;
  if (signature === deadSignature) return; // unchanged: keep the rows (and a click in progress)
  deadSignature = signature;
  const rows = page.dead_letters.map((letter) => {
    const ref = letter.producer + "/" + letter.id;
    const row = document.createElement("tr");
    row.dataset.order = ref;
    const since = letter.dead_since_unix_ms ? formatMoment(letter.dead_since_unix_ms) : "–";
    const actions = document.createElement("td");
    actions.className = "actions";
    actions.append(
      button("show", blocked, () => showOrder(ref)),
      button("retry", blocked, () => change("retry", ref)),
      button("delete", blocked, () => change("delete", ref), "danger"),
    );
    row.append(
      cell(ref),
      cell(letter.attempts, "num"),
      cell(letter.reason),
      cell(letter.last_worker),
      cell(since, "num"),
      cell(letter.items, "num"),
      actions,
    );
    return row;
  });
  $("dead-letters").querySelector("tbody").replaceChildren(...rows);
}

function button(label, blocked, onClick, className) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.disabled = Boolean(blocked);
  b.title = blocked || label + " this dead letter";
  if (className) b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

// ---- actions ---------------------------------------------------------------

async function showOrder(ref) {
  $("detail").hidden = false;
  $("detail-title").textContent = ref;
  $("detail-body").textContent = "loading…";
  try {
    const view = await getJson("/dlq/show?id=" + encodeURIComponent(ref));
    $("detail-body").textContent = JSON.stringify(view, null, 2);
  } catch (error) {
    $("detail-body").textContent = String(error.message || error);
  }
}

async function change(what, ref) {
  if (what === "delete" && !confirm("Delete dead letter " + ref + "? It cannot be retried afterwards.")) return;
  try {
    const answer = await call("POST", "/dlq/" + what + "?id=" + encodeURIComponent(ref));
    if (answer.status === 401) tokenAccepted = false;
    showProblem(answer.status === 200 ? "" : what + " " + ref + ": the broker answered " + answer.status + ": " + answer.text.trim());
  } catch (error) {
    showProblem(what + " " + ref + ": the broker did not answer (" + (error.message || error) + ")");
  }
  poll();
}

async function checkToken() {
  try {
    const answer = await call("GET", TOKEN_PROBE_PATH);
    // 404: the order is unknown, so the token passed; 401: none or wrong; 403: the broker has no token at all.
    brokerHasNoToken = answer.status === 403;
    if (!token) tokenAccepted = null;
    else if (answer.status === 404 || answer.status === 200) tokenAccepted = true;
    else if (answer.status === 401 || answer.status === 403) tokenAccepted = false;
    else tokenAccepted = null;
  } catch (_) {
    tokenAccepted = null;
  }
  const state = !token ? "no token" : tokenAccepted === true ? "token accepted" : tokenAccepted === false ? "token refused" : "token not checked";
  $("token-state").textContent = state;
  $("token-forget").hidden = !token;
}

// ---- the poll loop ---------------------------------------------------------

let timer = null;

async function poll() {
  clearTimeout(timer);
  try {
    const now = performance.now();
    const [status, metricsText, page] = await Promise.all([
      getJson("/status"),
      call("GET", "/metrics").then((a) => (a.status === 200 ? a.text : null), () => null),
      getJson("/dlq/page?limit=" + DEAD_LETTERS_SHOWN_MAX),
    ]);
    const metrics = metricsText === null ? null : parseMetrics(metricsText);
    lastAnswerAt = new Date();
    setConnection("connected", "connected");
    renderOverview(status, metrics, now);
    renderWorkers(status.workers || [], metrics);
    renderGroup(status.group);
    renderDeadLetters(page);
    $("updated").textContent = "updated " + lastAnswerAt.toLocaleTimeString();
    if ($("problem").dataset.kind === "poll") showProblem("");
    $("problem").dataset.kind = "";
  } catch (error) {
    const refused = error instanceof Refused;
    if (refused && error.status === 401) {
      setConnection("refused", "token needed");
      showProblem(token
        ? "The broker refused the admin token: enter the right one above."
        : "This broker is reachable beyond loopback, so reading it needs the admin token: enter it above.");
    } else if (refused) {
      setConnection("refused", "error " + error.status);
      showProblem(error.message);
    } else {
      setConnection("disconnected", "disconnected");
      const since = lastAnswerAt ? " (last answer at " + lastAnswerAt.toLocaleTimeString() + ")" : "";
      showProblem("The broker does not answer" + since + ": is it running?");
    }
    $("problem").dataset.kind = "poll";
  }
  timer = setTimeout(poll, POLL_INTERVAL_MS);
}

// ---- start -----------------------------------------------------------------

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  $("token").value = "";
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  await checkToken();
  deadSignature = "";
  poll();
});

$("token-forget").addEventListener("click", async () => {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  await checkToken();
  deadSignature = "";
  poll();
});

$("detail-close").addEventListener("click", () => {
  $("detail").hidden = true;
});

checkToken().then(poll);
