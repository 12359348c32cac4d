// The event history: GET /events filtered by the page's ?source=, ?label= (a part of a label or
// category, any case: the API's `text`), ?since= and ?until= (the date pickers' local times),
// ?min_score=, paged with `next` (?limit= sets the page size). Each event shows its clip (a
// player and the spectrogram) and review buttons; the same filters export as CSV.
"use strict";

const { el } = soundhive;

const PAGE_SIZE = 50;
const filters = new URLSearchParams(location.search);

// The API's filters from the page's: the label field searches, the pickers give unix seconds.
function apiFilters() {
  const query = new URLSearchParams();
  if (filters.get("source")) query.set("source", filters.get("source"));
  if (filters.get("label")) query.set("text", filters.get("label"));
  for (const name of ["since", "until"]) {
    const when = Date.parse(filters.get(name) || "");
    if (!Number.isNaN(when)) query.set(name, String(when / 1000));
  }
  if (filters.get("min_score")) query.set("min_score", filters.get("min_score"));
  return query;
}

// A clip's or spectrogram's URL for <audio>/<img>/<a>, which cannot send the token header.
function withToken(path, query = new URLSearchParams()) {
  const token = soundhive.apiToken();
  const all = new URLSearchParams(query);
  if (token) all.set("token", token);
  const text = all.toString();
  return text ? `${path}?${text}` : path;
}

function cell(heading, ...content) {
  const td = el("td", {}, ...content);
  td.dataset.heading = heading;
  return td;
}

function clipCell(event) {
  if (!event.clip) return cell("Clip", event.clip_status || "—");
  const image = el("img", {
    src: withToken(event.spectrogram), alt: `Spectrogram of the ${event.label} clip`,
    loading: "lazy",
  });
  return cell("Clip", el("span", { className: "clip" },
    el("audio", { controls: true, preload: "none", src: withToken(event.clip) }),
    el("a", { href: withToken(event.spectrogram), target: "_blank", rel: "noopener" }, image)));
}

function reviewCell(event) {
  const buttons = [["correct", "✓ correct"], ["wrong", "✗ wrong"]].map(([verdict, text]) => {
    const button = el("button", { type: "button", className: `review-${verdict}` }, text);
    button.setAttribute("aria-pressed", String(event.review === verdict));
    button.onclick = () => review(event, verdict, buttons);
    return button;
  });
  return cell("Review", el("span", { className: "review" }, ...buttons));
}

async function review(event, verdict, buttons) {
  const path = `/events/${encodeURIComponent(event.id)}/review`;
  const result = await soundhive.request(path, { method: "POST", json: { verdict } });
  if (!result.ok) {
    showMessage(`Cannot save the review: ${soundhive.errorText(result)}`);
    return;
  }
  event.review = verdict;
  for (const button of buttons) {
    button.setAttribute("aria-pressed", String(button.classList.contains(`review-${verdict}`)));
  }
  showWrongCounts();
}

function historyRow(event) {
  const ongoing = event.end === null;
  const ongoingBadge = () => el("span", { className: "badge ongoing" },
    soundhive.icon("dot"), " ongoing");
  const row = el("tr", { className: ongoing ? "ongoing" : "ended" },
    cell("Label", event.label),
    cell("Source", event.source),
    cell("Start", soundhive.timeElement(event.start_time)),
    cell("End", ongoing ? ongoingBadge() : soundhive.timeElement(event.end_time)),
    cell("Duration", ongoing ? "—" : soundhive.duration(event.end - event.start)),
    cell("Peak score", soundhive.scoreBar(event.label, event.score), soundhive.score(event.score)),
    clipCell(event),
    reviewCell(event));
  row.dataset.eventId = event.id;
  return row;
}

function showMessage(text) {
  const node = document.getElementById("history-message");
  node.textContent = text;
  node.hidden = !text;
}

async function loadPage(cursor) {
  const query = apiFilters();
  query.set("limit", filters.get("limit") || String(PAGE_SIZE));
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

// Per label, how many detections users marked wrong.
async function showWrongCounts() {
  const result = await soundhive.request("/reviews");
  const node = document.getElementById("wrong-counts");
  const wrong = result.ok ? Object.entries(result.body.wrong).sort((a, b) => b[1] - a[1]) : [];
  node.textContent = wrong.length
    ? `Marked wrong: ${wrong.map(([label, count]) => `${label} ${count}`).join(", ")}` : "";
  node.hidden = !wrong.length;
}

function fillFilterFields() {
  for (const [id, name] of [["filter-label", "label"], ["filter-since", "since"],
    ["filter-until", "until"], ["filter-min-score", "min_score"]]) {
    document.getElementById(id).value = filters.get(name) || "";
  }
  document.getElementById("csv").href = withToken("/events.csv", apiFilters());
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
  const result = await soundhive.request("/labels");
  if (!result.ok) return;
  document.getElementById("label-names")
    .append(...result.body.labels.map((label) => el("option", { value: label })));
}

// Empty fields stay out of the page's URL.
document.getElementById("filters").addEventListener("formdata", (submit) => {
  for (const [name, value] of [...submit.formData.entries()]) {
    if (value === "") submit.formData.delete(name);
  }
});

soundhive.onApiToken(() => location.reload()); // a token entered in the prompt: load again
fillFilterFields();
fillSourceChoices();
fillLabelChoices();
showWrongCounts();
loadPage(null);
