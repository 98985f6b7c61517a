"""Mapped hooks: payload transforms, choosing a mapping, and rendering its templates.

A request to ``<base>/<path>`` goes through, in order: every plugin's
``transform_hook_payload`` (which may rewrite or drop it), the first mapping for that
path whose ``match`` rules hold, its preset (if any), and its templates.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kernel import ApiError
from kernel.plugins import per_plugin
from plugins.hooks import github
from plugins.hooks.service import AgentJob, HooksService, WakeMode
from plugins.hooks.settings import WAKE_MODES, MappingSettings
from plugins.hooks.templates import Expression, TemplateContext, is_template, parse_expression, render, to_text

if TYPE_CHECKING:
    import pluggy

log = logging.getLogger("kernel.hooks")

PRESET_NAMES = {"github": "GitHub"}


@dataclass
class Skipped:
    """The request was accepted but nothing runs (no mapping matched, or the preset ignores it)."""

    reason: str


@dataclass
class WakeJob:
    text: str
    mode: WakeMode


async def run_transforms(pm: pluggy.PluginManager, hook: str, payload: dict[str, Any],
                         headers: Mapping[str, str]) -> dict[str, Any] | None:
    """Chain every ``transform_hook_payload`` in registration order; None means drop."""
    current: dict[str, Any] | None = payload
    for plugin_name, fn in per_plugin(pm, "transform_hook_payload"):
        args = {"hook_name": hook, "payload": current, "headers": dict(headers)}
        params = inspect.signature(fn).parameters  # pluggy lets an impl take a subset of the args
        try:
            result = fn(**{k: v for k, v in args.items() if k in params})
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            log.exception("plugin %r: transform_hook_payload failed for hook %r", plugin_name, hook)
            raise ApiError(500, f"plugin {plugin_name!r} failed to transform the payload of hook {hook!r}: "
                                f"{type(exc).__name__}", code="transform_failed") from None
        if result is None:
            log.info("hook %r: payload dropped by plugin %r", hook, plugin_name)
            return None
        if not isinstance(result, dict):
            raise ApiError(500, f"plugin {plugin_name!r}: transform_hook_payload returned "
                                f"{type(result).__name__}; expected a dict or None", code="transform_failed")
        current = result
    return current


class MappingTable:
    """The configured mappings by path, with their match rules parsed once."""

    def __init__(self, mappings: list[MappingSettings]) -> None:
        self.by_path: dict[str, list[tuple[MappingSettings, list[tuple[Expression, list[str]]]]]] = {}
        for m in mappings:
            rules = [(parse_expression(k), [v] if isinstance(v, str) else list(v)) for k, v in m.match.items()]
            self.by_path.setdefault(m.path, []).append((m, rules))

    def __contains__(self, path: str) -> bool:
        return path in self.by_path

    def paths(self) -> list[str]:
        return sorted(self.by_path)

    def rate_limit(self, path: str) -> int | None:
        """The mapping's own limit (the first mapping for a path that sets one)."""
        return next((m.rate_limit_per_minute for m, _ in self.by_path.get(path, [])
                     if m.rate_limit_per_minute is not None), None)

    def select(self, path: str, ctx: TemplateContext) -> MappingSettings | None:
        """The first mapping for ``path`` whose every match rule holds."""
        for mapping, rules in self.by_path.get(path, []):
            if all(to_text(ctx.lookup(expr)) in allowed for expr, allowed in rules):
                return mapping
        return None


def build_context(payload: dict[str, Any], headers: Mapping[str, str], query: Mapping[str, str],
                  path: str) -> TemplateContext:
    """The template context of one request (headers already stripped of credentials)."""
    return TemplateContext(payload=payload, headers=headers, query=query, path=path,
                           now=datetime.now(UTC).isoformat(timespec="seconds"))


def apply_preset(mapping: MappingSettings, ctx: TemplateContext) -> Skipped | None:
    """Fill ``ctx.summary`` from the mapping's preset, or say why the preset skips it."""
    if mapping.preset == "github":
        event = ctx.headers.get("x-github-event", "")
        summary = github.summarise(event, ctx.payload)
        if summary is None:
            return Skipped(f"GitHub event {event or '(no X-GitHub-Event header)'!r} is not handled by the "
                           f"github preset; handled: {', '.join(github.supported_events())}")
        ctx.summary = summary
    return None


def plan(service: HooksService, mapping: MappingSettings, ctx: TemplateContext) -> AgentJob | WakeJob:
    """Render a mapping into the action it asks for (400 naming the option if a value is unusable)."""
    where = f"mapping {mapping.path!r}"
    message = render(mapping.message if mapping.message is not None else "{{summary}}", ctx).strip()
    if not message:
        raise ApiError(400, f"{where}: the message template rendered empty for this payload", param="message",
                       code="empty_message")
    wake_mode = render(mapping.wake_mode, ctx).strip()
    if wake_mode not in WAKE_MODES:
        raise ApiError(400, f"{where}: wake_mode rendered {wake_mode!r}; expected one of {', '.join(WAKE_MODES)}",
                       param="wake_mode", code="invalid_field")
    mode: WakeMode = "now" if wake_mode == "now" else "next-heartbeat"
    if mapping.action == "wake":
        return WakeJob(text=message, mode=mode)
    default_name = PRESET_NAMES.get(mapping.preset or "", mapping.path)
    name = render(mapping.name, ctx).strip() if mapping.name else ""
    agent = render(mapping.agent, ctx).strip() if mapping.agent else ""
    key = render(mapping.session_key, ctx).strip() if mapping.session_key else ""
    model = render(mapping.model, ctx).strip() if mapping.model else ""
    return AgentJob(
        hook=mapping.path,
        name=name or default_name,
        message=message,
        agent=service.check_agent(agent, param="agent") if agent else service.default_agent,
        # A key rendered from request data is as untrusted as one sent to /agent: same prefix rule.
        session_key=(service.check_session_key(key, from_request=is_template(mapping.session_key or ""))
                     if key else f"hook:{mapping.path}:{uuid.uuid4().hex}"),
        wake_mode=mode,
        model=model or None,
        timeout_seconds=mapping.timeout_seconds,
        summary_to_main=mapping.summary_to_main,
    )
