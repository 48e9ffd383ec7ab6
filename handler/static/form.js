// The request form, built from /openapi.json's schema for POST /generate: a control per field,
// its bounds as the schema gives them, and the server's 422 messages beside their fields.

import { FETCH_TIMEOUT_MS, request } from "./api.js";
import { element, number, ui } from "./dom.js";

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

let fields = []; // [{name, input, error, schema, required, wrapper, control}]
let schemaCalls = 0;

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

const hasDefault = (schema) => schema.default !== undefined && schema.default !== null;

function shown(value) {
  return typeof value === "number" ? number(value) : String(value);
}

// The hint under a field: its bounds and what leaving it empty means, with the schema's own
// description (once a model is loaded, thaw's says its default and native size).
function describe(name, schema, required) {
  const known = FIELD_TEXT[name];
  let note = (schema.description || "").replace(/\s+/g, " ").trim();
  if (hasDefault(schema)) note = note.replace(`Default ${schema.default}.`, "").trim();
  const parts = [];
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
  else if (hasDefault(schema)) parts.push(`empty: ${shown(schema.default)}`);
  else if (known && known.empty) parts.push(known.empty);
  else parts.push("empty: the default");
  let text = parts.join(", ");
  text = `${text.charAt(0).toUpperCase()}${text.slice(1)}.`;
  // A field the page knows leads with its bounds; another with what it is.
  if (!note) return text;
  return known ? `${text} ${note}` : `${note} ${text}`;
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
      placeholder: required ? null : hasDefault(schema) ? shown(schema.default) : name === "seed" ? "random" : "default",
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

// What the user has in the form now, to carry over a rebuild.
function snapshot() {
  const values = {};
  for (const { name, input, control } of fields) {
    values[name] =
      control === "choices" ? [...input.querySelectorAll("input:checked")].map((box) => box.value) : input.value;
  }
  const focused = document.activeElement;
  const more = ui.fields.querySelector("details.more");
  return {
    values,
    focusId: focused && ui.fields.contains(focused) ? focused.id : null,
    selection: focused && typeof focused.selectionStart === "number" ? [focused.selectionStart, focused.selectionEnd] : null,
    moreOpen: Boolean(more && more.open),
  };
}

function restore(kept) {
  for (const { name, input, control } of fields) {
    if (!(name in kept.values)) continue;
    if (control === "choices") {
      for (const box of input.querySelectorAll("input")) box.checked = kept.values[name].includes(box.value);
    } else {
      input.value = kept.values[name];
    }
  }
  const more = ui.fields.querySelector("details.more");
  if (more) more.open = kept.moreOpen;
  const focused = kept.focusId && document.getElementById(kept.focusId);
  if (focused) {
    focused.focus();
    if (kept.selection && typeof focused.setSelectionRange === "function") {
      try {
        focused.setSelectionRange(...kept.selection);
      } catch {
        // a control without a text selection
      }
    }
  }
}

function buildForm(spec) {
  const kept = fields.length ? snapshot() : null;
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
  fields = [...main, ...more];
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
  if (kept) restore(kept);
  const prompt = fieldNamed("prompt");
  if (prompt && !prompt.input.value) prompt.input.value = "a lighthouse at dawn, watercolour";
}

/** Read the schema and build the form (or say why not, with a way to try again). Called again
 * once a model is loaded: the schema then shows that model's fields, defaults and bounds; what
 * the user typed is kept. */
export async function loadSchema() {
  const call = ++schemaCalls; // only the latest call builds: an older answer may come last
  try {
    const response = await request("/openapi.json", { timeoutMs: FETCH_TIMEOUT_MS });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const spec = await response.json();
    if (call === schemaCalls) buildForm(spec);
  } catch (error) {
    if (call !== schemaCalls) return;
    const retry = element("button", { type: "button", class: "secondary" }, "Try again");
    retry.addEventListener("click", loadSchema);
    ui.fields.replaceChildren(
      element("p", { class: "field-error" }, `Could not read the request schema: ${error.message}`),
      retry,
    );
  }
}

export const formReady = () => fields.length > 0;

export function fieldNamed(name) {
  return fields.find((field) => field.name === name);
}

/** The request body: every filled field, typed as the schema says; empty optional ones left out. */
export function formBody() {
  const body = {};
  for (const { name, input, required, control } of fields) {
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

export function clearFieldErrors() {
  for (const { input, error } of fields) {
    error.textContent = "";
    input.removeAttribute("aria-invalid");
  }
}

/** Put each 422 detail beside its field; return the first such field's control and the details
 * that name no field. */
export function showFieldErrors(details) {
  let first = null;
  const unplaced = [];
  for (const detail of details) {
    // "webhook_events.0" is about the field "webhook_events".
    const field = fieldNamed(String(detail.field).split(".")[0]);
    if (!field) {
      unplaced.push(`${detail.field}: ${detail.message}`);
      continue;
    }
    field.error.textContent = field.error.textContent
      ? `${field.error.textContent}; ${detail.message}`
      : detail.message;
    field.input.setAttribute("aria-invalid", "true");
    const folded = field.wrapper.closest("details");
    if (folded) folded.open = true;
    first = first || (field.control === "choices" ? field.input.querySelector("input") : field.input);
  }
  return { first, unplaced };
}
