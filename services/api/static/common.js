// Helpers shared by the dashboard (app.js) and the events page (events.js): requests with the
// tab's API token, the prompt that asks for it, formatting.
"use strict";

const API_TOKEN_KEY = "soundhive.apiToken";
const TOKEN_EVENT = "soundhive:token"; // dispatched on window when the tab's token changes

const SVG_NS = "http://www.w3.org/2000/svg";

// The dashboard's icons: 16x16 paths, filled or stroked with the text's colour.
const ICONS = {
  play: { fill: "M4.5 2.5v11l9-5.5z" },
  retry: { stroke: "M13.2 8A5.2 5.2 0 1 1 11.7 4.3M13.5 1.8v3.4h-3.4" },
  check: { stroke: "M2.8 8.6l3.4 3.4 7-7.4" },
  cross: { stroke: "M4 4l8 8M12 4l-8 8" },
  mute: { fill: "M1.5 5.5h3l4-3.2v11.4l-4-3.2h-3z", stroke: "M10.8 6l4 4M14.8 6l-4 4" },
  dash: { stroke: "M3.5 8h9" },
  dot: { fill: "M8 3.5a4.5 4.5 0 1 1 0 9a4.5 4.5 0 1 1 0-9z" },
  square: { fill: "M3.5 3.5h9v9h-9z" },
  info: { stroke: "M8 1.5a6.5 6.5 0 1 1 0 13a6.5 6.5 0 1 1 0-13zM8 7v4.5M8 4.3v.4" },
  pause: { fill: "M3.5 2.5h3v11h-3zM9.5 2.5h3v11h-3z" },
  up: { stroke: "M8 13.5v-11M3.5 7L8 2.5 12.5 7" },
  down: { stroke: "M8 2.5v11M3.5 9L8 13.5 12.5 9" },
};

const soundhive = {
  apiToken() {
    return sessionStorage.getItem(API_TOKEN_KEY) || "";
  },

  setApiToken(token) {
    if (token) sessionStorage.setItem(API_TOKEN_KEY, token);
    else sessionStorage.removeItem(API_TOKEN_KEY);
    window.dispatchEvent(new Event(TOKEN_EVENT));
  },

  // Run `handler` each time the tab's API token changes (the prompt, the dashboard's field).
  onApiToken(handler) {
    window.addEventListener(TOKEN_EVENT, handler);
  },

  // fetch() against the API with JSON in and out; resolves to {ok, status, body}, with
  // status 0 when the server cannot be reached. A 401 asks for the token (tokenPrompt).
  async request(path, options = {}) {
    const headers = { Accept: "application/json" };
    const token = soundhive.apiToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (options.json !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method: options.method || "GET",
        headers,
        cache: "no-store", // live data; and /events is also the HTML page's URL
        body: options.json === undefined ? undefined : JSON.stringify(options.json),
      });
    } catch {
      return { ok: false, status: 0, body: { detail: "cannot reach the server" } };
    }
    const body = await response.json().catch(() => null);
    if (response.status === 401 || response.status === 429) {
      tokenPrompt.refused(token, response.status, body && body.detail);
    }
    if (body === null) {
      return { ok: false, status: response.status, body: { detail: "the answer is not JSON" } };
    }
    return { ok: response.ok, status: response.status, body };
  },

  // The one-line reason of a failed request: the api's {"detail": "..."}.
  errorText(result) {
    const detail = result.body && result.body.detail;
    return detail ? String(detail) : `HTTP ${result.status}`;
  },

  // Create an element: el("li", {className: "x", title: "y"}, child, "text", ...).
  el(tag, props = {}, ...children) {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  },

  clockTime(unixSeconds) {
    const date = new Date(unixSeconds * 1000);
    const sameDay = date.toDateString() === new Date().toDateString();
    const time = date.toLocaleTimeString([], { hour12: false });
    return sameDay ? time : `${date.toLocaleDateString()} ${time}`;
  },

  isoTime(unixSeconds) {
    return new Date(unixSeconds * 1000).toISOString();
  },

  duration(seconds) {
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const minutes = Math.floor(seconds / 60);
    return `${minutes} min ${Math.round(seconds % 60)} s`;
  },

  ago(unixSeconds) {
    const seconds = Math.max(0, Date.now() / 1000 - unixSeconds);
    if (seconds < 60) return `${Math.round(seconds)} s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    return soundhive.clockTime(unixSeconds);
  },

  score(value) {
    return value.toFixed(2);
  },

  // A <time> element showing the clock time, with the full date in its datetime and tooltip.
  timeElement(unixSeconds) {
    const iso = soundhive.isoTime(unixSeconds);
    return soundhive.el("time", { dateTime: iso, title: iso }, soundhive.clockTime(unixSeconds));
  },

  // An icon of the dashboard's own set (ICONS), drawn inline: no font needs to have it.
  icon(name) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 16 16");
    svg.setAttribute("class", `icon icon-${name}`);
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const shape = ICONS[name];
    for (const [kind, d] of Object.entries(shape)) {
      const path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", d);
      path.setAttribute("class", kind); // fill | stroke: style.css draws each with currentColor
      svg.append(path);
    }
    return svg;
  },

  // A horizontal bar for a 0..1 score, with the number beside it.
  scoreBar(label, value) {
    const bar = soundhive.el("span", { className: "bar" });
    bar.style.setProperty("--fill", `${Math.round(value * 100)}%`);
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-label", `${label} score`);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "1");
    bar.setAttribute("aria-valuenow", value.toFixed(2));
    return bar;
  },
};

// The API token prompt, above the page: shown when a request answers 401 (or 429: too many
// wrong tokens) and left there, not asked again, until a token is entered. A refused token is
// forgotten at once: each request sent with it would count against this address.
const tokenPrompt = {
  form: null,

  // A request sent with the token `sent` ("" for none) was answered `status`, `detail` why.
  refused(sent, status, detail) {
    if (sent !== soundhive.apiToken()) return; // sent before the token changed
    if (sent) soundhive.setApiToken("");
    const form = tokenPrompt.form || tokenPrompt.create();
    if (status === 429 || sent) { // kept while the requests that follow, tokenless, are refused
      form.querySelector(".result").textContent =
        status === 429 ? `${detail}.` : "The server refused that token.";
    }
    form.hidden = false;
  },

  create() {
    const { el } = soundhive;
    const input = el("input", {
      id: "token-prompt-input", name: "token", type: "password", autocomplete: "off",
      required: true,
    });
    const form = el("form", { id: "token-prompt", className: "panel token-prompt", hidden: true },
      el("label", { htmlFor: input.id }, "This server needs its API token ",
        el("small", {}, "(kept in this browser tab only)")),
      el("div", { className: "form-actions" }, input,
        el("button", { type: "submit" }, "Use token"),
        el("p", { className: "result error", role: "status" })));
    form.setAttribute("aria-label", "API token");
    form.addEventListener("submit", (submit) => {
      submit.preventDefault();
      const token = input.value.trim();
      input.value = "";
      if (token) soundhive.setApiToken(token);
    });
    document.querySelector("header").after(form);
    tokenPrompt.form = form;
    return form;
  },
};

soundhive.onApiToken(() => {
  if (tokenPrompt.form && soundhive.apiToken()) tokenPrompt.form.hidden = true;
});

// `soundhive up` prints the dashboard's URL with ?token=: the tab keeps the token, and the
// address bar (so history and bookmarks) loses it.
(function takeTokenFromUrl() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token === null) return;
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url);
  soundhive.setApiToken(token.trim());
})();
