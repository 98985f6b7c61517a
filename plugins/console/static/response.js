// One stored response: input and output items, usage, timings, the replayed event timeline, delete.
import { api, el, itemView, showError, when } from "./common.js";

const $ = (id) => document.getElementById(id);
const id = $("rd-id").dataset.responseId;

function fact(label, value) {
  return el("div", { class: "tile" }, el("span", { class: "muted", text: label }), el("strong", { text: value ?? "" }));
}

function eventDetail(event) {
  if (typeof event.delta === "string") return event.delta;
  if (event.item) return `${event.item.type}${event.item.name ? ` ${event.item.name}` : ""}`;
  if (event.response) return event.response.status;
  if (event.part) return event.part.type;
  return "";
}

async function load() {
  let detail;
  try {
    detail = await api(`/-/responses/${encodeURIComponent(id)}`);
  } catch (e) {
    showError($("rd-error"), e);
    return;
  }
  const response = detail.response;
  $("rd-status").textContent = response.status;
  $("rd-status").dataset.status = response.status;
  const usage = response.usage || {};
  const t = detail.timings;
  $("rd-facts").replaceChildren(
    fact("agent", detail.agent || response.model), fact("owner", detail.owner), fact("created", when(t.created_at)),
    fact("duration", `${t.duration_seconds} s`), fact("input tokens", usage.input_tokens),
    fact("output tokens", usage.output_tokens), fact("previous", response.previous_response_id || "—"));
  $("rd-input").replaceChildren(...detail.input_items.map(itemView));
  $("rd-output").replaceChildren(...(response.output || []).map(itemView));
  $("rd-timeline").tBodies[0].replaceChildren(...detail.events.map((ev) => el("tr", {},
    el("td", { text: ev.sequence_number }), el("td", {}, el("code", { text: ev.type })),
    el("td", { class: "preview", text: eventDetail(ev) }))));
  $("rd-json").textContent = JSON.stringify(response, null, 2);
  $("rd-delete").disabled = response.status === "in_progress" || response.status === "queued";
}

$("rd-delete").addEventListener("click", async () => {
  if (!window.confirm(`Delete ${id}? This cannot be undone.`)) return;
  try {
    await api(`/-/responses/${encodeURIComponent(id)}`, "DELETE");
    location.assign("/console/responses");
  } catch (e) {
    showError($("rd-error"), e);
  }
});
load();
