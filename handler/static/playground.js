// thaw playground: the model's state from /health, a form built from /openapi.json, and the
// image through the jobs API (POST /jobs, progress as Server-Sent Events, GET /jobs/{id}/image),
// or through POST /generate where jobs answer 501 (Lambda). Same origin only, no dependencies.
"use strict";

const KEY_STORAGE = "thaw.apiKey";
const POLL_LOADING_MS = 1000; // /health while the model is not ready
const POLL_READY_MS = 5000; // ... and once it is (to notice a drain or a lost model)
const POLL_HIDDEN_MS = 15000; // while the tab is hidden
const FETCH_TIMEOUT_MS = 8000; // every small request: health, schema, job status
const STREAM_IDLE_MS = 30000; // no byte on the event stream for this long: poll instead

// Friendlier words for the fields thaw has today; any other field shows its schema title.
const FIELD_TEXT = {
  prompt: { label: "Prompt", empty: "" },
  negative_prompt: { label: "Negative prompt", empty: "empty: none" },
  num_inference_steps: { label: "Steps", empty: "empty: the server's default" },
  guidance_scale: { label: "Guidance", empty: "empty: the server's default" },
  width: { label: "Width", empty: "empty: the model's default" },
  height: { label: "Height", empty: "empty: the model's default" },
  seed: { label: "Seed", empty: "empty: random" },
};

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

const $ = (id) => document.getElementById(id);

const ui = {
  state: $("state"),
  clock: $("model-clock"),
  detail: $("model-detail"),
  reason: $("model-reason"),
  phases: $("phases"),
  axis: $("axis"),
  axisMid: $("axis-mid"),
  axisEnd: $("axis-end"),
  form: $("form"),
  fields: $("fields"),
  key: $("api-key"),
  keyBox: $("key-box"),
  keyError: $("api-key-error"),
  submit: $("submit"),
  cancel: $("cancel"),
  progressBox: $("progress-box"),
  progressLabel: $("progress-label"),
  progress: $("progress"),
  problem: $("problem"),
  problemText: $("problem-text"),
  problemRetry: $("problem-retry"),
  empty: $("empty"),
  figure: $("figure"),
  image: $("image"),
  facts: $("facts"),
  reuseSeed: $("reuse-seed"),
  download: $("download"),
  announce: $("announce"),
};

const page = {
  health: null, // the last /health report
  healthAt: 0, // performance.now() when it came
  fields: [], // [{name, input, error, schema}]
  jobsUnavailable: false, // POST /jobs answered 501: use POST /generate
  running: null, // {abort: AbortController, jobId}
  retryUntil: 0, // Date.now() until which a Retry-After holds the form
  retryTimer: 0,
  pollTimer: 0,
  imageUrl: null,
  lastSeed: null,
};

// ---- HTTP -----------------------------------------------------------------------------------

function authHeaders(extra) {
  const headers = new Headers(extra || {});
  const key = ui.key.value.trim();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

async function request(path, { method = "GET", json, headers, signal, timeoutMs } = {}) {
  const init = { method, headers: authHeaders(headers), cache: "no-store" };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers.set("Content-Type", "application/json");
  }
  const signals = [];
  if (signal) signals.push(signal);
  if (timeoutMs) signals.push(AbortSignal.timeout(timeoutMs));
  if (signals.length) init.signal = signals.length === 1 ? signals[0] : AbortSignal.any(signals);
  return fetch(path, init);
}

// thaw's one error shape: {"error": {"code", "message", "retry_after", "details"?}}.
async function readError(response) {
  let error = { code: `http_${response.status}`, message: `HTTP ${response.status}` };
  try {
    const body = await response.json();
    if (body && body.error) error = { ...error, ...body.error };
  } catch {
    // not JSON: keep the status line
  }
  const header = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  error.retryAfter = Number.isFinite(header) ? header : error.retry_after ?? null;
  error.status = response.status;
  return error;
}

// ---- formatting -----------------------------------------------------------------------------

