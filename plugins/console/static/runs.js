// In-flight runs from the kernel's run registry (GET /console/api/runs), with cancel.
import { api, el, showError } from "./common.js";

const $ = (id) => document.getElementById(id);
const body = $("lr-table").tBodies[0];
const every = Number($("lr-refresh").dataset.ms) || 2000;

async function cancel(id, button) {
  button.disabled = true;
  try {
    await api(`/console/api/runs/${encodeURIComponent(id)}/cancel`, "POST");
  } catch (e) {
    showError($("lr-error"), e);
  }
  refresh();
}

async function refresh() {
  let page;
  try {
    page = await api("/console/api/runs");
    $("lr-error").hidden = true;
  } catch (e) {
    showError($("lr-error"), e);
    return;
  }
  body.replaceChildren(...page.data.map((run) => {
    const button = el("button", { type: "button", class: "danger", text: "Cancel" });
    button.addEventListener("click", () => cancel(run.id, button));
    return el("tr", { "data-id": run.id },
      el("td", {}, el("code", { text: run.id }), run.background ? el("span", { class: "badge", text: "background" }) : null),
      el("td", { text: run.agent }), el("td", { text: run.principal }),
      el("td", {}, el("span", { class: "badge", "data-status": run.status, text: run.status })),
      el("td", { text: `${run.age_seconds.toFixed(1)} s` }), el("td", { class: "tokens", text: run.tokens_so_far }),
      el("td", {}, button));
  }));
  $("lr-empty").hidden = page.data.length > 0;
}

refresh();
setInterval(refresh, every);
