// The model's state from /health: a live status pill, and each load phase as a bar on a
// timeline from the spawn, growing while it runs.

import { FETCH_TIMEOUT_MS, request } from "./api.js";
import { element, niceCeil, seconds, ui } from "./dom.js";

const POLL_LOADING_MS = 1000; // while the model is not ready
const POLL_READY_MS = 5000; // once it is (to notice a drain or a lost model)
const POLL_HIDDEN_MS = 15000; // while the tab is hidden
const TICK_MS = 200; // a running phase's bar and the clock move between polls

const STATE_TEXT = {
  cold: "Cold: the model loads on the first request",
  warming_up: "Warming up",
  ready: "Ready",
  failed: "Failed to load",
  releasing: "Releasing the previous model",
  draining: "Draining: finishing accepted work, taking nothing new",
  stopped: "Stopped",
  unreachable: "Server unreachable, still trying",
};

const state = {
  health: null, // the last /health report
  healthAt: 0, // performance.now() when it came
  pollTimer: 0,
  status: null, // the last status seen (null before the first answer)
  listeners: [],
};

/** Call `listener(status, previous)` on every change of status (previous: null the first time). */
export function onStatusChange(listener) {
  state.listeners.push(listener);
}

function uptimeNow() {
  if (!state.health) return 0;
  return state.health.uptime_s + (performance.now() - state.healthAt) / 1000;
}

// The timeline's zero, on /health's uptime axis: the service's start, or the model worker's
// spawn when that came first (the worker process starts before the app is built).
function spawnAt(health) {
  const origin = health.load_started_s ?? 0;
  return Math.min(0, ...(health.phases || []).map((phase) => origin + phase.start_s));
}

function render() {
  const health = state.health;
  const status = health ? health.status : "unreachable";
  // The pill is a live region: change its words only when the state changes.
  if (ui.state.dataset.state !== status) {
    ui.state.dataset.state = status;
    ui.state.textContent = STATE_TEXT[status] || status;
  }
  if (!health) return;

  const zero = spawnAt(health);
  const readyAt = health.cold_start && health.cold_start.ready_after_s;
  const readyAfter = readyAt === null || readyAt === undefined ? null : readyAt - zero;
  const bits = [];
  if (health.model) bits.push(health.model);
  if (health.device) bits.push([health.device, health.dtype].filter(Boolean).join(" · "));
  if (readyAfter !== null) bits.push(`ready ${seconds(readyAfter)} after spawn`);
  if (health.load_attempts > 1) bits.push(`${health.load_attempts} load attempts`);
  bits.push(`${health.inflight || 0} running, ${health.queued || 0} queued, ${health.served || 0} served`);
  ui.detail.textContent = bits.join(" — ");
  ui.clock.textContent = `up ${seconds(uptimeNow() - zero)}`;

  let reason = "";
  if (status === "failed") {
    if (health.last_error) reason = health.last_error;
    else if (!("last_error" in health)) reason = "The reason is shown with the API key.";
    if (health.retry_in_s !== null && health.retry_in_s !== undefined) {
      // The error is one sentence, often without its full stop; the next attempt another.
      if (reason && !/[.!?]$/.test(reason.trim())) reason = `${reason.trim()}.`;
      reason += ` A new load starts in about ${seconds(health.retry_in_s)}.`;
    }
  } else if (status === "warming_up" && health.last_error) {
    reason = `The last attempt failed: ${health.last_error}`;
  }
  ui.reason.hidden = !reason;
  ui.reason.textContent = reason.trim();
  renderPhases(health, zero, readyAfter);
}

// Every time here is in seconds since `zero` (the spawn).
function renderPhases(health, zero, readyAfter) {
  const phases = health.phases || [];
  ui.axis.hidden = phases.length === 0;
  const origin = (health.load_started_s ?? 0) - zero;
  const now = uptimeNow() - zero;
  const spans = phases.map((phase) => {
    const start = origin + phase.start_s;
    const end = phase.seconds === null ? Math.max(start, now) : start + phase.seconds;
    return { phase, start, end };
  });
  let last = Math.max(0.1, ...spans.map((span) => span.end));
  if (readyAfter) last = Math.max(last, readyAfter);
  const axisEnd = niceCeil(last);
  ui.axisMid.textContent = seconds(axisEnd / 2);
  ui.axisEnd.textContent = seconds(axisEnd);

  // Reuse rows by position, so a running bar grows in place rather than being rebuilt.
  while (ui.phases.children.length > spans.length) ui.phases.lastElementChild.remove();
  spans.forEach(({ phase, start, end }, index) => {
    let row = ui.phases.children[index];
    if (!row) {
      row = element("li", { class: "phase" });
      row.append(
        element("span", { class: "phase-name" }),
        element("span", { class: "track", "aria-hidden": "true" }),
        element("span", { class: "phase-time" }),
      );
      row.children[1].append(element("span", { class: "bar" }));
      ui.phases.append(row);
    }
    row.dataset.state = phase.state;
    const [name, track, time] = row.children;
    name.textContent = phase.name;
    const bar = track.firstElementChild;
    bar.style.left = `${(100 * start) / axisEnd}%`;
    bar.style.width = `${(100 * (end - start)) / axisEnd}%`;
    const took = seconds(end - start);
    time.textContent = phase.state === "running" ? `${took}…` : took;
    const where = `from ${seconds(start)} to ${seconds(end)} after spawn`;
    const status = phase.state === "done" ? "" : `, ${phase.state}`;
    row.setAttribute("aria-label", `${phase.name}: ${took}${status}, ${where}`);
    let mark = track.querySelector(".ready-mark");
    if (readyAfter !== null) {
      if (!mark) track.append((mark = element("span", { class: "ready-mark", title: "ready" })));
      mark.style.left = `${Math.min(100, (100 * readyAfter) / axisEnd)}%`;
    } else if (mark) {
      mark.remove();
    }
  });
}

/** Read /health now, show it, and schedule the next read. */
export async function pollHealth() {
  let delay = POLL_LOADING_MS;
  try {
    const response = await request("/health", { timeoutMs: FETCH_TIMEOUT_MS });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.health = await response.json();
    state.healthAt = performance.now();
    if (state.health.status === "ready") delay = POLL_READY_MS;
  } catch {
    state.health = null;
  }
  render();
  const status = state.health ? state.health.status : "unreachable";
  if (status !== state.status) {
    const previous = state.status;
    state.status = status;
    for (const listener of state.listeners) listener(status, previous);
  }
  if (document.hidden) delay = POLL_HIDDEN_MS;
  window.clearTimeout(state.pollTimer); // one chain of polls, however this call came
  state.pollTimer = window.setTimeout(pollHealth, delay);
}

function tick() {
  const health = state.health;
  if (health && (health.phases || []).some((phase) => phase.state === "running")) render();
  else if (health) ui.clock.textContent = `up ${seconds(uptimeNow() - spawnAt(health))}`;
}

export function startHealth() {
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) pollHealth();
  });
  window.setInterval(tick, TICK_MS);
  pollHealth();
}
