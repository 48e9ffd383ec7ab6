// HTTP to this page's own origin: the API key, thaw's error shape, Server-Sent Events read from
// a fetch (EventSource cannot send the Authorization header), Server-Timing.

import { ui } from "./dom.js";

export const FETCH_TIMEOUT_MS = 8000; // every small request: health, schema, job status

function authHeaders(extra) {
  const headers = new Headers(extra || {});
  const key = ui.key.value.trim();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

export async function request(path, { method = "GET", json, headers, signal, timeoutMs } = {}) {
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

// thaw's one error shape: {"error": {"code", "message", "retry_after", "details"?}}, with the
// status and the Retry-After header's seconds added.
export async function readError(response) {
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

// Each event of a text/event-stream body as {event, data}; `onBytes` hears every chunk.
export async function* serverSentEvents(response, onBytes) {
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

// "queue;dur=0.1, inference;dur=812.3" -> [["Queue", 0.1], ["Inference", 812.3]] (ms)
export function parseServerTiming(header) {
  return (header || "")
    .split(",")
    .map((part) => {
      const [name, ...params] = part.trim().split(";");
      const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
      return [`${name.charAt(0).toUpperCase()}${name.slice(1)}`, dur ? Number(dur.slice(4)) : null];
    })
    .filter(([name, dur]) => name && dur !== null && Number.isFinite(dur));
}
