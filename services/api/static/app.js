// The live dashboard: source tiles, the live event feed, notifier sinks, the DeviceHive form.
"use strict";

const { el } = soundhive;

const SOURCES_POLL_MS = 1000;
const SINKS_POLL_MS = 2000;
const FEED_MAX = 100;
const STREAM_RETRY_MS = 5000; // after the stream was refused (EventSource then gives up)
const LEVEL_FLOOR_DBFS = -60; // the meter's empty end
const STATE_ICONS = {
  running: "▶", retrying: "↻", finished: "✓", failed: "✕",
  connected: "✓", connecting: "↻", disabled: "–",
};

// A badge with an icon and the state's name, so it reads without colour.
function stateBadge(state) {
  return el("span", { className: `badge state-${state}` },
    el("span", { className: "icon", ariaHidden: "true" }, STATE_ICONS[state] || "?"), ` ${state}`);
}

// Re-run `task` every `ms` milliseconds, one at a time, whatever it throws.
function poll(task, ms) {
  const run = async () => {
    try {
      await task();
    } finally {
      setTimeout(run, ms);
    }
  };
  run();
}

function showMessage(id, text) {
  const node = document.getElementById(id);
  node.textContent = text;
  node.hidden = !text;
}

// ---- sources ----

function levelMeter(level) {
  const dbfs = Math.max(LEVEL_FLOOR_DBFS, level.dbfs);
  const fill = Math.round(100 * (1 - dbfs / LEVEL_FLOOR_DBFS));
  const bar = el("span", { className: "bar level" });
  bar.style.setProperty("--fill", `${fill}%`);
  bar.setAttribute("role", "meter");
  bar.setAttribute("aria-label", "Level");
  bar.setAttribute("aria-valuemin", String(LEVEL_FLOOR_DBFS));
  bar.setAttribute("aria-valuemax", "0");
  bar.setAttribute("aria-valuenow", String(level.dbfs));
  bar.setAttribute("aria-valuetext", `${level.dbfs.toFixed(1)} dBFS`);
  return el("div", { className: "meter-row" },
    el("span", { className: "meter-name" }, "Level"), bar,
    el("span", { className: "meter-value" }, `${level.dbfs.toFixed(1)} dBFS`));
}

function labelRows(labels) {
  if (!labels.length) return el("p", { className: "quiet" }, "No labels yet");
  return el("ol", { className: "labels", ariaLabel: "Top labels" }, ...labels.map((l) =>
    el("li", { className: "meter-row" },
      el("span", { className: "meter-name", title: l.label }, l.label),
      soundhive.scoreBar(l.label, l.score),
      el("span", { className: "meter-value" }, soundhive.score(l.score)))));
}

function sourceTile(source) {
  const seen = source.last_seen ? `seen ${soundhive.ago(source.last_seen)}` : "not seen yet";
  const tile = el("li", { className: `tile state-${source.state}` },
    el("div", { className: "tile-head" },
      el("h3", { title: source.source }, source.source), stateBadge(source.state)),
    source.detail ? el("p", { className: "detail" }, source.detail) : null,
    el("p", { className: "quiet" }, `${seen} · ${source.chunks} ${source.chunks === 1 ? "chunk" : "chunks"}`),
    levelMeter(source.level),
    labelRows(source.labels));
  tile.dataset.source = source.source;
  return tile;
}

async function refreshSources() {
  const result = await soundhive.request("/sources");
  if (!result.ok) {
    showMessage("sources-message", `Cannot load sources: ${soundhive.errorText(result)}`);
    return;
  }
  const sources = result.body.sources;
  showMessage("sources-message", sources.length ? "" : "No sources yet: start capture.");
  document.getElementById("sources").replaceChildren(...sources.map(sourceTile));
}

// ---- live events ----

const feedRows = new Map(); // event id -> its <li>

function feedRow(event) {
  const ongoing = event.end === null;
  const status = ongoing
    ? el("span", { className: "badge ongoing" },
      el("span", { className: "icon", ariaHidden: "true" }, "●"), " ongoing")
    : el("span", { className: "badge ended" },
      el("span", { className: "icon", ariaHidden: "true" }, "■"),
      ` ended · ${soundhive.duration(event.end - event.start)}`);
  const row = el("li", { className: ongoing ? "ongoing" : "ended" },
    soundhive.timeElement(event.start_time),
    el("span", { className: "event-label" }, event.label),
    el("span", { className: "event-source" }, event.source),
    el("span", { className: "event-score", title: "peak score" }, soundhive.score(event.score)),
    status);
  row.dataset.eventId = event.id;
  return row;
}

