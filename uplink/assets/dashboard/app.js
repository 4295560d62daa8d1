// The satcast dashboard: reads only. Polls the uplink's /dashboard/api every few seconds
// with the viewer key (from the address's #key=..., kept for the session) and redraws.
// The view lives in the fragment too (#key=K&broadcast=ID&area=41), so a projector's page
// can be bookmarked and reloads where it was.
"use strict";

const POLL_MS = 2000;
const STALE_MS = 10000;
const CLASS_COLOURS = { emergency: "#ef5350", high: "#f0b429", normal: "#5aa9ff", bulk: "#9b7cf0", control: "#8fa3b5" };

const view = { key: null, broadcast: null, area: null };
let lastOk = 0;
let timer = null;

function readHash() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const key = params.get("key");
  if (key) sessionStorage.setItem("satcast-viewer-key", key);
  view.key = key || sessionStorage.getItem("satcast-viewer-key");
  view.broadcast = params.get("broadcast");
  view.area = params.get("area");
}

function writeHash() {
  // The key stays out of the address once kept, so it does not end up on the projector.
  const params = new URLSearchParams();
  if (view.broadcast) params.set("broadcast", view.broadcast);
  if (view.area) params.set("area", view.area);
  history.replaceState(null, "", "#" + params.toString());
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  if (n < 1e3) return n + " B";
  if (n < 1e6) return (n / 1e3).toFixed(1) + " kB";
  if (n < 1e9) return (n / 1e6).toFixed(1) + " MB";
  return (n / 1e9).toFixed(1) + " GB";
}

function span(secs) {
  if (secs === null || secs === undefined) return "–";
  if (secs < 60) return secs + "s";
  if (secs < 3600) return Math.floor(secs / 60) + "m" + String(secs % 60).padStart(2, "0") + "s";
  if (secs < 172800) return Math.floor(secs / 3600) + "h" + String(Math.floor(secs / 60) % 60).padStart(2, "0") + "m";
  return Math.floor(secs / 86400) + "d";
}

function utc(secs) {
  if (!secs) return "–";
  return new Date(secs * 1000).toISOString().replace(".000Z", "Z").replace("T", " ");
}

function rate(bits) {
  if (bits >= 1e6) return (bits / 1e6).toFixed(1) + " Mbit/s";
  if (bits >= 1e3) return (bits / 1e3).toFixed(0) + " kbit/s";
  return bits + " bit/s";
}

