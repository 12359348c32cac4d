// The live dashboard: status counts, the sources' table (filtered, sorted and paged by the
// api) with a source's detail, the live event feed, notifier sinks, the DeviceHive form.
"use strict";

const { el } = soundhive;

const SOURCES_POLL_MS = 1000;
const SINKS_POLL_MS = 2000;
const DETAIL_POLL_MS = 2000;
const PAGE_SIZE = 50;
const SEARCH_DELAY_MS = 150; // typing in the name filter: one request once it pauses
const FEED_MAX = 100; // rows kept in the feed; older ones leave the DOM
const STREAM_RETRY_MS = 5000; // after the stream was refused (EventSource then gives up)
const LEVEL_FLOOR_DBFS = -60; // the meter's empty end
const STATE_ICONS = {
  running: "play", retrying: "retry", finished: "check", failed: "cross", silent: "mute",
  connected: "check", connecting: "retry", disabled: "dash",
};

// A badge with an icon and the state's name, so it reads without colour.
function stateBadge(state) {
  return el("span", { className: `badge state-${state}` },
    soundhive.icon(STATE_ICONS[state] || "info"), ` ${state}`);
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

// ---- status counts ----

async function refreshSummary() {
  const result = await soundhive.request("/sources/summary");
  if (!result.ok) return; // the sources' table says why
  const summary = result.body;
  const counts = {
    sources: summary.sources, silent: summary.silent, ongoing: summary.ongoing,
    ...summary.states,
  };
  for (const [name, value] of Object.entries(counts)) {
    const node = document.getElementById(`count-${name}`);
    if (node) node.textContent = String(value);
  }
}

// A count clicked: the table shows those sources.
function setUpCounts() {
  for (const button of document.querySelectorAll("#summary .count")) {
    const icon = button.dataset.state ? STATE_ICONS[button.dataset.state]
      : button.dataset.ongoing ? "dot" : null;
    if (icon) button.prepend(soundhive.icon(icon));
    button.addEventListener("click", () => {
      const form = document.getElementById("source-filters");
      form.elements.state.value = button.dataset.state || "";
      form.elements.ongoing.checked = Boolean(button.dataset.ongoing);
      if (!button.dataset.state && !button.dataset.ongoing) form.elements.q.value = "";
      sourcesView.offset = 0;
      refreshSources();
    });
  }
}

// ---- sources ----

// What the table shows: the filters are the form's; sort and page are kept here.
const sourcesView = { sort: "source", order: "asc", offset: 0, total: 0, asked: 0 };

function sourcesQuery() {
  const form = document.getElementById("source-filters");
  const query = new URLSearchParams({
    sort: sourcesView.sort, order: sourcesView.order,
    offset: String(sourcesView.offset), limit: String(PAGE_SIZE),
  });
  const q = form.elements.q.value.trim();
  if (q) query.set("q", q);
  if (form.elements.state.value) query.set("state", form.elements.state.value);
  if (form.elements.ongoing.checked) query.set("ongoing", "true");
  return query;
}

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
  return el("span", { className: "level-cell" }, bar,
    el("span", { className: "meter-value" }, `${level.dbfs.toFixed(1)} dB`));
}

function cell(heading, ...content) {
  const td = el("td", {}, ...content);
  td.dataset.heading = heading;
  return td;
}

function lastEventCell(event, ongoing) {
  if (!event) return el("span", { className: "quiet" }, "none yet");
  const marker = event.end_time === null
    ? el("span", { className: "live-marker ongoing", title: "going on" }, soundhive.icon("dot"))
    : null;
  return el("span", { className: "last-event" }, marker,
    el("span", { className: "event-label" }, event.label), " ",
    el("span", { className: "quiet" }, soundhive.ago(event.start_time)),
    ongoing > 1 ? el("span", { className: "quiet" }, ` · ${ongoing} active`) : null);
}

function sourceRow(source) {
  const top = source.labels[0];
  const state = source.silent ? "silent" : source.state;
  const name = el("button", { type: "button", className: "source-name", title: source.source },
    source.source);
  const row = el("tr", { className: `source-row state-${source.state}` },
    el("th", { scope: "row" }, name),
    cell("State", stateBadge(state)),
    cell("Level", levelMeter(source.level)),
    cell("Top label", top
      ? el("span", { className: "top-label" }, el("span", { className: "label-name" }, top.label),
        el("span", { className: "meter-value" }, soundhive.score(top.score)))
      : el("span", { className: "quiet" }, "—")),
    cell("Last event", lastEventCell(source.last_event, source.ongoing)));
  row.dataset.source = source.source;
  if (source.detail) row.title = source.detail;
  return row;
}

