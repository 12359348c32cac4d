// The event history: GET /events filtered by the page's ?source= and ?label=, paged with `next`
// (?limit= sets the page size).
"use strict";

const { el } = soundhive;

const PAGE_SIZE = 50;
const filters = new URLSearchParams(location.search);

function cell(heading, ...content) {
  const td = el("td", {}, ...content);
  td.dataset.heading = heading;
  return td;
}

function historyRow(event) {
  const ongoing = event.end === null;
  const ongoingBadge = () => el("span", { className: "badge ongoing" },
    el("span", { className: "icon", ariaHidden: "true" }, "●"), " ongoing");
  const row = el("tr", { className: ongoing ? "ongoing" : "ended" },
    cell("Label", event.label),
    cell("Source", event.source),
    cell("Start", soundhive.timeElement(event.start_time)),
    cell("End", ongoing ? ongoingBadge() : soundhive.timeElement(event.end_time)),
    cell("Duration", ongoing ? "—" : soundhive.duration(event.end - event.start)),
    cell("Peak score", soundhive.scoreBar(event.label, event.score), soundhive.score(event.score)));
  row.dataset.eventId = event.id;
  return row;
}

function showMessage(text) {
  const node = document.getElementById("history-message");
  node.textContent = text;
  node.hidden = !text;
}

async function loadPage(cursor) {
  const query = new URLSearchParams({ limit: filters.get("limit") || String(PAGE_SIZE) });
  for (const name of ["source", "label"]) {
    if (filters.get(name)) query.set(name, filters.get(name));
  }
  if (cursor) query.set("cursor", cursor);
  const result = await soundhive.request(`/events?${query}`);
  const more = document.getElementById("more");
  if (!result.ok) {
    showMessage(`Cannot load events: ${soundhive.errorText(result)}`);
    more.hidden = true;
    return;
  }
  const rows = document.querySelector("#history tbody");
  rows.append(...result.body.events.map(historyRow));
  showMessage(rows.children.length ? "" : "No events match.");
  more.hidden = !result.body.next;
  more.onclick = () => loadPage(result.body.next);
}

async function fillSourceChoices() {
  const select = document.getElementById("filter-source");
  const result = await soundhive.request("/sources");
  const names = new Set(result.ok ? result.body.sources.map((s) => s.source) : []);
  if (filters.get("source")) names.add(filters.get("source"));
  select.append(...[...names].sort().map((name) => el("option", { value: name }, name)));
  select.value = filters.get("source") || "";
}

async function fillLabelChoices() {
  document.getElementById("filter-label").value = filters.get("label") || "";
  const result = await soundhive.request("/labels");
  if (!result.ok) return;
  document.getElementById("label-names")
    .append(...result.body.labels.map((label) => el("option", { value: label })));
}

soundhive.onApiToken(() => location.reload()); // a token entered in the prompt: load again
fillSourceChoices();
fillLabelChoices();
loadPage(null);
