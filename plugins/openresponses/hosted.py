"""Hosted tools this gateway does not run, and the ``hosted_tools`` policy for them.

OpenAI's hosted tool types (web search, file search, code interpreter ...) run on
OpenAI's servers; the client-executed ``local_shell``/``shell``/``apply_patch`` types
are only emitted by models trained on them. None of them can be offered to a model
behind this gateway, so each request either leaves them out of the model's view
(``omit``, the default: the response still echoes them, a warning is logged and the
``x-kernel-omitted-tools`` header names them) or is refused (``reject``).

Keep this list the one place that knows which tool types are hosted: when a tool
kind starts running here (as ``mcp`` did, through the agent loop), take it out below.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from kernel import ApiError

HostedToolsPolicy = Literal["omit", "reject"]

HOSTED_TOOL_TYPES: frozenset[str] = frozenset({
    "web_search",
    "web_search_preview",
    "web_search_2025_08_26",
    "web_search_preview_2025_03_11",
    "file_search",
    "code_interpreter",
    "image_generation",
    "computer_use_preview",
    "computer_use",
    "computer",
    "programmatic_tool_calling",
    "tool_search",
    "local_shell",
    "shell",
    "apply_patch",
    # (``mcp`` is not here: the agent loop runs it, see server_tools.py)
})

# Input items of those tools' calls: carried to the model as text, never refused.
HOSTED_CALL_ITEMS: frozenset[str] = frozenset({
    "web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call",
    "computer_call", "computer_call_output", "local_shell_call", "local_shell_call_output",
    "shell_call", "shell_call_output", "apply_patch_call", "apply_patch_call_output",
    "tool_search_call", "tool_search_output",
})

OMITTED_TOOLS_HEADER = "x-kernel-omitted-tools"


def hosted_tool(kind: str, policy: HostedToolsPolicy, at: str) -> None:
    """Check one hosted tool under ``policy``: returns when it is omitted, 400 when rejected."""
    if policy == "reject":
        raise ApiError(400, f"tool type {kind!r} at '{at}.type' is a hosted tool this gateway does not run "
                       "(hosted_tools = \"reject\"); remove it, or set [plugins.openresponses] "
                       "hosted_tools = \"omit\" to leave such tools out of the model's view",
                       param=f"{at}.type", code="unsupported_tool")


def forced_hosted(kind: str, at: str) -> ApiError:
    """The 400 for a ``tool_choice`` that forces a hosted tool (in both policies)."""
    return ApiError(400, f"tool_choice forces the hosted tool {kind!r}, which this gateway does not run and "
                    "cannot offer to the model; use 'auto' or name a function or custom tool",
                    param=at, code="unsupported_tool")


MAX_CALL_TEXT = 20_000


def hosted_call_text(raw: dict[str, Any]) -> str:
    """A hosted tool's call or output item as text the model can read (ids and status left out)."""
    kind = raw.get("type")
    fields = {k: v for k, v in raw.items() if k not in ("type", "id", "status")}
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text) > MAX_CALL_TEXT:
        text = text[:MAX_CALL_TEXT] + "...(truncated)"
    return f"[{kind}] {text}"
