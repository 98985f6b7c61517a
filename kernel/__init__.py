"""The agent gateway's microkernel: the public surface plugins import.

Plugins use ``hookimpl`` to implement hooks from :mod:`kernel.hookspecs` and the
types below; they never reach into other kernel modules' private parts.
"""

from __future__ import annotations

import pluggy

from kernel.agents import Agent
from kernel.auth import is_admin, public
from kernel.errors import ApiError, error_body
from kernel.observe import Observer, RequestInfo
from kernel.providers import NoOptions, ProviderKind
from kernel.store import Migration, Schema, Store, Transaction
from kernel.tools import RequestTool, ToolContext, ToolInfo, ToolKind, ToolOutput, ToolSet, model_tool_name
from kernel.types import (
    ApprovalRequest,
    ApprovalRequested,
    ApprovalResponse,
    Failed,
    FilePart,
    Finished,
    ImagePart,
    Item,
    Limits,
    Message,
    Provider,
    ProviderError,
    Reasoning,
    ReasoningDelta,
    RunError,
    RunEvent,
    ServerCallDone,
    ServerCallStart,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    ToolChoice,
    ToolListing,
    ToolResult,
    ToolsListed,
    ToolSpec,
    Turn,
    Usage,
)

hookimpl = pluggy.HookimplMarker("kernel")

__all__ = [
    "Agent",
    "ApiError",
    "ApprovalRequest",
    "ApprovalRequested",
    "ApprovalResponse",
    "Failed",
    "FilePart",
    "Finished",
    "ImagePart",
    "Item",
    "Limits",
    "Message",
    "Migration",
    "NoOptions",
    "Observer",
    "Provider",
    "ProviderError",
    "ProviderKind",
    "Reasoning",
    "ReasoningDelta",
    "RequestInfo",
    "RequestTool",
    "RunError",
    "RunEvent",
    "Schema",
    "ServerCallDone",
    "ServerCallStart",
    "Store",
    "TextDelta",
    "TextPart",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallDone",
    "ToolCallStart",
    "ToolChoice",
    "ToolContext",
    "ToolInfo",
    "ToolKind",
    "ToolListing",
    "ToolOutput",
    "ToolResult",
    "ToolSet",
    "ToolSpec",
    "ToolsListed",
    "Transaction",
    "Turn",
    "Usage",
    "error_body",
    "hookimpl",
    "is_admin",
    "model_tool_name",
    "public",
]
