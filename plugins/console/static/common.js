// Shared helpers. Everything shown is set with textContent: model output and stored text
// are never parsed as HTML.

const csrfMeta = document.querySelector('meta[name="csrf-token"]');
export const csrfToken = csrfMeta ? csrfMeta.content : "";

/** An element with attributes and children (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Options for fetch: same-origin cookie, and the CSRF header on anything but GET. */
export function requestInit(method = "GET", body = undefined) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) };
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** JSON from a gateway route; throws ApiError with the OpenAI-style message on failure. */
export async function api(path, method = "GET", body = undefined) {
  const response = await fetch(path, requestInit(method, body));
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (response.status === 401) { location.assign("/console/login"); }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export function showError(node, error) {
  node.textContent = error instanceof Error ? error.message : String(error);
  node.hidden = false;
}

export function when(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleString();
}

/** A readable one-line rendering of a wire item (message, tool call, tool output ...). */
export function itemView(item) {
  const box = el("div", { class: `item item-${item.type || "unknown"}` });
  const label = item.type === "message" ? `${item.role} message` : item.type;
  box.append(el("div", { class: "item-head" }, el("strong", { text: label || "item" }),
    item.id ? el("span", { class: "muted small", text: ` ${item.id}` }) : null));
  if (item.type === "message") {
    const content = typeof item.content === "string" ? [{ type: "input_text", text: item.content }] : item.content || [];
    for (const part of content) {
      const text = part.text ?? part.refusal ?? (part.image_url ? `[image ${part.image_url.slice(0, 48)}]` : `[${part.type}]`);
      box.append(el("pre", { class: "text", text }));
    }
  } else if (item.type === "function_call") {
    box.append(el("pre", { class: "text", text: `${item.name}(${item.arguments}) [${item.call_id}]` }));
  } else if (item.type === "function_call_output") {
    box.append(el("pre", { class: "text", text: `[${item.call_id}] ${typeof item.output === "string" ? item.output : JSON.stringify(item.output)}` }));
  } else {
    box.append(el("pre", { class: "text", text: JSON.stringify(item, null, 2) }));
  }
  return box;
}