function showPager() {
  const { offset, total } = sourcesView;
  const last = Math.min(offset + PAGE_SIZE, total);
  document.getElementById("sources-range").textContent =
    total ? `${offset + 1}–${last} of ${total}` : "";
  document.getElementById("page-of").textContent = total > PAGE_SIZE
    ? `page ${Math.floor(offset / PAGE_SIZE) + 1} of ${Math.ceil(total / PAGE_SIZE)}` : "";
  document.querySelector(".pager").hidden = total <= PAGE_SIZE;
  document.getElementById("page-prev").disabled = offset === 0;
  document.getElementById("page-next").disabled = last >= total;
}

function filtered() {
  const form = document.getElementById("source-filters");
  return Boolean(form.elements.q.value.trim() || form.elements.state.value
    || form.elements.ongoing.checked);
}

async function refreshSources() {
  const asked = ++sourcesView.asked; // a slower, older answer must not replace a newer one
  const result = await soundhive.request(`/sources?${sourcesQuery()}`);
  if (asked !== sourcesView.asked) return;
  if (!result.ok) {
    showMessage("sources-message", `Cannot load sources: ${soundhive.errorText(result)}`);
    return;
  }
  const { sources, total } = result.body;
  sourcesView.total = total;
  if (!sources.length && total && sourcesView.offset) { // the page emptied: its last one
    sourcesView.offset = Math.floor((total - 1) / PAGE_SIZE) * PAGE_SIZE;
    refreshSources();
    return;
  }
  showMessage("sources-message", sources.length ? ""
    : filtered() ? "No source matches these filters." : "No sources yet: start capture.");
  patchRows(document.querySelector("#sources tbody"), sources.map(sourceRow));
  document.getElementById("sources").dataset.loaded = "true";
  showPager();
}

// The table is refreshed every second: rows and cells that did not change stay the same nodes,
// so a click (or a selection) on a row is not lost to a refresh between mousedown and mouseup.
function patchRows(tbody, rows) {
  const old = [...tbody.children];
  rows.forEach((row, i) => {
    const current = old[i];
    if (!current) tbody.append(row);
    else if (current.dataset.source !== row.dataset.source) current.replaceWith(row);
    else patchRow(current, row);
  });
  for (const extra of old.slice(rows.length)) extra.remove();
}

function patchRow(current, row) {
  for (const { name, value } of row.attributes) {
    if (current.getAttribute(name) !== value) current.setAttribute(name, value);
  }
  [...row.children].forEach((cell, j) => {
    const was = current.children[j];
    if (!was) current.append(cell);
    else if (!was.isEqualNode(cell)) was.replaceWith(cell);
  });
}

function showSort() {
  for (const th of document.querySelectorAll("#sources th[data-sort]")) {
    const sorted = th.dataset.sort === sourcesView.sort;
    const direction = sourcesView.order === "asc" ? "ascending" : "descending";
    if (sorted) th.setAttribute("aria-sort", direction);
    else th.removeAttribute("aria-sort");
    const button = th.querySelector("button");
    button.querySelector(".icon")?.remove();
    if (sorted) button.append(soundhive.icon(sourcesView.order === "asc" ? "up" : "down"));
  }
}

function setUpSourcesTable() {
  const form = document.getElementById("source-filters");
  let typing = null;
  const again = () => {
    sourcesView.offset = 0;
    refreshSources();
  };
  form.addEventListener("submit", (submit) => submit.preventDefault());
  form.elements.q.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(again, SEARCH_DELAY_MS);
  });
  form.elements.state.addEventListener("change", again);
  form.elements.ongoing.addEventListener("change", again);
  for (const th of document.querySelectorAll("#sources th[data-sort]")) {
    th.querySelector("button").addEventListener("click", () => {
      const same = sourcesView.sort === th.dataset.sort;
      sourcesView.order = same && sourcesView.order === "asc" ? "desc" : "asc";
      sourcesView.sort = th.dataset.sort;
      showSort();
      again();
    });
  }
  document.getElementById("page-prev").addEventListener("click", () => {
    sourcesView.offset = Math.max(0, sourcesView.offset - PAGE_SIZE);
    refreshSources();
  });
  document.getElementById("page-next").addEventListener("click", () => {
    sourcesView.offset += PAGE_SIZE;
    refreshSources();
  });
  document.querySelector("#sources tbody").addEventListener("click", (click) => {
    const row = click.target.closest("tr[data-source]");
    if (row) openDetail(row.dataset.source);
  });
  showSort();
}

