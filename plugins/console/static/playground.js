// The playground: streams a response over /v1/responses (WebSocket mode when the gateway
// serves it, else SSE), token by token, with its event timeline, tool-call cards,
// previous_response_id chaining and a stop button.
import { api, el, requestInit, showError } from "./common.js";

const $ = (id) => document.getElementById(id);
const form = $("pg-form"), sendButton = $("pg-send"), stopButton = $("pg-stop");
const transcript = $("pg-transcript"), toolCalls = $("pg-tool-calls"), timeline = $("pg-timeline").tBodies[0];
const statusBadge = $("pg-status"), errorBox = $("pg-error"), continueBox = $("pg-continue");

let previousId = null;   // the newest finished response: what "continue" chains onto
let currentId = null;    // the response streaming now (what Stop cancels)
let controller = null;

function setStatus(text) {
  statusBadge.textContent = text;
  statusBadge.dataset.status = text;
}

function setPrevious(id) {
  previousId = id;
  $("pg-previous").textContent = id || "(no response yet)";
  continueBox.disabled = !id;
  continueBox.checked = Boolean(id);
}

function options() {
  const body = { model: `agent:${$("pg-agent").value}` };
  const instructions = $("pg-instructions").value.trim();
  if (instructions) body.instructions = instructions;
  const toolsText = $("pg-tools").value.trim();
  if (toolsText) {
    let tools;
    try { tools = JSON.parse(toolsText); } catch (e) { throw new Error(`Tools must be a JSON array: ${e.message}`); }
    if (!Array.isArray(tools)) throw new Error("Tools must be a JSON array of tool objects");
    body.tools = tools;
  }
  const temperature = $("pg-temperature").value;
  if (temperature !== "") body.temperature = Number(temperature);
  const maxTokens = $("pg-max-tokens").value;
  if (maxTokens !== "") body.max_output_tokens = Number(maxTokens);
  return body;
}

function addTimeline(event, started) {
  const row = el("tr", {}, el("td", { text: event.sequence_number ?? "" }), el("td", {}, el("code", { text: event.type })),
    el("td", { text: Math.round(performance.now() - started) }));
  timeline.append(row);
}

function toolCard(call, responseId) {
  const output = el("textarea", { rows: 2, class: "tool-output", "aria-label": `output for ${call.call_id}`,
    placeholder: '{"result": "..."}' });
  const button = el("button", { type: "button", class: "primary", text: "Send output" });
  const card = el("div", { class: "tool-card", "data-call-id": call.call_id },
    el("div", { class: "row" }, el("strong", { text: `${call.name}` }), el("span", { class: "muted small", text: call.call_id })),
    el("pre", { class: "text", text: call.arguments }), output, button);
  button.addEventListener("click", () => {
    button.disabled = true;
    send([{ type: "function_call_output", call_id: call.call_id, output: output.value }], responseId, true);
  });
  return card;
}

async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

// WebSocket mode of /v1/responses (when the gateway serves it): one socket kept across turns,
// opened with a single-use ticket (the cookie alone never opens a socket). SSE otherwise.
const wsPath = form.dataset.websocket || null;
const TERMINAL = new Set(["response.completed", "response.incomplete", "response.failed"]);
let socket = null;        // the open WebSocket, reused by the next turn
let turnSocket = null;    // the socket the running turn streams on (Stop closes it)
let stopRequested = false;

function setTransport(kind) {
  const label = $("pg-transport");
  label.textContent = kind === "websocket" ? "WebSocket" : wsPath ? "SSE (fallback)" : "SSE";
  label.dataset.transport = kind;
}

