// Stored responses, newest first, from GET /-/responses (the openresponses plugin's listing).
import { api, el, showError, when } from "./common.js";

const $ = (id) => document.getElementById(id);
const body = $("rs-table").tBodies[0];
const showOwner = $("rs-table").tHead.rows[0].cells.length === 7;
let cursors = [];  // the `after` of each page shown, to step back to the newest

async function load(after) {
  $("rs-error").hidden = true;
  const params = new URLSearchParams({ limit: $("rs-limit").value });
  if (after) params.set("after", after);
  if ($("rs-agent").value) params.set("agent", $("rs-agent").value);
  if ($("rs-status").value) params.set("status", $("rs-status").value);
  let page;
  try {
    page = await api(`/-/responses?${params}`);
  } catch (e) {
    if (e.status === 404) e.message = "Stored responses need the openresponses plugin (GET /-/responses answered 404).";
    showError($("rs-error"), e);
    return;
  }
  body.replaceChildren(...page.data.map((r) => {
    const usage = r.usage ? `${r.usage.input_tokens} / ${r.usage.output_tokens}` : "";
    return el("tr", { "data-id": r.id },
      el("td", { class: "small", text: when(r.created_at) }),
      el("td", {}, el("a", { href: `/console/responses/${encodeURIComponent(r.id)}`, text: r.id })),
      el("td", { text: r.agent || r.model }),
      showOwner ? el("td", { text: r.owner }) : null,
      el("td", {}, el("span", { class: "badge", "data-status": r.status, text: r.status })),
      el("td", { class: "small", text: usage }),
      el("td", { class: "preview", text: r.output_text_preview }));
  }));
  $("rs-empty").hidden = page.data.length > 0 || Boolean(after);
  $("rs-more").disabled = !page.has_more;
  $("rs-more").dataset.after = page.last_id || "";
}

$("rs-more").addEventListener("click", () => { cursors.push($("rs-more").dataset.after); load($("rs-more").dataset.after); });
$("rs-first").addEventListener("click", () => { cursors = []; load(null); });
for (const id of ["rs-agent", "rs-status", "rs-limit"]) $(id).addEventListener("change", () => { cursors = []; load(null); });
$("rs-filter").addEventListener("submit", (e) => e.preventDefault());
load(null);
