"""The agent table and request routing to an agent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kernel.errors import ApiError

# The model field may name an agent as ``agent:<id>``; clawdbot-era clients send these.
MODEL_PREFIXES = ("agent:", "openclaw:", "clawdbot:", "moltbot:")
AGENT_HEADERS = ("x-agent-id", "x-openclaw-agent-id", "x-clawdbot-agent-id", "x-moltbot-agent-id")
_AGENT_HEADER_NAMES = frozenset(AGENT_HEADERS)


@dataclass(frozen=True)
class Agent:
    """One configured agent: who answers, with which provider and model."""

    name: str
    provider: str
    model: str | None = None
    instructions: str = ""
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    # Names of the [tools.NAME] sets the agent loop offers the model.
    tools: tuple[str, ...] = ()
    max_tool_iterations: int = 10


class AgentTable:
    """Agents by name, plus the default; routing never guesses silently."""

    def __init__(self, agents: dict[str, Agent], default: str) -> None:
        self.agents = agents
        self.default = default

    def __contains__(self, name: str) -> bool:
        return name in self.agents

    def get(self, name: str) -> Agent:
        """The agent, or a 404 listing the known agents."""
        agent = self.agents.get(name)
        if agent is None:
            known = ", ".join(sorted(self.agents)) or "(none)"
            raise ApiError(
                404,
                f"agent {name!r} does not exist; known agents: {known}",
                param="model",
                code="model_not_found",
            )
        return agent

    def resolve(self, model: str | None, headers: Mapping[str, str]) -> Agent:
        """Pick the agent for a request.

        Order: an ``x-agent-id`` header (or its legacy aliases); then ``model`` as
        ``agent:<id>`` (legacy prefixes accepted) or a bare agent name; otherwise the
        default agent. A model string that is neither (e.g. ``gpt-4o``) goes to the
        default agent, whose provider may use it as the upstream model name.
        """
        # One pass over the names first: most requests send none of these, and a missing
        # name costs Werkzeug's case-insensitive lookup a raised and caught KeyError.
        if any(name.lower() in _AGENT_HEADER_NAMES for name in headers.keys()):
            for header in AGENT_HEADERS:
                value = headers.get(header)
                if value:
                    return self.get(value.strip())
        if model:
            for prefix in MODEL_PREFIXES:
                if model.startswith(prefix):
                    return self.get(model[len(prefix):])
            if model in self.agents:
                return self.agents[model]
        return self.get(self.default)
