"""A small, safe template renderer for hook mappings: ``{{payload.a.b}}`` and friends.

No code is evaluated: an expression is a root name followed by field names and list
indices, looked up in plain data. Anything missing renders as an empty string, so a
template never fails at request time; templates are checked when plugins.toml loads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Roots a template may name. ``summary`` is the preset's message (empty without one).
ROOTS = ("payload", "headers", "query", "path", "now", "summary")
# Roots that take a field path; the others are plain values.
PATH_ROOTS = ("payload", "headers", "query")

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_ROOT = re.compile(r"[a-z]+")
_STEP = re.compile(r"\.([^.\[\]{}\s]+)|\[(\d+)\]")

# Headers that carry credentials: never shown to templates, transforms or the model.
SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-hook-token",
})


class TemplateError(ValueError):
    """A template names something that can never exist (checked at config time)."""


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed ``{{root.step.step}}``; steps are field names (str) or indices (int)."""

    root: str
    steps: tuple[str | int, ...] = ()


def parse_expression(text: str) -> Expression:
    """Parse ``payload.commits[0].message`` (or ``payload.commits.0.message``)."""
    text = text.strip()
    m = _ROOT.match(text)
    if m is None or m.group(0) not in ROOTS:
        raise TemplateError(f"{{{{{text}}}}}: must start with one of {', '.join(ROOTS)}")
    root = m.group(0)
    steps: list[str | int] = []
    pos = m.end()
    while pos < len(text):
        step = _STEP.match(text, pos)
        if step is None:
            raise TemplateError(f"{{{{{text}}}}}: cannot read {text[pos:]!r}; use .field or [index]")
        steps.append(step.group(1) if step.group(1) is not None else int(step.group(2)))
        pos = step.end()
    if root in PATH_ROOTS and not steps and root != "payload":
        raise TemplateError(f"{{{{{text}}}}}: name a field, e.g. {{{{{root}.name}}}}")
    if root not in PATH_ROOTS and steps:
        raise TemplateError(f"{{{{{text}}}}}: {root} has no fields")
    return Expression(root, tuple(steps))


def check_template(template: str) -> None:
    """Raise :class:`TemplateError` if any placeholder in ``template`` is malformed."""
    for m in _PLACEHOLDER.finditer(template):
        parse_expression(m.group(1))


def is_template(text: str) -> bool:
    """True if ``text`` has placeholders (so it can only be checked at request time)."""
    return _PLACEHOLDER.search(text) is not None


@dataclass
class TemplateContext:
    """What a template can see. ``headers`` keys are lower-case and exclude secrets."""

    payload: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    path: str = ""
    now: str = ""
    summary: str = ""

    def lookup(self, expr: Expression) -> Any:
        """The value an expression names, or None when anything along the way is missing."""
        if expr.root == "headers":
            value: Any = {k.lower(): v for k, v in self.headers.items() if k.lower() not in SECRET_HEADERS}
            steps: tuple[str | int, ...] = (str(expr.steps[0]).lower(), *expr.steps[1:])
        else:
            value = getattr(self, expr.root)
            steps = expr.steps
        for step in steps:
            value = _step(value, step)
            if value is None:
                return None
        return value


def _step(value: Any, step: str | int) -> Any:
    if isinstance(value, Mapping):
        return value.get(str(step))
    if isinstance(value, list):
        index = step if isinstance(step, int) else (int(step) if step.isdigit() else None)
        if index is not None and 0 <= index < len(value):
            return value[index]
    return None


def to_text(value: Any) -> str:
    """How a looked-up value appears in text: strings as is, other JSON compactly."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render(template: str, ctx: TemplateContext) -> str:
    """Fill every placeholder; malformed or missing ones render as an empty string."""

    def fill(m: re.Match[str]) -> str:
        try:
            expr = parse_expression(m.group(1))
        except TemplateError:
            return ""
        return to_text(ctx.lookup(expr))

    return _PLACEHOLDER.sub(fill, template)


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers as a lower-cased dict without credentials (for templates and transforms)."""
    out: dict[str, str] = {}
    for key, value in headers.items():
        k = key.lower()
        if k not in SECRET_HEADERS:
            out[k] = value if k not in out else f"{out[k]}, {value}"
    return out
