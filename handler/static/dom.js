// The page's elements, and small helpers to make and word them.

export const $ = (id) => document.getElementById(id);

export const ui = {
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

export function element(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

export function announce(text) {
  ui.announce.textContent = "";
  // A fresh node text after a tick, so the same words twice are announced twice.
  window.setTimeout(() => {
    ui.announce.textContent = text;
  }, 50);
}

export function seconds(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  if (value < 10) return `${value.toFixed(2)} s`;
  if (value < 100) return `${value.toFixed(1)} s`;
  if (value < 3600) return `${Math.floor(value / 60)} min ${Math.floor(value % 60)} s`;
  return `${(value / 3600).toFixed(1)} h`;
}

export function number(value) {
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

// A round axis end at or above `value`, so bars grow visibly and the scale moves in steps.
export function niceCeil(value) {
  const steps = [1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600];
  for (const step of steps) if (value <= step) return step;
  return Math.ceil(value / 3600) * 3600;
}
