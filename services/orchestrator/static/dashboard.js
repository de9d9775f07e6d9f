// The Ringmaster dashboard: one EventSource on /events, no library, no build step.
// Every array it keeps is capped, so a page left open for hours stays the same size.
"use strict";

const MAX_EVENTS = 200;   // rows in the event tail
const MAX_ROWS = 200;     // rows of any other table
const MAX_POINTS = 200;   // points of one Elo curve
const NS = "http://www.w3.org/2000/svg";

const tail = [];          // newest first, at most MAX_EVENTS
const curves = new Map(); // game -> signature of the curve drawn, so unchanged SVGs stay
let lastSeq = 0;

const $ = (id) => document.getElementById(id);

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function badge(text, kind) {
  return `<span class="badge ${esc(kind)}">${esc(text)}</span>`;
}

function ago(seconds) {
  if (seconds == null) return "";
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor(seconds / 60) % 60).padStart(2, "0")}`;
}

function clock(iso) {
  const d = new Date(iso);
  return isNaN(d) ? esc(iso) : d.toLocaleTimeString([], { hour12: false });
}

function bar(fraction, label) {
  const pct = Math.max(0, Math.min(100, Math.round((fraction || 0) * 100)));
  return `<div class="bar" title="${pct}%"><div style="width:${pct}%"></div>` +
    `<span>${esc(label ?? pct + "%")}</span></div>`;
}

function fill(id, rows) {
  $(id).innerHTML = rows.slice(0, MAX_ROWS).join("");
}

function renderServices(services) {
  fill("services", services.map((s) => {
    const live = s.liveness;
    return `<tr data-service="${esc(s.service)}" data-instance="${esc(s.instance)}" ` +
      `data-liveness="${esc(live)}" data-status="${esc(s.status)}">` +
      `<td>${esc(s.service)}</td><td>${esc(s.instance)}</td>` +
      `<td>${badge(s.status, s.status.toLowerCase())}</td>` +
      `<td>${badge(live, live.toLowerCase())}</td>` +
      `<td>${esc(s.pid)}</td><td>${ago(s.seen_s)}</td><td>${ago(s.uptime_s)}</td>` +
      `<td>${s.restarts ?? ""}</td><td class="msg" title="${esc(s.message)}">${esc(s.message)}</td></tr>`;
  }));
  const lost = services.filter((s) => s.liveness !== "ALIVE").length;
  $("services-count").textContent = `${services.length} instances` + (lost ? `, ${lost} not alive` : "");
}

function renderNodes(nodes) {
  fill("nodes", nodes.map((n) => {
    const [free, total] = String(n.slots).split("/").map(Number);
    const used = total ? (total - free) / total : 0;
    return `<tr data-node="${esc(n.node)}" class="${n.alive ? "" : "dead"}">` +
      `<td>${esc(n.node)}${n.alive ? "" : " " + badge("SILENT", "lost")}</td>` +
      `<td>${bar(used, `${total - free}/${total}`)}</td><td>${esc(n.gpus)}</td><td>${esc(n.load)}</td>` +
      `<td>${bar(n.busy ?? 0)}</td>` +
      `<td>${esc(n.jobs)}</td><td>${esc(n.accepting)}</td></tr>`;
  }));
  $("nodes-count").textContent = `${nodes.length}`;
}

function renderJobs(jobs) {
  const active = (jobs && jobs.active) || [];
  fill("jobs", active.map((j) => (
    `<tr data-job="${esc(j.job_id)}"><td title="${esc(j.job_id)}">${esc(String(j.job_id).slice(0, 12))}</td>` +
    `<td>${esc(j.type)}</td><td>${badge(j.state, j.state.toLowerCase())}</td>` +
    `<td>${esc(j.node_id)}</td><td>${esc(j.attempt)}</td>` +
    `<td class="progress-col">${bar(j.progress)}</td></tr>`)));
  const counts = (jobs && jobs.counts) || {};
  $("jobs-count").textContent = Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ");
}

function renderFailures(failures) {
  fill("failures", failures.slice().reverse().map(eventRow));
  $("failures-count").textContent = failures.length ? `${failures.length}` : "none";
}

function eventRow(e) {
  const kind = /FAILED|LOST|GAVE_UP|UNHEALTHY/.test(e.type) ? "bad" :
    /DEGRADED|SUSPECT|RETRIED/.test(e.type) ? "warn" : "";
  return `<tr class="${kind}"><td>${clock(e.time)}</td><td>${esc(e.type)}</td>` +
    `<td title="${esc(e.source)}">${esc(String(e.source).split("/").pop())}</td>` +
    `<td class="msg" title="${esc(e.text)}">${esc(e.text)}</td></tr>`;
}

function curveSvg(points, fromStart) {
  const w = 320, h = 130, left = 44, right = 10, top = 10, bottom = 22;
  const pts = points.slice(-MAX_POINTS);
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("class", "curve");
  if (!pts.length) {
    svg.innerHTML = `<text x="${w / 2}" y="${h / 2}" class="axis" text-anchor="middle">no champion yet</text>`;
    return svg;
  }
  // Generation 0 is the random player, Elo 0 by definition: the curve starts there.
  if (fromStart && pts[0][0] > 0) pts.unshift([0, 0]);
  const gens = pts.map((p) => p[0]), elos = pts.map((p) => p[1]);
  const g0 = Math.min(...gens), g1 = Math.max(...gens);
  const e0 = Math.min(0, ...elos), e1 = Math.max(...elos, e0 + 1);
  const x = (g) => left + (g1 === g0 ? (w - left - right) / 2 : (g - g0) / (g1 - g0) * (w - left - right));
  const y = (e) => top + (1 - (e - e0) / (e1 - e0)) * (h - top - bottom);
  const line = pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
  const dots = pts.map((p) => `<circle cx="${x(p[0]).toFixed(1)}" cy="${y(p[1]).toFixed(1)}" r="2.5">` +
    `<title>generation ${p[0]}: Elo ${p[1]}</title></circle>`).join("");
  svg.innerHTML =
    `<line x1="${left}" y1="${h - bottom}" x2="${w - right}" y2="${h - bottom}" class="grid"/>` +
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${h - bottom}" class="grid"/>` +
    `<text x="${left - 4}" y="${top + 4}" class="axis" text-anchor="end">${Math.round(e1)}</text>` +
    `<text x="${left - 4}" y="${h - bottom}" class="axis" text-anchor="end">${Math.round(e0)}</text>` +
    `<text x="${left}" y="${h - 6}" class="axis">gen ${g0}</text>` +
    `<text x="${w - right}" y="${h - 6}" class="axis" text-anchor="end">gen ${g1}</text>` +
    `<polyline points="${line}" class="line"/>${dots}`;
  return svg;
}

