// thaw playground: the model's state from /health (health.js), a form built from /openapi.json
// (form.js), and the image through the jobs API or POST /generate (generate.js). ES modules from
// this origin only: no build step, no dependency, nothing inline (the page's CSP allows none).

import { ui } from "./dom.js";
import { loadSchema } from "./form.js";
import { cancel, reuseSeed, submit } from "./generate.js";
import { onStatusChange, startHealth } from "./health.js";

const KEY_STORAGE = "thaw.apiKey"; // sessionStorage: the key lives as long as the tab

function keepKey() {
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
}

keepKey();
ui.form.addEventListener("submit", submit);
ui.form.addEventListener("keydown", (event) => {
  // Enter submits from a single-line field by itself; from a text box, Ctrl+Enter (or ⌘+Enter).
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.tagName === "TEXTAREA") {
    event.preventDefault();
    ui.form.requestSubmit();
  }
});
ui.cancel.addEventListener("click", cancel);
ui.reuseSeed.addEventListener("click", reuseSeed);
// A model that has just loaded changes /openapi.json: its own fields, defaults and bounds.
onStatusChange((status, previous) => {
  if (status === "ready" && previous !== null) loadSchema();
});
startHealth();
loadSchema();