function seconds(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  if (value < 10) return `${value.toFixed(2)} s`;
  if (value < 100) return `${value.toFixed(1)} s`;
  if (value < 3600) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
  return `${(value / 3600).toFixed(1)} h`;
}

function number(value) {
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

// A round axis end at or above `value`, so bars grow visibly and the scale moves in steps.
function niceCeil(value) {
  const steps = [1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600];
  for (const step of steps) if (value <= step) return step;
  return Math.ceil(value / 3600) * 3600;
}

function element(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function announce(text) {
  ui.announce.textContent = "";
  // A fresh node text after a tick, so the same words twice are announced twice.
  window.setTimeout(() => {
    ui.announce.textContent = text;
  }, 50);
}

// ---- the model's state ----------------------------------------------------------------------

function uptimeNow() {
  if (!page.health) return 0;
  return page.health.uptime_s + (performance.now() - page.healthAt) / 1000;
}

// The timeline's zero, on /health's uptime axis: the service's start, or the model worker's
// spawn when that came first (the worker process starts before the app is built).
function spawnAt(health) {
  const origin = health.load_started_s ?? 0;
  return Math.min(0, ...(health.phases || []).map((phase) => origin + phase.start_s));
}

function renderState() {
  const health = page.health;
  const status = health ? health.status : "unreachable";
  const text = STATE_TEXT[status] || status;
  // The pill is a live region: change its words only when the state changes.
  if (ui.state.dataset.state !== status) {
    ui.state.dataset.state = status;
    ui.state.textContent = text;
  }
  if (!health) return;

  const bits = [];
  if (health.model) bits.push(health.model);
  if (health.device) bits.push([health.device, health.dtype].filter(Boolean).join(" · "));
  const zero = spawnAt(health);
  const readyAt = health.cold_start && health.cold_start.ready_after_s;
  const readyAfter = readyAt === null || readyAt === undefined ? null : readyAt - zero;
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

async function pollHealth() {
  let delay = POLL_LOADING_MS;
  try {
    const response = await request("/health", { timeoutMs: FETCH_TIMEOUT_MS });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    page.health = await response.json();
    page.healthAt = performance.now();
    if (page.health.status === "ready") delay = POLL_READY_MS;
  } catch {
    page.health = null;
  }
  renderState();
  if (document.hidden) delay = POLL_HIDDEN_MS;
  window.clearTimeout(page.pollTimer); // one chain of polls, however this call came
  page.pollTimer = window.setTimeout(pollHealth, delay);
}

// Between polls, a running phase's bar and the clock move on their own.
function tick() {
  const health = page.health;
  if (health && (health.phases || []).some((phase) => phase.state === "running")) renderState();
  else if (health) ui.clock.textContent = `up ${seconds(uptimeNow() - spawnAt(health))}`;
}

// ---- the form, from the request schema -------------------------------------------------------

function resolve(spec, schema) {
  let node = schema;
  for (let hops = 0; node && node.$ref && hops < 16; hops += 1) {
    node = node.$ref
      .replace(/^#\//, "")
      .split("/")
      .reduce((at, key) => at && at[key.replace(/~1/g, "/").replace(/~0/g, "~")], spec);
  }
  return node || {};
}

// `X | None` arrives as anyOf [X, {type: null}]: the field is X, and optional.
function flatten(spec, property) {
  let node = resolve(spec, property);
  const choices = node.anyOf || node.oneOf;
  if (choices) {
    const real = choices.map((choice) => resolve(spec, choice)).filter((c) => c.type !== "null");
    if (real.length === 1) node = { ...node, ...real[0] };
  }
  if (node.allOf && node.allOf.length === 1) node = { ...node, ...resolve(spec, node.allOf[0]) };
  return node;
}

function requestSchema(spec) {
  const paths = spec.paths || {};
  for (const path of ["/generate", "/jobs"]) {
    const operation = paths[path] && paths[path].post;
    const content = operation && operation.requestBody && operation.requestBody.content;
    if (content && content["application/json"]) {
      return resolve(spec, content["application/json"].schema);
    }
  }
  throw new Error("no POST /generate request schema in /openapi.json");
}

function describe(name, schema, required) {
  const parts = [];
  const known = FIELD_TEXT[name];
  // A field thaw's page does not know yet says what it is in the schema's own words.
  if (!known && schema.description) parts.push(schema.description.split("\n")[0]);
  const low = schema.minimum ?? schema.exclusiveMinimum;
  const high = schema.maximum ?? schema.exclusiveMaximum;
  if (schema.type === "string") {
    if (schema.maxLength) parts.push(`up to ${number(schema.maxLength)} characters`);
  } else if (low !== undefined && high !== undefined) {
    parts.push(`${number(low)} to ${number(high)}`);
  } else if (low !== undefined) {
    parts.push(`at least ${number(low)}`);
  } else if (high !== undefined) {
    parts.push(`at most ${number(high)}`);
  }
  if (schema.multipleOf) parts.push(`a multiple of ${number(schema.multipleOf)}`);
  if (required) parts.unshift("required");
  else if (known && known.empty) parts.push(known.empty);
  else parts.push("empty: the default");
  const text = parts.join(", ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// What kind of control a property needs, or null for one this page cannot offer (an object).
function controlFor(name, schema, spec) {
  if (schema.enum || schema.type === "boolean") return "select";
  if (schema.type === "integer" || schema.type === "number") return "number";
  if (schema.type === "array") {
    const items = flatten(spec, schema.items || {});
    return items.enum ? "choices" : null;
  }
  if (schema.type === "string") return name === "prompt" || (schema.maxLength || 0) > 200 ? "textarea" : "text";
  return null;
}

function buildField(name, schema, required, spec) {
  const control = controlFor(name, schema, spec);
  if (!control) return null;
  const id = `field-${name}`;
  const labelText = (FIELD_TEXT[name] || {}).label || schema.title || name;
  const wide = control === "textarea" || control === "text" || control === "choices";
  const wrapper = element(control === "choices" ? "fieldset" : "div", { class: wide ? "field wide" : "field" });
  const hint = element("p", { id: `${id}-hint`, class: "hint" }, describe(name, schema, required));
  const error = element("p", { id: `${id}-error`, class: "field-error" });
  const common = {
    id,
    name,
    "aria-describedby": `${id}-hint ${id}-error`,
    "aria-required": required ? "true" : null,
  };
  let input;
  if (control === "choices") {
    // A set of choices (say, which webhook events): one checkbox each; none ticked is omitted.
    input = element("div", { ...common, class: "choices", role: "group", "aria-labelledby": `${id}-legend` });
    for (const value of flatten(spec, schema.items).enum) {
      const box = element("input", { type: "checkbox", value: JSON.stringify(value), id: `${id}-${value}` });
      const label = element("label", { for: box.id, class: "choice" });
      label.append(box, document.createTextNode(` ${value}`));
      input.append(label);
    }
    wrapper.append(element("legend", { id: `${id}-legend` }, labelText), input, hint, error);
    return { name, input, error, schema, required, wrapper, control };
  }
  if (control === "select") {
    input = element("select", common);
    if (!required) input.append(element("option", { value: "" }, "(default)"));
    for (const value of schema.enum || [true, false]) {
      input.append(element("option", { value: JSON.stringify(value) }, String(value)));
    }
  } else if (control === "number") {
    input = element("input", {
      ...common,
      type: "number",
      inputmode: schema.type === "integer" ? "numeric" : "decimal",
      min: schema.minimum,
      max: schema.maximum,
      step: schema.multipleOf || (schema.type === "integer" ? 1 : "any"),
      placeholder: required ? null : name === "seed" ? "random" : "default",
    });
  } else if (control === "textarea") {
    input = element("textarea", { ...common, rows: name === "prompt" ? 3 : 2, maxlength: schema.maxLength });
  } else {
    const url = /url|webhook/i.test(name);
    input = element("input", { ...common, type: url ? "url" : "text", maxlength: schema.maxLength });
  }
  wrapper.append(element("label", { for: id }, labelText), input, hint, error);
  return { name, input, error, schema, required, wrapper, control };
}

function buildForm(spec) {
  const schema = requestSchema(spec);
  const required = new Set(schema.required || []);
  const built = Object.entries(schema.properties || {})
    .map(([name, property]) => buildField(name, flatten(spec, property), required.has(name), spec))
    .filter(Boolean);
  // The fields the page knows lead (text first, the prompt at the top); any other field the
  // schema has (webhooks, a pipeline's own parameters) waits under "More parameters".
  const rank = (field) => (field.control === "textarea" || field.control === "text" ? 0 : 1);
  const main = built.filter((field) => field.name in FIELD_TEXT || field.required);
  main.sort((a, b) => rank(a) - rank(b));
  const more = built.filter((field) => !main.includes(field));
  page.fields = [...main, ...more];
  const children = main.map((field) => field.wrapper);
  if (more.length) {
    const box = element("details", { class: "more field wide" });
    box.append(element("summary", {}, `More parameters (${more.length})`));
    const inner = element("div", { class: "fields" });
    inner.append(...more.map((field) => field.wrapper));
    box.append(inner);
    children.push(box);
  }
  ui.fields.replaceChildren(...children);
  const prompt = page.fields.find((field) => field.name === "prompt");
  if (prompt && !prompt.input.value) prompt.input.value = "a lighthouse at dawn, watercolour";
}

async function loadSchema() {
  try {
    const response = await request("/openapi.json", { timeoutMs: FETCH_TIMEOUT_MS });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    buildForm(await response.json());
  } catch (error) {
    const retry = element("button", { type: "button", class: "secondary" }, "Try again");
    retry.addEventListener("click", loadSchema);
    ui.fields.replaceChildren(
      element("p", { class: "field-error" }, `Could not read the request schema: ${error.message}`),
      retry,
    );
  }
}

function formBody() {
  const body = {};
  for (const { name, input, schema, required, control } of page.fields) {
    if (control === "choices") {
      const ticked = [...input.querySelectorAll("input:checked")].map((box) => JSON.parse(box.value));
      if (ticked.length) body[name] = ticked;
      continue;
    }
    const raw = input.value;
    if (raw === "" && !required) continue;
    if (control === "select") body[name] = JSON.parse(raw);
    else if (control === "number") body[name] = Number(raw);
    else body[name] = raw;
  }
  return body;
}

// ---- errors ---------------------------------------------------------------------------------

function clearProblems() {
  for (const { input, error } of page.fields) {
    error.textContent = "";
    input.removeAttribute("aria-invalid");
  }
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
    let first = null;
    const unplaced = [];
    for (const detail of error.details) {
      // "webhook_events.0" is about the field "webhook_events".
      const name = String(detail.field).split(".")[0];
      const field = page.fields.find((f) => f.name === name);
      if (!field) {
        unplaced.push(`${detail.field}: ${detail.message}`);
        continue;
      }
      field.error.textContent = field.error.textContent
        ? `${field.error.textContent}; ${detail.message}`
        : detail.message;
      field.input.setAttribute("aria-invalid", "true");
      const details = field.wrapper.closest("details");
      if (details) details.open = true;
      first = first || (field.control === "choices" ? field.input.querySelector("input") : field.input);
    }
    showProblem("Check the form.", unplaced.length ? unplaced.join("; ") : "A value is out of bounds.");
    if (first) first.focus();
    return;
  }
  const titles = {
    422: "Invalid request.",
    413: "Too large.",
    429: "Busy.",
    503: "Unavailable.",
    504: "Took too long.",
  };
  showProblem(titles[error.status] || `Error ${error.status || ""}.`.replace(" .", "."), error.message);
  if (error.retryAfter) startCountdown(error.retryAfter);
}

function setBusy(busy) {
  ui.submit.setAttribute("aria-disabled", String(busy || Date.now() < page.retryUntil));
  ui.cancel.hidden = !busy;
}

function startCountdown(secondsLeft) {
  page.retryUntil = Date.now() + secondsLeft * 1000;
  const update = () => {
    const left = Math.ceil((page.retryUntil - Date.now()) / 1000);
    if (left > 0) {
      ui.problemRetry.textContent = `Try again in ${left} s (Retry-After).`;
      return;
    }
    ui.problemRetry.textContent = "You can try again now.";
    stopCountdown(false);
  };
  window.clearInterval(page.retryTimer);
  page.retryTimer = window.setInterval(update, 250);
  update();
  setBusy(Boolean(page.running));
}

function stopCountdown(clearText = true) {
  window.clearInterval(page.retryTimer);
  page.retryUntil = 0;
  if (clearText) ui.problemRetry.textContent = "";
  setBusy(Boolean(page.running));
}

// ---- generating -----------------------------------------------------------------------------

function showProgress(label, fraction) {
  ui.progressBox.hidden = false;
  ui.progressLabel.textContent = label;
  if (fraction === null || fraction === undefined) ui.progress.removeAttribute("value");
  else ui.progress.value = fraction;
}

function parseServerTiming(header) {
  // "queue;dur=0.1, inference;dur=812.3, encode;dur=3.0" -> [["queue", 0.1], ...] in ms
  return (header || "")
    .split(",")
    .map((part) => {
      const [name, ...params] = part.trim().split(";");
      const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
      return [name, dur ? Number(dur.slice(4)) : null];
    })
    .filter(([name, dur]) => name && dur !== null && Number.isFinite(dur));
}

function showImage(blob, facts) {
  if (page.imageUrl) URL.revokeObjectURL(page.imageUrl);
  page.imageUrl = URL.createObjectURL(blob);
  page.lastSeed = facts.seed;
  ui.image.src = page.imageUrl;
  ui.image.alt = `Generated from the prompt “${facts.prompt}”, seed ${facts.seed}`;
  ui.download.href = page.imageUrl;
  ui.download.download = `thaw-${facts.seed ?? "image"}.png`;
  const rows = [["Seed", facts.seed ?? "–"]];
  if (facts.size) rows.push(["Size", facts.size]);
  for (const [name, ms] of facts.timings) rows.push([name, `${number(ms.toFixed(1))} ms`]);
  if (facts.jobId) rows.push(["Job", facts.jobId]);
  if (facts.requestId) rows.push(["Request id", facts.requestId]);
  ui.facts.replaceChildren(
    ...rows.flatMap(([term, value]) => {
      const dt = element("dt", {}, term);
      const dd = element("dd", {}, String(value));
      if (term === "Seed") dd.id = "seed";
      return [dt, dd];
    }),
  );
  ui.empty.hidden = true;
  ui.figure.hidden = false;
  announce(`Image ready, seed ${facts.seed}.`);
}

async function* serverSentEvents(response, onBytes) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onBytes();
    buffer = (buffer + value).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

function showJob(job) {
  const progress = job.progress || {};
  if (job.status === "queued") showProgress("Queued: waiting for the model or a free slot", null);
  else if (job.status === "running" && progress.steps) {
    const eta = progress.eta_s === null || progress.eta_s === undefined ? "" : `, about ${seconds(progress.eta_s)} left`;
    showProgress(`Step ${progress.step} of ${progress.steps}${eta}`, progress.fraction);
  } else if (job.status === "running") showProgress("Running", null);
}

async function followEvents(job, signal) {
  // fetch rather than EventSource: EventSource cannot send the Authorization header.
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
      if (["succeeded", "failed", "canceled"].includes(job.status)) return job;
    }
  } catch (error) {
    if (signal.aborted) throw error;
    // The stream broke (a proxy, a timeout): the caller polls from here.
  } finally {
    window.clearTimeout(timer);
  }
  return job;
}

async function pollJob(job, signal) {
  while (!["succeeded", "failed", "canceled"].includes(job.status)) {
    await new Promise((done) => window.setTimeout(done, 500));
    if (signal.aborted) throw new DOMException("canceled", "AbortError");
    const response = await request(job.links.self, { signal, timeoutMs: FETCH_TIMEOUT_MS });
    if (!response.ok) throw await readError(response);
    job = await response.json();
    showJob(job);
  }
  return job;
}

function jobTimings(job) {
  const timings = [];
  if (job.started_at && job.created_at) timings.push(["Queue", (job.started_at - job.created_at) * 1000]);
  if (job.finished_at && job.started_at) timings.push(["Generation", (job.finished_at - job.started_at) * 1000]);
  const steps = job.progress && job.progress.steps;
  if (steps && job.finished_at && job.started_at) {
    timings.push(["Per step", ((job.finished_at - job.started_at) * 1000) / steps]);
  }
  return timings;
}

async function runJob(body, signal) {
  const response = await request("/jobs", { method: "POST", json: body, signal, timeoutMs: FETCH_TIMEOUT_MS * 4 });
  if (response.status === 501) {
    page.jobsUnavailable = true; // Lambda: no jobs there yet
    return runSync(body, signal);
  }
  if (!response.ok) throw await readError(response);
  let job = await response.json();
  page.running.jobId = job.id;
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
  const blob = await response.blob();
  const timings = parseServerTiming(response.headers.get("Server-Timing")).map(([name, ms]) => [
    `${name.charAt(0).toUpperCase()}${name.slice(1)}`,
    ms,
  ]);
  showImage(blob, {
    seed: response.headers.get("X-Seed"),
    prompt: body.prompt,
    size: null,
    timings,
    requestId: response.headers.get("X-Request-Id"),
  });
}

async function submit(event) {
  event.preventDefault();
  if (page.running) return;
  if (Date.now() < page.retryUntil) {
    announce(`Wait ${Math.ceil((page.retryUntil - Date.now()) / 1000)} s before trying again.`);
    return;
  }
  if (!page.fields.length) return;
  clearProblems();
  const body = formBody();
  const abort = new AbortController();
  page.running = { abort, jobId: null };
  setBusy(true);
  showProgress("Submitting", null);
  announce("Generating.");
  try {
    if (page.jobsUnavailable) await runSync(body, abort.signal);
    else await runJob(body, abort.signal);
  } catch (error) {
    if (abort.signal.aborted) showProblem("Canceled.", "");
    else if (error && error.status) showError(error);
    else showProblem("Could not reach the server.", error && error.message ? error.message : "");
  } finally {
    page.running = null;
    ui.progressBox.hidden = true;
    setBusy(false);
    pollHealth(); // the served count, the queue: show them now rather than at the next poll
  }
}

async function cancel() {
  const running = page.running;
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

// ---- start ----------------------------------------------------------------------------------

function start() {
  try {
    ui.key.value = window.sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    // storage blocked: the key lives in the field only
  }
  if (ui.key.value) ui.keyBox.open = true;
  ui.key.addEventListener("input", () => {
    try {
      if (ui.key.value) window.sessionStorage.setItem(KEY_STORAGE, ui.key.value);
      else window.sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage blocked
    }
  });
  ui.form.addEventListener("submit", submit);
  ui.form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.tagName === "TEXTAREA") {
      event.preventDefault();
      ui.form.requestSubmit();
    }
  });
  ui.cancel.addEventListener("click", cancel);
  ui.reuseSeed.addEventListener("click", () => {
    const seed = page.fields.find((field) => field.name === "seed");
    if (seed && page.lastSeed !== null) {
      seed.input.value = page.lastSeed;
      seed.input.focus();
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      window.clearTimeout(page.pollTimer);
      pollHealth();
    }
  });
  window.setInterval(tick, 200);
  pollHealth();
  loadSchema();
}

start();