// Show an event: a start adds a row at the top, an end updates its start's row.
function upsertEvent(event) {
  const feed = document.getElementById("feed");
  const row = feedRow(event);
  const existing = feedRows.get(event.id);
  if (existing) existing.replaceWith(row);
  else feed.prepend(row);
  feedRows.set(event.id, row);
  while (feed.children.length > FEED_MAX) {
    feedRows.delete(feed.lastElementChild.dataset.eventId);
    feed.lastElementChild.remove();
  }
  document.getElementById("feed-empty").hidden = feed.children.length > 0;
}

function setStreamState(state, text) {
  const node = document.getElementById("stream-state");
  node.dataset.state = state;
  const icon = { live: "●", connecting: "◌", lost: "✕" }[state];
  node.replaceChildren(el("span", { ariaHidden: "true" }, icon), ` ${text}`);
}

async function loadRecentEvents() {
  const result = await soundhive.request("/events?limit=20");
  if (result.ok) result.body.events.slice().reverse().forEach(upsertEvent);
}

const liveFeed = { stream: null, retry: null };

// (Re)open the live feed with the tab's current token.
function followStream() {
  if (liveFeed.stream) liveFeed.stream.close();
  clearTimeout(liveFeed.retry);
  // EventSource cannot send an Authorization header: with SOUNDHIVE_API_READ_AUTH=1 the stream
  // takes the token as a query parameter (the api does not log URLs).
  const token = soundhive.apiToken();
  const stream = new EventSource(
    "/events/stream" + (token ? `?token=${encodeURIComponent(token)}` : ""));
  const receive = (message) => upsertEvent(JSON.parse(message.data));
  stream.addEventListener("start", receive);
  stream.addEventListener("end", receive);
  stream.onopen = () => setStreamState("live", "live");
  stream.onerror = () => {
    if (stream.readyState === EventSource.CONNECTING) {
      setStreamState("connecting", "reconnecting…"); // by itself, sending Last-Event-ID
      return;
    }
    // Refused (401 without the token, 503): EventSource gives up; a token entered in the
    // prompt reconnects at once, else try again later.
    setStreamState("lost", "disconnected: retrying…");
    liveFeed.retry = setTimeout(followStream, STREAM_RETRY_MS);
  };
  liveFeed.stream = stream;
}

// ---- notifier sinks ----

function sinkItem(sink) {
  const delivery = sink.last_delivery
    ? el("span", {}, "last delivery ", soundhive.timeElement(sink.last_delivery),
      ` (${soundhive.ago(sink.last_delivery)})`)
    : el("span", {}, "no delivery yet");
  return el("li", { className: `sink state-${sink.state}` },
    el("div", { className: "tile-head" }, el("h3", {}, sink.sink), stateBadge(sink.state)),
    sink.detail ? el("p", { className: "detail" }, el("strong", {}, "Last error: "), sink.detail)
      : null,
    el("p", { className: "quiet" }, delivery),
    el("dl", { className: "counters" },
      el("dt", {}, "delivered"), el("dd", {}, String(sink.delivered)),
      el("dt", {}, "failed"), el("dd", {}, String(sink.failed)),
      el("dt", {}, "dead-lettered"), el("dd", {}, String(sink.dead_lettered)),
      el("dt", {}, "lost"), el("dd", {}, String(sink.lost ?? 0))));
}

async function refreshSinks() {
  const result = await soundhive.request("/sinks");
  if (!result.ok) {
    showMessage("sinks-message", `Cannot load notifiers: ${soundhive.errorText(result)}`);
    return;
  }
  const sinks = result.body.sinks;
  showMessage("sinks-message", sinks.length ? "" : "No notifier has reported yet.");
  document.getElementById("sinks").replaceChildren(...sinks.map(sinkItem));
}

// ---- DeviceHive configuration ----

const configForm = () => document.getElementById("devicehive-form");

const RESULT_ICONS = { ok: "✓ ", error: "✕ ", note: "ⓘ " };

// The form's one-line message; kind: ok, error or note.
function setResult(text, kind) {
  const node = document.getElementById("config-result");
  node.className = `result ${kind}`;
  node.replaceChildren(el("span", { ariaHidden: "true" }, RESULT_ICONS[kind]), text);
}

function explain(result) {
  if (result.status === 0) return "Cannot reach the server.";
  if (result.status === 401) return "Not authorised (401): enter the API token above.";
  return `Rejected (${result.status}): ${soundhive.errorText(result)}`;
}

