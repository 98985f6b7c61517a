"""Server-side tools on ``/v1/responses``: request tools the kernel's tool kinds handle (``mcp``),
and OpenAI's MCP items as input (``mcp_list_tools``, ``mcp_call``, ``mcp_approval_request``,
``mcp_approval_response``), mapped onto the kernel's neutral loop items.

The plugin never learns what an MCP server is: a request tool of a type some tool kind
declares is handed to ``kernel.tools.from_request``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernel import ApiError, ApprovalRequest, ApprovalResponse, Item, ToolCall, ToolListing, ToolResult, model_tool_name

if TYPE_CHECKING:
    from kernel.runtime import Kernel
    from kernel.types import Turn
    from plugins.openresponses.request import ParsedRequest

# Request tool types handed to the kernel's tool kinds (tools.parse_tools skips them).
SERVER_TOOL_TYPES = frozenset({"mcp"})
MCP_ITEM_TYPES = ("mcp_list_tools", "mcp_call", "mcp_approval_request", "mcp_approval_response")


def request_server_tools(raw_tools: Any) -> list[tuple[str, dict[str, Any]]]:
    """The entries of ``tools`` a tool kind handles, with their field paths."""
    if not isinstance(raw_tools, list):
        return []
    return [(f"tools[{i}]", raw) for i, raw in enumerate(raw_tools)
            if isinstance(raw, dict) and raw.get("type") in SERVER_TOOL_TYPES]


def function_tool_paths(raw_tools: Any) -> dict[str, str]:
    """Each function tool's name -> the field naming it (``tools[i].name``), for error messages."""
    if not isinstance(raw_tools, list):
        return {}
    return {raw["name"]: f"tools[{i}].name" for i, raw in enumerate(raw_tools)
            if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str)}


async def attach_server_tools(kernel: Kernel, parsed: ParsedRequest, turn: Turn) -> None:
    """Build the tool sets a request brought, add them to the turn and their echo to the response's ``tools``."""
    for at, raw in parsed.server_tools:
        kind = raw.get("type")
        if not kernel.tools.handles(str(kind)):
            raise ApiError(400, f"tool type {kind!r} at '{at}.type' needs the {kind} plugin; enable it with "
                           f"[plugins.{kind}] enabled = true in plugins.toml", param=f"{at}.type",
                           code="invalid_value")
    for built in await kernel.tools.from_request_tools(parsed.server_tools):
        turn.toolsets.append(built.toolset)
        parsed.params.tools.append(built.echo)


def check_approval_ids(turn: Turn, raw_input: Any) -> None:
    """400 naming ``input[i].approval_request_id`` when an ``mcp_approval_response`` answers no
    ``mcp_approval_request`` of the conversation (the chain and this input)."""
    known = {item.id for item in turn.conversation() if isinstance(item, ApprovalRequest)}
    for item in turn.input:
        if not isinstance(item, ApprovalResponse) or item.approval_request_id in known:
            continue
        at = "input"
        if isinstance(raw_input, list):
            for i, raw in enumerate(raw_input):
                if isinstance(raw, dict) and raw.get("type") == "mcp_approval_response" \
                        and raw.get("approval_request_id") == item.approval_request_id:
                    at = f"input[{i}]"
                    break
        raise ApiError(400, f"'{at}.approval_request_id' ({item.approval_request_id!r}) answers no "
                       "mcp_approval_request of this conversation; continue the response that asked for the "
                       "approval (previous_response_id) or send the mcp_approval_request item back as input",
                       param=f"{at}.approval_request_id", code="invalid_value")


# --------------------------------------------------------------------------- items


def _text(raw: dict[str, Any], key: str, at: str, *, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ApiError(400, f"missing required parameter: '{at}.{key}' (a string)", param=f"{at}.{key}",
                       code="missing_required_parameter" if value is None else "invalid_type")
    return value


def mcp_items(raw: dict[str, Any], at: str | None = None) -> list[Item]:
    """One MCP item (input or stored output) -> kernel items; ``at`` set means client input (checked)."""
    where = at or "output"
    kind = raw.get("type")
    if kind == "mcp_list_tools":
        label = _text(raw, "server_label", where) or ""
        tools = raw.get("tools")
        if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                                  for t in tools):
            raise ApiError(400, f"'{where}.tools' must be an array of {{name, input_schema}} objects",
                           param=f"{where}.tools", code="invalid_value")
        return [ToolListing(server=label, tools=tools, error=raw.get("error"), id=raw.get("id"))]
    if kind == "mcp_call":
        label = _text(raw, "server_label", where) or ""
        name = _text(raw, "name", where) or ""
        call_id = _text(raw, "id", where) or ""
        arguments = _text(raw, "arguments", where, required=False) or ""
        output = raw.get("output")
        error = raw.get("error")
        if error is not None:
            output = f"Error: {error_text(error)}"
        call = ToolCall(call_id=call_id, name=model_tool_name(label, name), arguments=arguments, id=call_id,
                        server=label)
        return [call, ToolResult(call_id=call_id, output=output if isinstance(output, str) else "")]
    if kind == "mcp_approval_request":
        return [ApprovalRequest(id=_text(raw, "id", where) or "", server=_text(raw, "server_label", where) or "",
                                name=_text(raw, "name", where) or "",
                                arguments=_text(raw, "arguments", where, required=False) or "")]
    if kind == "mcp_approval_response":
        approve = raw.get("approve")
        if not isinstance(approve, bool):
            raise ApiError(400, f"'{where}.approve' must be true or false", param=f"{where}.approve",
                           code="invalid_type")
        return [ApprovalResponse(approval_request_id=_text(raw, "approval_request_id", where) or "",
                                 approve=approve, reason=_text(raw, "reason", where, required=False),
                                 id=raw.get("id"))]
    return []


def error_text(error: Any) -> str:
    """An ``mcp_call.error`` (a string, or OpenAI's error object) as text."""
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        if isinstance(error.get("message"), str):
            return error["message"]
        content = error.get("content")
        if isinstance(content, list):
            return "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return str(error)