function renderModels(models) {
  const box = $("models");
  const seen = new Set();
  for (const m of models.slice(0, MAX_ROWS)) {
    seen.add(m.game);
    let card = box.querySelector(`[data-game="${CSS.escape(m.game)}"]`);
    if (!card) {
      card = document.createElement("div");
      card.className = "card";
      card.dataset.game = m.game;
      card.innerHTML = `<div class="head"></div><div class="plot"></div>`;
      box.appendChild(card);
    }
    card.querySelector(".head").innerHTML =
      `<strong>${esc(m.game)}</strong> champion <code>${esc(m.champion)}</code> ` +
      `gen ${esc(m.generation)} · Elo ${esc(m.elo)} · ${esc(m.games)} games`;
    const points = (m.curve || []).slice(-MAX_POINTS);
    const fromStart = !m.trimmed && points.length === (m.curve || []).length;
    const signature = JSON.stringify([fromStart, points]);
    if (curves.get(m.game) !== signature) {
      curves.set(m.game, signature);
      card.querySelector(".plot").replaceChildren(curveSvg(points, fromStart));
    }
  }
  for (const card of [...box.children]) {
    if (!seen.has(card.dataset.game)) {
      curves.delete(card.dataset.game);
      card.remove();
    }
  }
  if (!models.length) box.innerHTML = `<p class="muted">no game has data yet</p>`;
  else box.querySelector("p.muted")?.remove();
}

function onSnapshot(s) {
  $("cluster").textContent = `prefix ${s.prefix} · ${s.orchestrator} · ` +
    `updated ${new Date(s.generated_at * 1000).toLocaleTimeString([], { hour12: false })} · ` +
    `${s.clients} page${s.clients === 1 ? "" : "s"} open`;
  renderServices(s.services || []);
  renderNodes(s.nodes || []);
  renderJobs(s.jobs || {});
  $("backlog").textContent = s.backlog ? `selfplay ${s.backlog}` : "";
  renderModels(s.models || []);
  renderFailures(s.failures || []);
}

function onEvents(batch) {
  const body = $("events");
  if (batch.reset) {
    tail.length = 0;
    lastSeq = 0;
    body.innerHTML = "";
  }
  const fresh = batch.events.filter((e) => e.seq > lastSeq || batch.reset);
  if (!fresh.length) return;
  lastSeq = Math.max(lastSeq, ...fresh.map((e) => e.seq));
  for (const e of fresh) tail.unshift(e);
  tail.length = Math.min(tail.length, MAX_EVENTS);
  body.insertAdjacentHTML("afterbegin", fresh.slice().reverse().slice(0, MAX_EVENTS).map(eventRow).join(""));
  while (body.rows.length > MAX_EVENTS) body.deleteRow(-1);
  $("events-count").textContent = `last ${tail.length}`;
}

function connect() {
  // Bound beyond loopback the stream needs the token the page was opened with.
  const token = new URLSearchParams(location.search).get("access_token");
  const source = token
    ? new EventSource("/events?access_token=" + encodeURIComponent(token))
    : new EventSource("/events");
  const link = $("link");
  source.onopen = () => { link.textContent = "live"; link.className = "link up"; };
  source.onerror = () => { link.textContent = "reconnecting"; link.className = "link down"; };
  source.addEventListener("snapshot", (m) => onSnapshot(JSON.parse(m.data)));
  source.addEventListener("events", (m) => onEvents(JSON.parse(m.data)));
}

connect();