const CONFIG_FIELDS = ["url", "device_id", "notification"];
const TOKEN_FIELDS = ["refresh_token", "access_token"];

// The URL the stored tokens belong to: they are kept only while the URL stays the same.
let storedUrl = "";

function showTokenStates(config) {
  storedUrl = config.url || "";
  document.getElementById("dh-refresh-token-state").textContent =
    config.refresh_token_set ? "set" : "not set";
  document.getElementById("dh-access-token-state").textContent =
    config.access_token_set ? "set" : "not set";
  const hosts = config.allowed_hosts || [];
  document.getElementById("dh-allowed-hosts").textContent = hosts.length
    ? `Allowed servers: ${hosts.join(", ")}.`
    : "No server may be set here: set SOUNDHIVE_DEVICEHIVE_ALLOWED_HOSTS on the api and the "
      + "notifier.";
  showTokenHints();
}

// A new URL needs its own credentials: the stored ones stay with the stored URL.
function urlChanged() {
  return configForm().elements.url.value.trim() !== storedUrl;
}

function showTokenHints() {
  const form = configForm();
  for (const name of TOKEN_FIELDS) {
    form.elements[name].placeholder = urlChanged()
      ? "needed for a new URL (this or the other token)"
      : "leave empty to keep";
  }
}

// The stored configuration fills the fields left empty (what the user typed stays); tokens are
// shown only as "set" / "not set".
async function loadConfig() {
  const result = await soundhive.request("/config/devicehive");
  if (result.status === 401) {
    setResult("Enter the API token above to see and change the stored configuration.", "note");
    return;
  }
  if (!result.ok) {
    setResult(`Cannot load the configuration. ${explain(result)}`, "error");
    return;
  }
  const form = configForm();
  for (const name of CONFIG_FIELDS) {
    if (!form.elements[name].value) form.elements[name].value = result.body[name] || "";
  }
  showTokenStates(result.body);
  setResult("Configuration loaded.", "ok");
}

// After a save: the form shows what the server stored, and the token fields are emptied.
function showSaved(config) {
  const form = configForm();
  for (const name of CONFIG_FIELDS) form.elements[name].value = config[name] || "";
  for (const name of TOKEN_FIELDS) form.elements[name].value = "";
  showTokenStates(config);
}

function configPayload(form) {
  const payload = {
    url: form.elements.url.value.trim(),
    device_id: form.elements.device_id.value.trim(),
    notification: form.elements.notification.value.trim(),
  };
  for (const name of TOKEN_FIELDS) {
    const token = form.elements[name].value.trim();
    if (token) payload[name] = token;
  }
  return payload;
}

async function saveConfig(submit) {
  submit.preventDefault();
  const form = configForm();
  const payload = configPayload(form);
  if (urlChanged() && !TOKEN_FIELDS.some((name) => payload[name])) {
    setResult("A new server URL needs its credentials: enter a refresh or an access token.",
      "error");
    form.elements.refresh_token.focus();
    return;
  }
  const button = form.querySelector("button");
  button.disabled = true;
  setResult("Saving…", "note");
  try {
    const result = await soundhive.request("/config/devicehive",
      { method: "PUT", json: payload });
    if (result.ok) {
      showSaved(result.body);
      setResult("Saved: the notifier applies it without a restart.", "ok");
    } else {
      setResult(explain(result), "error");
    }
  } finally {
    button.disabled = false;
  }
}

function setUpConfigForm() {
  const form = configForm();
  const apiToken = document.getElementById("api-token");
  apiToken.value = soundhive.apiToken();
  apiToken.addEventListener("change", () => {
    soundhive.setApiToken(apiToken.value.trim());
    loadConfig();
  });
  form.addEventListener("submit", saveConfig);
  form.elements.url.addEventListener("input", showTokenHints);
  loadConfig();
}

// ---- a new API token (the prompt, or the form's field): everything again with it ----

function useNewToken() {
  refreshSources();
  refreshSinks();
  loadRecentEvents().finally(followStream);
  const field = document.getElementById("api-token");
  if (field.value !== soundhive.apiToken()) { // entered in the prompt
    field.value = soundhive.apiToken();
    loadConfig();
  }
}

soundhive.onApiToken(useNewToken);
poll(refreshSources, SOURCES_POLL_MS);
poll(refreshSinks, SINKS_POLL_MS);
loadRecentEvents().finally(followStream);
setUpConfigForm();
