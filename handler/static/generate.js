// Generating: through the jobs API (POST /jobs, per-step progress from its event stream, the PNG
// from /jobs/{id}/image), or POST /generate where jobs answer 501 (Lambda). Errors show as thaw's
// error shape says: 422 beside the fields, 401 at the key, a countdown from Retry-After.

import { FETCH_TIMEOUT_MS, parseServerTiming, readError, request, serverSentEvents } from "./api.js";
import { announce, element, number, seconds, ui } from "./dom.js";
import { clearFieldErrors, fieldNamed, formBody, formReady, showFieldErrors } from "./form.js";
import { pollHealth } from "./health.js";

const STREAM_IDLE_MS = 30000; // no byte on the event stream for this long: poll the job instead
const JOB_POLL_MS = 500;
const FINAL = ["succeeded", "failed", "canceled"];

const state = {
  jobsUnavailable: false, // POST /jobs answered 501: use POST /generate from now on
  running: null, // {abort: AbortController, jobId}
  retryUntil: 0, // Date.now() until which a Retry-After holds the form
  retryTimer: 0,
  imageUrl: null,
  lastSeed: null,
};

// ---- problems and the countdown -----------------------------------------------------------

function clearProblems() {
  clearFieldErrors();
  ui.key.removeAttribute("aria-invalid");
  ui.keyError.textContent = "";
  ui.problem.hidden = true;
  ui.problemText.textContent = "";
  stopCountdown();
}

function showProblem(title, message) {
  ui.problem.hidden = false;
  const strong = element("strong", {}, title);
  ui.problemText.replaceChildren(strong, document.createTextNode(message ? ` ${message}` : ""));
}

const TITLES = {
  413: "Too large.",
  422: "Invalid request.",
  429: "Busy.",
  503: "Unavailable.",
  504: "Took too long.",
};

function showError(error) {
  if (error.status === 401) {
    ui.keyBox.open = true;
    ui.key.setAttribute("aria-invalid", "true");
    ui.keyError.textContent = ui.key.value ? "This key was refused." : "This server needs an API key.";
    showProblem("Unauthorized.", error.message);
    ui.key.focus();
    return;
  }
  if (error.status === 422 && Array.isArray(error.details)) {
    const { first, unplaced } = showFieldErrors(error.details);
    showProblem("Check the form.", unplaced.length ? unplaced.join("; ") : "A value is out of bounds.");
    if (first) first.focus();
    return;
  }
  showProblem(TITLES[error.status] || `Error ${error.status}.`, error.message);
  if (error.retryAfter) startCountdown(error.retryAfter);
}

function setBusy(busy) {
  ui.submit.setAttribute("aria-disabled", String(busy || Date.now() < state.retryUntil));
  ui.cancel.hidden = !busy;
}

// The countdown sits outside the role=alert node, so its every second is not announced.
function startCountdown(secondsLeft) {
  state.retryUntil = Date.now() + secondsLeft * 1000;
  const update = () => {
    const left = Math.ceil((state.retryUntil - Date.now()) / 1000);
    if (left > 0) {
      ui.problemRetry.textContent = `Try again in ${left} s (Retry-After).`;
      return;
    }
    ui.problemRetry.textContent = "You can try again now.";
    stopCountdown(false);
  };
  window.clearInterval(state.retryTimer);
  state.retryTimer = window.setInterval(update, 250);
  update();
  setBusy(Boolean(state.running));
}

function stopCountdown(clearText = true) {
  window.clearInterval(state.retryTimer);
  state.retryUntil = 0;
  if (clearText) ui.problemRetry.textContent = "";
  setBusy(Boolean(state.running));
}

// ---- progress and the image ---------------------------------------------------------------

function showProgress(label, fraction) {
  ui.progressBox.hidden = false;
  ui.progressLabel.textContent = label;
  if (fraction === null || fraction === undefined) ui.progress.removeAttribute("value");
  else ui.progress.value = fraction;
}

function showJob(job) {
  const progress = job.progress || {};
  if (job.status === "queued") showProgress("Queued: waiting for the model or a free slot", null);
  else if (job.status === "running" && progress.steps) {
    const eta = progress.eta_s === null || progress.eta_s === undefined ? "" : `, about ${seconds(progress.eta_s)} left`;
    showProgress(`Step ${progress.step} of ${progress.steps}${eta}`, progress.fraction);
  } else if (job.status === "running") showProgress("Running", null);
}

function showImage(blob, facts) {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = URL.createObjectURL(blob);
  state.lastSeed = facts.seed;
  ui.image.src = state.imageUrl;
  ui.image.alt = `Generated from the prompt “${facts.prompt}”, seed ${facts.seed}`;
  ui.download.href = state.imageUrl;
  ui.download.download = `thaw-${facts.seed ?? "image"}.png`;
  const rows = [["Seed", facts.seed ?? "–"]];
  if (facts.size) rows.push(["Size", facts.size]);
  for (const [name, ms] of facts.timings) rows.push([name, `${number(ms.toFixed(1))} ms`]);
  if (facts.jobId) rows.push(["Job", facts.jobId]);
  if (facts.requestId) rows.push(["Request id", facts.requestId]);
  ui.facts.replaceChildren(
    ...rows.flatMap(([term, value]) => {
      const dd = element("dd", {}, String(value));
      if (term === "Seed") dd.id = "seed";
      return [element("dt", {}, term), dd];
    }),
  );
  ui.empty.hidden = true;
  ui.figure.hidden = false;
  announce(`Image ready, seed ${facts.seed}.`);
}

