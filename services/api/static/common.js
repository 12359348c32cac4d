// Helpers shared by the dashboard (app.js) and the events page (events.js).
"use strict";

const API_TOKEN_KEY = "soundhive.apiToken";

const soundhive = {
  apiToken() {
    return sessionStorage.getItem(API_TOKEN_KEY) || "";
  },

  setApiToken(token) {
    if (token) sessionStorage.setItem(API_TOKEN_KEY, token);
    else sessionStorage.removeItem(API_TOKEN_KEY);
  },

  // fetch() against the API with JSON in and out; resolves to {ok, status, body}, with
  // status 0 when the server cannot be reached.
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
    if (body === null) {
      return { ok: false, status: response.status, body: { detail: "the answer is not JSON" } };
    }
    return { ok: response.ok, status: response.status, body };
  },

  // The one-line reason of a failed request, from FastAPI's {"detail": ...}.
  errorText(result) {
    const detail = result.body && result.body.detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => {
        const field = (d.loc || []).slice(1).join(".");
        return `${field}: ${String(d.msg).replace(/^Value error, /, "")}`;
      }).join("; ");
    }
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
