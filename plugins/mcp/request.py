"""Per-request MCP servers: ``{"type": "mcp", "server_label", "server_url", ...}`` in a request's ``tools``.

Off unless ``[plugins.mcp] request_servers = true``. The URL passes the kernel's fetch
guard before anything connects (non-public addresses only when their host is in
``[plugins.mcp] allowed_hosts``), and every later connection dials a checked address.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from kernel import ApiError, RequestTool
from kernel.fetch import FetchError, checked_addresses, redact_url
from plugins.mcp.connection import McpConnection
from plugins.mcp.settings import McpPluginSettings
from plugins.mcp.toolset import ApprovalRule, McpToolSet, http_client_factory

if TYPE_CHECKING:
    from kernel.runtime import Kernel

LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
MAX_HEADERS = 32
MAX_HEADER_CHARS = 8192
_KNOWN = frozenset({"type", "server_label", "server_url", "headers", "authorization", "allowed_tools",
                    "require_approval", "server_description", "connector_id", "defer_loading", "allowed_callers",
                    "tunnel_id"})


def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _names(value: Any, at: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _bad(f"'{at}' must be an array of tool names", at)
    return list(value)


def parse_allowed_tools(value: Any, at: str) -> list[str] | None:
    """``allowed_tools``: an array of names or ``{"tool_names": [...]}``; None allows all."""
    if value is None:
        return None
    if isinstance(value, dict):
        unknown = set(value) - {"tool_names", "read_only"}
        if unknown:
            raise _bad(f"unknown key {sorted(unknown)[0]!r} in '{at}'; expected tool_names", f"{at}")
        return _names(value.get("tool_names", []), f"{at}.tool_names")
    return _names(value, at)


def parse_require_approval(value: Any, at: str) -> tuple[ApprovalRule, Any]:
    """``require_approval`` (default "always", as at OpenAI) -> (the rule, the value to echo)."""
    if value is None:
        value = "always"
    if value in ("always", "never"):
        return ApprovalRule(value == "always"), value
    if not isinstance(value, dict) or set(value) - {"always", "never"}:
        raise _bad(f"'{at}' must be 'always', 'never' or {{always: {{tool_names}}, never: {{tool_names}}}}", at)
    lists: dict[str, frozenset[str]] = {}
    for key in ("always", "never"):
        entry = value.get(key)
        if entry is None:
            lists[key] = frozenset()
            continue
        if not isinstance(entry, dict) or set(entry) - {"tool_names", "read_only"}:
            raise _bad(f"'{at}.{key}' must be {{tool_names: [...]}}", f"{at}.{key}")
        lists[key] = frozenset(_names(entry.get("tool_names", []), f"{at}.{key}.tool_names"))
    return ApprovalRule(True, always=lists["always"], never=lists["never"]), value


def parse_headers(raw: dict[str, Any], at: str) -> dict[str, str]:
    """``headers`` (and OpenAI's ``authorization`` shorthand for a bearer token)."""
    headers = raw.get("headers")
    out: dict[str, str] = {}
    if headers is not None:
        if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
            raise _bad(f"'{at}.headers' must be an object of at most {MAX_HEADERS} string headers", f"{at}.headers")
        for key, value in headers.items():
            if not isinstance(value, str) or len(key) + len(value) > MAX_HEADER_CHARS or "\n" in key + value \
                    or "\r" in key + value:
                raise _bad(f"'{at}.headers.{key}' must be a single-line string", f"{at}.headers")
            out[key] = value
    token = raw.get("authorization")
    if token is not None:
        if not isinstance(token, str) or "\n" in token or "\r" in token:
            raise _bad(f"'{at}.authorization' must be a single-line string", f"{at}.authorization")
        out["Authorization"] = f"Bearer {token}"
    return out


async def request_tool(raw: dict[str, Any], at: str, kernel: Kernel) -> RequestTool:
    """Validate one request MCP tool, check its URL, and build its (not yet connected) tool set."""
    settings = kernel.plugin_settings("mcp")
    assert isinstance(settings, McpPluginSettings)
    if not settings.request_servers:
        raise ApiError(400, f"'{at}' names an MCP server, but request-supplied MCP servers are off on this "
                       "gateway; the operator can enable them with [plugins.mcp] request_servers = true in "
                       "plugins.toml (or configure the server as a [tools.NAME] kind = \"mcp\" table)",
                       param=at, code="unsupported_parameter")
    unknown = set(raw) - _KNOWN
    if unknown:
        raise _bad(f"unknown parameter '{at}.{sorted(unknown)[0]}'", f"{at}.{sorted(unknown)[0]}",
                   "unknown_parameter")
    if raw.get("connector_id") is not None:
        raise _bad("OpenAI connectors (connector_id) are not available here; give a server_url",
                   f"{at}.connector_id", "unsupported_parameter")
    label = raw.get("server_label")
    if not isinstance(label, str) or not LABEL.match(label):
        raise _bad(f"'{at}.server_label' must be 1-64 letters, digits, '_' or '-', starting with a letter",
                   f"{at}.server_label", "missing_required_parameter" if label is None else "invalid_value")
    url = raw.get("server_url")
    if not isinstance(url, str) or not url:
        raise _bad(f"missing required parameter: '{at}.server_url'", f"{at}.server_url", "missing_required_parameter")
    allowed_tools = parse_allowed_tools(raw.get("allowed_tools"), f"{at}.allowed_tools")
    approval, approval_echo = parse_require_approval(raw.get("require_approval"), f"{at}.require_approval")
    headers = parse_headers(raw, at)
    allowed_hosts = frozenset(settings.allowed_hosts)
    try:
        await checked_addresses(url, allowed_hosts)
    except FetchError as exc:
        raise _bad(f"'{at}.server_url' ({redact_url(url)}) is refused: {exc.message}", f"{at}.server_url") from None
    factory = http_client_factory(url, headers, allowed_hosts=allowed_hosts, timeout=settings.timeout_seconds)
    connection = McpConnection(label, factory, connect_timeout=settings.timeout_seconds)
    toolset = McpToolSet(label, connection, timeout_seconds=settings.timeout_seconds, allowed_tools=allowed_tools,
                         approval=approval, per_request=True)
    echo: dict[str, Any] = {"type": "mcp", "server_label": label, "server_url": url,
                            "allowed_tools": raw.get("allowed_tools"), "headers": None,
                            "require_approval": approval_echo, "server_description": raw.get("server_description")}
    return RequestTool(toolset=toolset, echo=echo)
