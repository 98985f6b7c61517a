"""What the overview page shows, read from the kernel's public state (never from another plugin)."""

from __future__ import annotations

import importlib.metadata as md
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel.runtime import Kernel

log = logging.getLogger("plugins.console")


def gateway_version() -> str:
    try:
        return md.version("agentkernel")
    except md.PackageNotFoundError:
        return "unknown"


def plugins(kernel: Kernel) -> list[dict[str, Any]]:
    """Every installed plugin as ``kernel plugins list`` shows it (enabled first)."""
    rows = [record.as_dict() for record in kernel.plugins.values()]
    return sorted(rows, key=lambda r: (not r["enabled"], r["name"]))


def agents(kernel: Kernel) -> list[dict[str, Any]]:
    """Agents with their provider, the provider's kind, model and configured tools."""
    rows = []
    for agent in sorted(kernel.agents.agents.values(), key=lambda a: a.name):
        table = kernel.settings.providers.get(agent.provider, {})
        tools = getattr(agent, "tools", None) or []
        rows.append({
            "name": agent.name, "provider": agent.provider, "kind": table.get("kind", agent.provider),
            "model": agent.model or table.get("model") or "(provider default)",
            "tools": [getattr(t, "name", str(t)) for t in tools], "description": agent.description,
            "default": agent.name == kernel.settings.kernel.default_agent,
        })
    return rows


def providers(kernel: Kernel) -> list[dict[str, Any]]:
    """Each provider with what its optional ``health()`` reports (e.g. model loaded, queue depth)."""
    rows = []
    for name, provider in sorted(kernel.providers.items()):
        table = kernel.settings.providers.get(name, {})
        health: dict[str, Any] | None = None
        report = getattr(provider, "health", None)
        if callable(report):
            try:
                health = dict(report())
            except Exception as exc:  # a broken report must not break the page
                log.warning("console: provider %r health() failed: %s", name, exc)
                health = {"ok": False, "error": f"health() failed: {type(exc).__name__}"}
        rows.append({"name": name, "kind": table.get("kind", name), "health": health})
    return rows


def store(kernel: Kernel) -> dict[str, str]:
    """The store backend and its file (by name only: full paths stay on the server)."""
    backend = getattr(kernel.store, "backend", None) or "sqlite"
    path = getattr(kernel.store, "path", None)
    return {"backend": str(backend), "where": path.name if path is not None else ""}
