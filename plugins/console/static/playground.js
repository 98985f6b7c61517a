// The playground: streams a response over POST /v1/responses (SSE), token by token, with
// its event timeline, tool-call cards, previous_response_id chaining and a stop button.
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

async function send(input, chainOnto, isToolOutput = false) {
  errorBox.hidden = true;
  let body;
  try { body = options(); } catch (e) { showError(errorBox, e); return; }
  if (!isToolOutput) {
    const choice = $("pg-tool-choice").value;
    if (choice) body.tool_choice = choice;
  }
  Object.assign(body, { input, stream: true, background: true, store: true });
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
  setStatus("sending");
  controller = new AbortController();
  const started = performance.now();
  try {
    const response = await fetch("/v1/responses", { ...requestInit("POST", body), signal: controller.signal,
      headers: { ...requestInit("POST", body).headers, Accept: "text/event-stream" } });
    if (!response.ok) {
      let data = null;
      try { data = await response.json(); } catch { /* not JSON */ }
      throw new Error((data && data.error && data.error.message) || `HTTP ${response.status}`);
    }
    for await (const event of sseEvents(response)) {
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