async function openSocket() {
  if (socket && socket.readyState === WebSocket.OPEN) return socket;
  const grant = await api("/console/api/ws-ticket", "POST");
  const url = new URL(grant.path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = new URLSearchParams({ [grant.param]: grant.ticket }).toString();
  const ws = new WebSocket(url.href);
  await new Promise((resolve, reject) => {
    ws.addEventListener("open", resolve, { once: true });
    ws.addEventListener("close", () => reject(new Error("the WebSocket was refused")), { once: true });
  });
  ws.addEventListener("close", () => { if (socket === ws) socket = null; });
  socket = ws;
  return ws;
}

/** The events of one turn on an open socket: sends response.create, ends at the turn's last event. */
async function* socketEvents(ws, body) {
  const queue = [];
  let wake = null;
  const push = (entry) => { queue.push(entry); if (wake) { wake(); wake = null; } };
  const onMessage = (message) => {
    try { push({ event: JSON.parse(message.data) }); } catch { push({ event: { type: "error", message: "not JSON" } }); }
  };
  const onClose = (close) => push({ closed: close });
  ws.addEventListener("message", onMessage);
  ws.addEventListener("close", onClose);
  try {
    ws.send(JSON.stringify({ type: "response.create", ...body }));
    let started = false;
    for (;;) {
      while (!queue.length) await new Promise((resolve) => { wake = resolve; });
      const next = queue.shift();
      if (next.closed) {
        const error = new Error(`the WebSocket closed (${next.closed.code} ${next.closed.reason})`);
        if (stopRequested) error.name = "AbortError";
        throw error;
      }
      yield next.event;
      const type = next.event.type;
      if (type === "response.created") started = true;
      // A refused request is one error event; a run that fails mid-turn sends error, then response.failed.
      if (TERMINAL.has(type) || (type === "error" && !started)) return;
    }
  } finally {
    ws.removeEventListener("message", onMessage);
    ws.removeEventListener("close", onClose);
  }
}

async function sseTurn(body) {
  controller = new AbortController();
  const init = requestInit("POST", { ...body, stream: true, background: true });
  const response = await fetch("/v1/responses", { ...init, signal: controller.signal,
    headers: { ...init.headers, Accept: "text/event-stream" } });
  if (!response.ok) {
    let data = null;
    try { data = await response.json(); } catch { /* not JSON */ }
    throw new Error((data && data.error && data.error.message) || `HTTP ${response.status}`);
  }
  return sseEvents(response);
}

/** The turn's events over WebSocket when the gateway serves it, else (or when it fails to open) SSE. */
async function openTurn(body) {
  if (wsPath && typeof WebSocket === "function") {
    let ws = null;
    try { ws = await openSocket(); } catch { ws = null; }  // unavailable: fall back to SSE
    if (ws && stopRequested) ws.close(1000, "stopped");
    if (ws && !stopRequested) {
      turnSocket = ws;
      setTransport("websocket");
      return socketEvents(ws, body);
    }
  }
  if (stopRequested) {  // Stop was pressed while the socket was being opened: send nothing
    const stopped = new Error("stopped");
    stopped.name = "AbortError";
    throw stopped;
  }
  setTransport("sse");
  return sseTurn(body);
}

async function send(input, chainOnto, isToolOutput = false) {
  errorBox.hidden = true;
  let body;
  try { body = options(); } catch (e) { showError(errorBox, e); return; }
  if (!isToolOutput) {
    const choice = $("pg-tool-choice").value;
    if (choice) body.tool_choice = choice;
  }
  Object.assign(body, { input, store: true });
  if (chainOnto) body.previous_response_id = chainOnto;

  const userText = typeof input === "string" ? input : input.map((i) => `tool output [${i.call_id}]: ${i.output}`).join("\n");
  transcript.append(el("div", { class: "bubble user" }, el("span", { class: "who", text: "you" }), el("pre", { text: userText })));
  const answer = el("pre", { class: "answer" });
  transcript.append(el("div", { class: "bubble assistant" }, el("span", { class: "who", text: $("pg-agent").value }), answer));
  toolCalls.replaceChildren();
  timeline.replaceChildren();
  $("pg-json").textContent = "";
  sendButton.disabled = true;
  stopButton.disabled = false;
  stopRequested = false;
  setStatus("sending");
  const started = performance.now();
  try {
    for await (const event of await openTurn(body)) {
      addTimeline(event, started);
      switch (event.type) {
        case "response.created":
        case "response.queued":
        case "response.in_progress":
          currentId = event.response.id;
          $("pg-id").textContent = currentId;
          setStatus(event.response.status);
          break;
        case "response.output_text.delta":
          answer.append(event.delta);  // a text node: never parsed as HTML
          break;
        case "response.output_item.done":
          if (event.item.type === "function_call") toolCalls.append(toolCard(event.item, currentId));
          break;
        case "response.completed":
        case "response.incomplete":
        case "response.failed":
          setStatus(event.response.status);
          $("pg-json").textContent = JSON.stringify(event.response, null, 2);
          if (event.response.error) showError(errorBox, event.response.error.message);
          if (event.response.status !== "failed") setPrevious(event.response.id);
          break;
        case "error":
          showError(errorBox, (event.error && event.error.message) || event.message || "stream error");
          if (!currentId) setStatus("failed");
          break;
        default:
          break;
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") showError(errorBox, e);
    if (e.name === "AbortError") setStatus("cancelled");
  } finally {
    answer.normalize();
    sendButton.disabled = false;
    stopButton.disabled = true;
    currentId = null;
    controller = null;
    turnSocket = null;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const message = $("pg-message").value;
  if (!message.trim()) return;
  send(message, continueBox.checked ? previousId : null);
});

stopButton.addEventListener("click", async () => {
  stopButton.disabled = true;
  stopRequested = true;
  if (turnSocket) {
    // WebSocket mode has no cancel message: closing the socket cancels its turn (kept as cancelled).
    turnSocket.close(1000, "stopped");
    return;
  }
  const id = currentId;
  try {
    if (id) await api(`/v1/responses/${encodeURIComponent(id)}/cancel`, "POST");
    else if (controller) controller.abort();
  } catch (e) {
    showError(errorBox, e);
    if (controller) controller.abort();
  }
});

$("pg-new").addEventListener("click", () => {
  setPrevious(null);
  transcript.replaceChildren();
  toolCalls.replaceChildren();
  timeline.replaceChildren();
  $("pg-json").textContent = "";
  $("pg-id").textContent = "";
  setStatus("idle");
});