// ---- the jobs API, and the synchronous call -------------------------------------------------

async function followEvents(job, signal) {
  const idle = new AbortController();
  let timer = 0;
  const arm = () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => idle.abort(), STREAM_IDLE_MS);
  };
  arm();
  try {
    const response = await request(job.links.events, {
      headers: { Accept: "text/event-stream" },
      signal: AbortSignal.any([signal, idle.signal]),
    });
    if (!response.ok || !response.body) return job;
    for await (const message of serverSentEvents(response, arm)) {
      job = JSON.parse(message.data);
      showJob(job);
      if (FINAL.includes(job.status)) return job;
    }
  } catch (error) {
    if (signal.aborted) throw error;
    // The stream broke (a proxy, the idle bound): pollJob carries on from here.
  } finally {
    window.clearTimeout(timer);
  }
  return job;
}

async function pollJob(job, signal) {
  while (!FINAL.includes(job.status)) {
    await new Promise((done) => window.setTimeout(done, JOB_POLL_MS));
    if (signal.aborted) throw new DOMException("canceled", "AbortError");
    const response = await request(job.links.self, { signal, timeoutMs: FETCH_TIMEOUT_MS });
    if (!response.ok) throw await readError(response);
    job = await response.json();
    showJob(job);
  }
  return job;
}

// A job's own figures, where its image comes without a Server-Timing header.
function jobTimings(job) {
  if (!job.started_at || !job.finished_at) return [];
  const run = (job.finished_at - job.started_at) * 1000;
  const timings = [["Queue", (job.started_at - job.created_at) * 1000], ["Generation", run]];
  const steps = job.progress && job.progress.steps;
  if (steps) timings.push(["Per step", run / steps]);
  return timings;
}

async function runJob(body, signal) {
  const response = await request("/jobs", { method: "POST", json: body, signal, timeoutMs: FETCH_TIMEOUT_MS * 4 });
  if (response.status === 501) {
    state.jobsUnavailable = true; // Lambda: no jobs there yet
    return runSync(body, signal);
  }
  if (!response.ok) throw await readError(response);
  let job = await response.json();
  state.running.jobId = job.id;
  showJob(job);
  job = await followEvents(job, signal);
  job = await pollJob(job, signal);
  if (job.status === "canceled") {
    showProblem("Canceled.", "");
    return;
  }
  if (job.status === "failed") {
    const error = job.error || {};
    showProblem("Failed.", `${error.message || "the job failed"}${error.code ? ` (${error.code})` : ""}`);
    return;
  }
  const image = await request(`/jobs/${encodeURIComponent(job.id)}/image`, { signal, timeoutMs: FETCH_TIMEOUT_MS * 4 });
  if (!image.ok) throw await readError(image);
  const result = job.result || {};
  const serverTiming = parseServerTiming(image.headers.get("Server-Timing"));
  showImage(await image.blob(), {
    seed: result.seed ?? job.request.seed,
    prompt: body.prompt,
    size: result.width ? `${result.width} × ${result.height}` : null,
    timings: serverTiming.length ? serverTiming : jobTimings(job),
    jobId: job.id,
  });
}

async function runSync(body, signal) {
  showProgress("Generating (this server gives no per-step progress)", null);
  const response = await request("/generate", { method: "POST", json: body, headers: { Accept: "image/png" }, signal });
  if (!response.ok) throw await readError(response);
  showImage(await response.blob(), {
    seed: response.headers.get("X-Seed"),
    prompt: body.prompt,
    size: null,
    timings: parseServerTiming(response.headers.get("Server-Timing")),
    requestId: response.headers.get("X-Request-Id"),
  });
}

// ---- the form's buttons ----------------------------------------------------------------------

export async function submit(event) {
  event.preventDefault();
  if (state.running || !formReady()) return;
  if (Date.now() < state.retryUntil) {
    announce(`Wait ${Math.ceil((state.retryUntil - Date.now()) / 1000)} s before trying again.`);
    return;
  }
  clearProblems();
  const body = formBody();
  const abort = new AbortController();
  state.running = { abort, jobId: null };
  setBusy(true);
  showProgress("Submitting", null);
  announce("Generating.");
  try {
    if (state.jobsUnavailable) await runSync(body, abort.signal);
    else await runJob(body, abort.signal);
  } catch (error) {
    if (abort.signal.aborted) showProblem("Canceled.", "");
    else if (error && error.status) showError(error);
    else showProblem("Could not reach the server.", error && error.message ? error.message : "");
  } finally {
    state.running = null;
    ui.progressBox.hidden = true;
    setBusy(false);
    pollHealth(); // the served count and the queue: now rather than at the next poll
  }
}

export async function cancel() {
  const running = state.running;
  if (!running) return;
  if (running.jobId) {
    try {
      await request(`/jobs/${encodeURIComponent(running.jobId)}`, { method: "DELETE", timeoutMs: FETCH_TIMEOUT_MS });
    } catch {
      // the abort below ends the wait either way
    }
  }
  running.abort.abort();
  ui.submit.focus();
}

export function reuseSeed() {
  const seed = fieldNamed("seed");
  if (seed && state.lastSeed !== null) {
    seed.input.value = state.lastSeed;
    seed.input.focus();
  }
}