// ---- a source's detail ----

const detail = { source: null, timer: null };

// Levels over the last minutes as a line, time left to right, LEVEL_FLOOR_DBFS..0 bottom to top.
function levelChart(levels) {
  if (levels.length < 2) return el("p", { className: "quiet" }, "No level history yet.");
  const width = 300;
  const height = 80;
  const first = levels[0].t;
  const span = Math.max(1, levels[levels.length - 1].t - first);
  const points = levels.map(({ t, dbfs }) => {
    const x = ((t - first) / span) * width;
    const y = (Math.max(LEVEL_FLOOR_DBFS, dbfs) / LEVEL_FLOOR_DBFS) * height;
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "level-chart");
  svg.setAttribute("role", "img");
  const last = levels[levels.length - 1].dbfs;
  svg.setAttribute("aria-label", `Level over the last ${soundhive.duration(span)}: `
    + `now ${last.toFixed(1)} dBFS`);
  const line = document.createElementNS(SVG_NS, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  return el("figure", { className: "chart" }, svg,
    el("figcaption", { className: "quiet" },
      `Level, last ${soundhive.duration(span)} (${LEVEL_FLOOR_DBFS} to 0 dBFS); now `
      + `${last.toFixed(1)} dBFS`));
}

function labelRows(labels) {
  if (!labels.length) return el("p", { className: "quiet" }, "No labels yet");
  return el("ol", { className: "labels", ariaLabel: "Top labels" }, ...labels.map((l) =>
    el("li", { className: "meter-row" },
      el("span", { className: "meter-name", title: l.label }, l.label),
      soundhive.scoreBar(l.label, l.score),
      el("span", { className: "meter-value" }, soundhive.score(l.score)))));
}

function detailBody(body) {
  const source = body.source;
  const seen = source.last_seen ? `seen ${soundhive.ago(source.last_seen)}` : "not seen yet";
  const events = body.events.length
    ? el("ol", { className: "feed detail-events" }, ...body.events.map(renderFeedItem))
    : el("p", { className: "quiet" }, "No events yet.");
  return [
    el("p", {}, stateBadge(source.silent ? "silent" : source.state), " ",
      el("span", { className: "quiet" }, `${seen} · ${source.chunks} chunks`)),
    source.detail ? el("p", { className: "detail" }, source.detail) : null,
    levelChart(body.levels),
    el("h3", {}, "Top labels"), labelRows(source.labels),
    el("h3", {}, "Recent events"), events,
  ].filter(Boolean);
}

async function refreshDetail() {
  const source = detail.source;
  if (source === null) return;
  const result = await soundhive.request(
    `/sources/${encodeURIComponent(source)}/detail`);
  if (source !== detail.source) return; // another source opened meanwhile
  const body = document.getElementById("detail-body");
  if (result.ok) body.replaceChildren(...detailBody(result.body));
  else body.replaceChildren(el("p", { className: "result error" },
    `Cannot load ${source}: ${soundhive.errorText(result)}`));
}

function openDetail(source) {
  const dialog = document.getElementById("source-detail");
  detail.source = source;
  document.getElementById("detail-title").textContent = source;
  document.getElementById("detail-body").replaceChildren(el("p", { className: "quiet" },
    "Loading…"));
  if (!dialog.open) dialog.showModal();
  clearInterval(detail.timer);
  detail.timer = setInterval(refreshDetail, DETAIL_POLL_MS);
  refreshDetail();
}

function setUpDetail() {
  const dialog = document.getElementById("source-detail");
  dialog.addEventListener("close", () => {
    detail.source = null;
    clearInterval(detail.timer);
  });
  document.getElementById("detail-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (click) => { // outside the box: on the backdrop
    if (click.target === dialog) dialog.close();
  });
}

// ---- live events ----

// The feed in time order (newest start first), whatever order events arrive in. Events come
// in through `pending` and reach the DOM at most once per frame, all together, so hundreds of
// sources starting and ending sounds cost one layout a frame; paused, they wait there (the
// newest FEED_MAX of them).
const feed = {
  events: new Map(), // event id -> its latest state, shown
  rows: new Map(), // event id -> its <li>
  pending: new Map(), // event id -> its latest state, not yet shown
  frame: null,
  paused: false,
};

const newestFirst = (a, b) => b.start_time - a.start_time || (a.id < b.id ? -1 : 1);

// One event's row in the feed. An event may carry `clip` (an audio URL) and `spectrogram` (an
// image URL): a play button, and a thumbnail.
function renderFeedItem(event) {
  const ongoing = event.end === null;
  const status = ongoing
    ? el("span", { className: "badge ongoing" }, soundhive.icon("dot"), " ongoing")
    : el("span", { className: "badge ended" }, soundhive.icon("square"),
      ` ended · ${soundhive.duration(event.end - event.start)}`);
  const row = el("li", { className: ongoing ? "ongoing" : "ended" },
    soundhive.timeElement(event.start_time),
    el("span", { className: "event-label" }, event.label),
    el("span", { className: "event-source" }, event.source),
    el("span", { className: "event-score", title: "peak score" }, soundhive.score(event.score)),
    status,
    event.clip || event.spectrogram ? eventMedia(event) : null);
  row.dataset.eventId = event.id;
  return row;
}

function eventMedia(event) {
  const media = el("span", { className: "event-media" });
  if (event.spectrogram) {
    media.append(el("img", { src: event.spectrogram, alt: `Spectrogram of ${event.label}`,
      loading: "lazy", className: "spectrogram" }));
  }
  if (event.clip) {
    const play = el("button", { type: "button", className: "icon-button",
      title: `Play the ${event.label} clip` }, soundhive.icon("play"));
    play.setAttribute("aria-label", `Play the ${event.label} clip`);
    play.addEventListener("click", () => {
      const audio = el("audio", { src: event.clip, controls: true, autoplay: true });
      play.replaceWith(audio);
    });
    media.append(play);
  }
  return media;
}

function receiveEvent(event) {
  feed.pending.set(event.id, event);
  if (feed.pending.size > FEED_MAX) { // paused or hidden for long: the oldest go
    const oldest = [...feed.pending.values()].sort(newestFirst).slice(FEED_MAX);
    for (const gone of oldest) feed.pending.delete(gone.id);
  }
  if (feed.paused) {
    showPauseButton();
    return;
  }
  if (feed.frame === null) feed.frame = requestAnimationFrame(showPending);
}

// Everything pending into the feed, in one DOM update.
function showPending() {
  feed.frame = null;
  for (const event of feed.pending.values()) {
    feed.events.set(event.id, event);
    const row = renderFeedItem(event);
    feed.rows.get(event.id)?.replaceWith(row); // an end replaces its start, in place
    feed.rows.set(event.id, row);
  }
  feed.pending.clear();
  const shown = [...feed.events.values()].sort(newestFirst);
  for (const gone of shown.splice(FEED_MAX)) {
    feed.events.delete(gone.id);
    feed.rows.get(gone.id).remove();
    feed.rows.delete(gone.id);
  }
  const list = document.getElementById("feed");
  list.replaceChildren(...shown.map((event) => feed.rows.get(event.id)));
  document.getElementById("feed-empty").hidden = shown.length > 0;
}

function showPauseButton() {
  const button = document.getElementById("feed-pause");
  const waiting = feed.pending.size;
  button.setAttribute("aria-pressed", String(feed.paused));
  button.replaceChildren(soundhive.icon(feed.paused ? "play" : "pause"),
    feed.paused ? ` Resume${waiting ? ` (${waiting} new)` : ""}` : " Pause");
}

function setUpFeed() {
  const button = document.getElementById("feed-pause");
  button.addEventListener("click", () => {
    feed.paused = !feed.paused;
    showPauseButton();
    if (!feed.paused) showPending();
  });
  showPauseButton();
}

const STREAM_ICONS = { live: "dot", connecting: "retry", lost: "cross" };

function setStreamState(state, text) {
  const node = document.getElementById("stream-state");
  node.dataset.state = state;
  node.replaceChildren(soundhive.icon(STREAM_ICONS[state]), ` ${text}`);
}

async function loadRecentEvents() {
  const result = await soundhive.request(`/events?limit=${FEED_MAX}`);
  if (result.ok) result.body.events.forEach(receiveEvent);
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
  const receive = (message) => receiveEvent(JSON.parse(message.data));
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

const RESULT_ICONS = { ok: "check", error: "cross", note: "info" };

// The form's one-line message; kind: ok, error or note.
function setResult(text, kind) {
  const node = document.getElementById("config-result");
  node.className = `result ${kind}`;
  node.replaceChildren(soundhive.icon(RESULT_ICONS[kind]), ` ${text}`);
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
  refreshSummary();
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
setUpCounts();
setUpSourcesTable();
setUpDetail();
setUpFeed();
poll(refreshSummary, SOURCES_POLL_MS);
poll(refreshSources, SOURCES_POLL_MS);
poll(refreshSinks, SINKS_POLL_MS);
loadRecentEvents().finally(followStream);
setUpConfigForm();
