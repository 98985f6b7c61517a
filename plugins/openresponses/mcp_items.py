"""Server-side tool events -> OpenAI's MCP output items and ``response.mcp_*`` streaming events.

Shapes follow the installed openai SDK's types (``McpListTools``, ``McpCall``,
``McpApprovalRequest`` and the ``ResponseMcp*Event`` classes). They appear only when a
run used server-side tools, so a response without them stays valid against the
OpenResponses schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kernel import ApprovalRequested, RunEvent, ServerCallDone, ServerCallStart, ToolsListed
from plugins.openresponses import resource as r

if TYPE_CHECKING:
    from plugins.openresponses.builder import ResponseBuilder, _Out

SERVER_EVENT_KINDS = frozenset({"tools_listed", "server_call_start", "server_call_done", "approval_requested"})


def wire(item: _Out, added: bool) -> dict[str, Any]:
    """The item as the SDK's type wants it (``added``: the just-added, in-progress shape)."""
    data = dict(item.data or {})
    kind = data.pop("type")
    if kind == "mcp_list_tools":
        return {"type": kind, "id": item.id, "server_label": data["server_label"],
                "tools": [] if added else data["tools"], "error": None if added else data.get("error")}
    if kind == "mcp_call":
        out = {"type": kind, "id": item.id, "server_label": data["server_label"], "name": data["name"],
               "arguments": "" if added else data["arguments"], "output": None, "error": None,
               "status": item.status, "approval_request_id": data.get("approval_request_id")}
        if not added and item.status != "in_progress":
            out["output"] = data.get("output")
            error = data.get("error")
            out["error"] = None if error is None else {"type": "mcp_tool_execution_error",
                                                       "content": [{"type": "text", "text": error}]}
        return out
    return {"type": kind, "id": item.id, "server_label": data["server_label"], "name": data["name"],
            "arguments": data["arguments"]}


def feed(builder: ResponseBuilder, event: RunEvent) -> None:
    """Advance ``builder`` with one server-side tool event."""
    if isinstance(event, ToolsListed):
        item = builder._add_item("mcp_list_tools", r.new_id("mcpl"), {
            "type": "mcp_list_tools", "server_label": event.server,
            "tools": [{"name": t["name"], "description": t.get("description"),
                       "input_schema": t.get("input_schema") or {"type": "object", "properties": {}},
                       "annotations": None} for t in event.tools],
            "error": event.error})
        base = {"item_id": item.id, "output_index": item.index}
        builder._emit({"type": "response.mcp_list_tools.in_progress", **base})
        item.status = "failed" if event.error else "completed"
        builder._emit({"type": "response.mcp_list_tools.failed" if event.error
                       else "response.mcp_list_tools.completed", **base})
        builder._emit({"type": "response.output_item.done", "output_index": item.index, "item": item.wire()})
    elif isinstance(event, ServerCallStart):
        approval = event.call_id if event.call_id.startswith("apr_") else None
        item = builder._add_item("mcp_call", r.new_id("mcp"), {
            "type": "mcp_call", "server_label": event.server, "name": event.name, "arguments": event.arguments,
            "approval_request_id": approval})
        builder._server_calls[event.call_id] = item
        base = {"item_id": item.id, "output_index": item.index}
        builder._emit({"type": "response.mcp_call.in_progress", **base})
        if event.arguments:
            builder._emit({"type": "response.mcp_call_arguments.delta", **base, "delta": event.arguments})
        builder._emit({"type": "response.mcp_call_arguments.done", **base, "arguments": event.arguments})
    elif isinstance(event, ServerCallDone):
        item = builder._server_calls.pop(event.call_id, None)
        if item is None:  # a call that never started here (e.g. an approval for a tool now missing)
            builder.feed(ServerCallStart(event.call_id, event.server, event.name, event.arguments))
            item = builder._server_calls.pop(event.call_id)
        assert item.data is not None
        item.data["output"] = event.output
        item.data["error"] = event.error
        item.status = "failed" if event.error is not None else "completed"
        base = {"item_id": item.id, "output_index": item.index}
        builder._emit({"type": "response.mcp_call.failed" if event.error is not None
                       else "response.mcp_call.completed", **base})
        builder._emit({"type": "response.output_item.done", "output_index": item.index, "item": item.wire()})
    elif isinstance(event, ApprovalRequested):
        item = builder._add_item("mcp_approval_request", event.approval_id, {
            "type": "mcp_approval_request", "server_label": event.server, "name": event.name,
            "arguments": event.arguments})
        item.status = "completed"
        builder._emit({"type": "response.output_item.done", "output_index": item.index, "item": item.wire()})
