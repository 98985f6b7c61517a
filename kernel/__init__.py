"""The agent gateway's microkernel: the public surface plugins import.

Plugins use ``hookimpl`` to implement hooks from :mod:`kernel.hookspecs` and the
types below; they never reach into other kernel modules' private parts.
"""

from __future__ import annotations

import pluggy

from kernel.agents import Agent
from kernel.auth import public
from kernel.errors import ApiError, error_body
from kernel.observe import Observer, RequestInfo
from kernel.providers import NoOptions, ProviderKind
from kernel.types import (
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
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    ToolSpec,
    Turn,
    Usage,
)

hookimpl = pluggy.HookimplMarker("kernel")

__all__ = [
    "Agent", "ApiError", "Failed", "FilePart", "Finished", "ImagePart", "Item", "Limits", "Message",
    "NoOptions", "Observer", "Provider", "ProviderError", "ProviderKind", "Reasoning", "ReasoningDelta",
    "RequestInfo", "RunError", "RunEvent", "TextDelta", "TextPart", "ToolCall", "ToolCallDelta", "ToolCallDone",
    "ToolCallStart", "ToolChoice", "ToolResult", "ToolSpec", "Turn", "Usage", "error_body", "hookimpl", "public",
]