async function get(path) {
  const response = await fetch(path, { headers: { Authorization: "Bearer " + view.key }, cache: "no-store" });
  if (response.status === 401) {
    sessionStorage.removeItem("satcast-viewer-key");
    view.key = null;
    showLogin();
    throw new Error("the viewer key was refused");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function scopeQuery() {
  return view.broadcast ? "?broadcast=" + encodeURIComponent(view.broadcast) : "";
}

function countCells(counts) {
  const cell = (cls, n) => el("td", { class: n === 0 ? cls + " zero" : cls }, n);
  const total = Math.max(counts.targeted, 1);
  const pct = (n) => (100 * n / total).toFixed(1) + "%";
  return [
    cell("targeted", counts.targeted),
    cell("delivered", counts.delivered),
    cell("lagging", counts.lagging),
    cell("refused", counts.refused),
    el("td", {}, el("div", { class: "bar" },
      el("span", { class: "d", style: "width:" + pct(counts.delivered) }),
      el("span", { class: "l", style: "width:" + pct(counts.lagging) }),
      el("span", { class: "r", style: "width:" + pct(counts.refused) }))),
  ];
}

function renderSummary(overview) {
  const r = overview.receivers;
  const airing = overview.broadcasts.filter((b) => b.state === "airing").length;
  document.getElementById("summary").replaceChildren(
    el("span", {}, "Counties heard ", el("b", {}, r.heard), " / ", r.enrolled),
    "  ",
    el("span", {}, " · silent ", el("b", { class: r.silent ? "lagging" : "" }, r.silent)),
    "  ",
    el("span", {}, " · airing ", el("b", {}, airing)),
    "  ",
    el("span", {}, " · alarms ", el("b", {}, overview.alarms.length)));
}

function renderAlarms(alarms) {
  const list = document.getElementById("alarms");
  document.getElementById("alarm-count").textContent = alarms.length ? "(" + alarms.length + ")" : "";
  if (!alarms.length) {
    list.replaceChildren(el("li", { class: "none" }, "No alarms."));
    return;
  }
  list.replaceChildren(...alarms.map((a) =>
    el("li", { "data-kind": a.kind, "data-subject": a.subject },
      el("span", { class: "kind" }, utc(a.raised_unix_secs), " ", a.kind.replace(/_/g, " ")), a.text)));
}

function renderScope(overview) {
  const scope = document.getElementById("scope");
  if (view.broadcast) {
    const b = overview.broadcasts.find((x) => x.id === view.broadcast);
    scope.replaceChildren("Counts for broadcast ", el("b", {}, view.broadcast), b ? " (" + b.kind + "/" + b.name + ", " + b.state + ") " : " ",
      el("a", { onclick: () => { view.broadcast = null; closeDetail(); refresh(); } }, "show all current broadcasts"));
  } else {
    scope.replaceChildren(overview.counted.length
      ? "Counts over the " + overview.counted.length + " broadcast(s) not ended yet; pick one below for its own."
      : "No broadcast is under way; pick one below for its counts.");
  }
}

function renderProvinces(overview) {
  document.getElementById("area-title").textContent = "Provinces";
  document.getElementById("crumbs").replaceChildren();
  document.getElementById("counties").hidden = true;
  const table = document.getElementById("provinces");
  table.hidden = false;
  table.querySelector("tbody").replaceChildren(...overview.provinces.map((p) =>
    el("tr", { "data-code": p.code, onclick: () => { view.area = p.code; refresh(); } },
      el("td", { class: "name" }, p.name || p.code), ...countCells(p))));
}

function crumbs(area) {
  const nav = document.getElementById("crumbs");
  const parts = [el("a", { onclick: () => { view.area = null; refresh(); } }, "全国 Nation")];
  if (area.parent) parts.push("›", el("a", { onclick: () => { view.area = area.parent.code; refresh(); } }, area.parent.name));
  parts.push("›", el("b", {}, area.name));
  nav.replaceChildren(...parts);
}

function renderArea(area) {
  document.getElementById("area-title").textContent = area.name + (area.counties.length ? " — counties" : " — prefectures");
  crumbs(area);
  const provinces = document.getElementById("provinces");
  const counties = document.getElementById("counties");
  if (area.prefectures.length || !area.counties.length) {
    counties.hidden = true;
    provinces.hidden = false;
    provinces.querySelector("tbody").replaceChildren(...area.prefectures.map((p) =>
      el("tr", { "data-code": p.code, onclick: () => { view.area = p.code; refresh(); } },
        el("td", { class: "name" }, p.name || p.code), ...countCells(p))));
    return;
  }
  provinces.hidden = true;
  counties.hidden = false;
  const now = Date.now() / 1000;
  counties.querySelector("tbody").replaceChildren(...area.counties.map((c) => {
    const state = c.state || (c.targeted ? (c.delivered === c.targeted ? "delivered" : c.refused ? "refused" : c.lagging ? "in_progress" : "waiting") : "–");
    return el("tr", { "data-county": c.code },
      el("td", { class: "name" }, c.code, " ", c.name),
      el("td", {}, el("span", { class: "state " + state }, state.replace("_", " "))),
      el("td", {}, c.last_seen_unix_secs ? span(Math.max(0, Math.round(now - c.last_seen_unix_secs))) + " ago" : "never"),
      el("td", {}, c.software_version || "–"),
      el("td", {}, bytes(c.free_disk_bytes)),
      el("td", {}, span(c.heartbeat_age_secs)),
      el("td", {}, c.loss_rate === null || c.loss_rate === undefined ? "–" : (100 * c.loss_rate).toFixed(1) + "%"));
  }));
}

function progress(b, now) {
  const parts = [];
  if (b.not_before_unix_secs) parts.push("not before " + utc(b.not_before_unix_secs) + (b.not_before_unix_secs > now ? " (in " + span(b.not_before_unix_secs - now) + ")" : ""));
  if (b.deadline_unix_secs) parts.push("deadline " + utc(b.deadline_unix_secs));
  if (b.bytes_aired) parts.push(bytes(b.bytes_aired) + " of " + bytes(b.size_bytes) + " aired" + (b.rate_bits_per_sec ? " at " + rate(b.rate_bits_per_sec) : ""));
  if (b.eta_secs) parts.push("ETA " + span(b.eta_secs));
  if (b.reason) parts.push(b.reason);
  if (b.started_unix_secs) parts.push("started " + utc(b.started_unix_secs));
  return parts.join("; ");
}

function renderBroadcasts(overview) {
  // Under way first, then the newest ended ones.
  const order = { airing: 0, preparing: 1, idle: 2, scheduled: 3, queued: 4 };
  const list = overview.broadcasts.slice().sort((a, b) =>
    (order[a.state] ?? 9) - (order[b.state] ?? 9) || b.started_unix_secs - a.started_unix_secs);
  document.querySelector("#broadcasts tbody").replaceChildren(...list.map((b) =>
    el("tr", { "data-id": b.id, class: b.id === view.broadcast ? "selected" : "", onclick: () => { view.broadcast = b.id; refresh(); } },
      el("td", {}, el("code", {}, b.id)),
      el("td", { class: "name" }, b.kind + "/" + b.name, el("span", { class: "count" }, " v" + b.version + " · " + bytes(b.size_bytes))),
      el("td", {}, b.priority),
      el("td", {}, el("span", { class: "state " + b.state }, b.state)),
      el("td", {}, b.delivered + " / " + b.targeted),
      el("td", { class: "progress" }, progress(b, overview.now_unix_secs)))));
}

function closeDetail() {
  document.getElementById("detail-panel").hidden = true;
}

async function renderDetail() {
  if (!view.broadcast) return closeDetail();
  const status = await get("/dashboard/api/broadcasts/" + encodeURIComponent(view.broadcast));
  const s = status.summary;
  document.getElementById("detail-panel").hidden = false;
  document.getElementById("detail-title").textContent = "Broadcast " + s.id + ": " + s.kind + "/" + s.name + " (" + s.state + ")";
  const provinceRows = status.provinces.map((p) =>
    el("tr", { "data-code": p.code },
      el("td", { class: "name" }, p.name || p.code),
      el("td", { class: "targeted" }, p.targeted), el("td", { class: "delivered" }, p.delivered),
      el("td", { class: "in_progress" }, p.in_progress), el("td", { class: "silent" }, p.silent), el("td", { class: "rejected" }, p.rejected)));
  const lagging = status.lagging.map((l) =>
    el("tr", {}, el("td", { class: "name" }, l.code + " " + l.name), el("td", {}, el("span", { class: "state " + l.state }, l.state)),
      el("td", { class: "name" }, l.detail), el("td", {}, l.last_seen_unix_secs ? utc(l.last_seen_unix_secs) : "never")));
  const hooks = status.hooks_failed.map(([county, detail]) => el("tr", {}, el("td", { class: "name" }, county), el("td", { class: "name" }, detail)));
  document.getElementById("detail").replaceChildren(...[
    el("table", { id: "detail-provinces", class: "counts" },
      el("thead", {}, el("tr", {}, el("th", { class: "name" }, "Province"), el("th", {}, "Targeted"), el("th", {}, "Delivered"),
        el("th", {}, "In progress"), el("th", {}, "Silent"), el("th", {}, "Refused"))),
      el("tbody", {}, provinceRows)),
    el("h3", {}, "Not delivered yet (" + (s.targeted - s.delivered) + ")"),
    lagging.length ? el("table", { id: "detail-lagging" }, el("tbody", {}, lagging)) : el("p", { class: "list" }, "Every targeted county has it."),
    hooks.length ? el("h3", {}, "Hook failures") : null,
    hooks.length ? el("table", { id: "detail-hooks" }, el("tbody", {}, hooks)) : null,
    el("h3", {}, "Delivered (" + status.delivered.length + ")"),
    el("p", { class: "list" }, status.delivered.join(" ")),
  ].filter((node) => node !== null));
}

function renderCarrier(overview) {
  const svg = document.getElementById("carrier");
  const ns = "http://www.w3.org/2000/svg";
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  // Drawn in the element's own pixels, so the labels are not stretched.
  const width = Math.max(svg.clientWidth, 300), height = Math.max(svg.clientHeight, 120), top = 10, bottom = height - 20;
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  const samples = overview.carrier;
  const now = overview.now_unix_secs * 1000;
  const start = now - 3600 * 1000;
  const max = Math.max(overview.link_rate_bits_per_sec, 1);
  const x = (t) => Math.max(0, (t - start) / (3600 * 1000) * width);
  const y = (v) => bottom - Math.min(v / max, 1) * (bottom - top);
  const children = [
    node("line", { x1: 0, x2: width, y1: y(max), y2: y(max), stroke: "#2c3a47", "stroke-dasharray": "6 6" }),
    node("text", { x: 6, y: y(max) + 16 }, "link " + rate(max)),
    node("text", { x: 6, y: height - 4 }, "−60 min"),
    node("text", { x: width - 40, y: height - 4 }, "now"),
  ];
  // Stacked areas, emergency at the bottom: their sum is the carrier in use.
  let below = samples.map(() => 0);
  overview.classes.forEach((cls, i) => {
    const above = samples.map((s, j) => below[j] + s.bits_per_sec[i]);
    if (samples.length > 1 && samples.some((s) => s.bits_per_sec[i] > 0)) {
      const upper = samples.map((s, j) => x(s.at_unix_ms).toFixed(1) + "," + y(above[j]).toFixed(1));
      const lower = samples.map((s, j) => x(s.at_unix_ms).toFixed(1) + "," + y(below[j]).toFixed(1)).reverse();
      children.push(node("polygon", { points: upper.concat(lower).join(" "), fill: CLASS_COLOURS[cls], "fill-opacity": 0.8, "data-class": cls }));
    }
    below = above;
  });
  svg.replaceChildren(...children);
  const last = samples.length ? samples[samples.length - 1].bits_per_sec : overview.classes.map(() => 0);
  document.getElementById("carrier-legend").replaceChildren(...overview.classes.map((cls, i) =>
    el("span", {}, el("i", { style: "background:" + CLASS_COLOURS[cls] }), cls + " " + rate(last[i]))));
}

function showLogin() {
  document.getElementById("main").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("updated").textContent = "viewer key needed";
}

async function refresh() {
  clearTimeout(timer);
  writeHash();
  try {
    if (!view.key) return showLogin();
    const overview = await get("/dashboard/api/overview" + scopeQuery());
    document.getElementById("login").hidden = true;
    document.getElementById("main").hidden = false;
    renderSummary(overview);
    renderAlarms(overview.alarms);
    renderScope(overview);
    if (view.area) renderArea(await get("/dashboard/api/areas/" + encodeURIComponent(view.area) + scopeQuery()));
    else renderProvinces(overview);
    renderBroadcasts(overview);
    renderCarrier(overview);
    await renderDetail();
    lastOk = Date.now();
    document.body.dataset.updated = String(overview.now_unix_secs);
    const updated = document.getElementById("updated");
    updated.className = "updated";
    updated.textContent = "updated " + utc(overview.now_unix_secs);
  } catch (error) {
    const updated = document.getElementById("updated");
    if (Date.now() - lastOk > STALE_MS) updated.className = "updated stale";
    updated.textContent = "not updated: " + error.message;
  } finally {
    timer = setTimeout(refresh, POLL_MS);
  }
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = document.getElementById("key").value.trim();
  if (key) {
    sessionStorage.setItem("satcast-viewer-key", key);
    view.key = key;
    refresh();
  }
});
window.addEventListener("hashchange", () => { readHash(); refresh(); });
readHash();
refresh();
