"""The request's ``tools``: function, namespace, custom (freeform) and hosted tools.

Every tool becomes a neutral :class:`kernel.ToolSpec` under one *model-facing* name
(unique across the request), and :class:`ToolRoute` maps that name back to what the
client declared, so a call comes back in the shape the client expects:

* ``function``: the name as given.
* ``namespace`` (``{type, name, description, tools: [...]}``, e.g. Codex's
  ``multi_agent_v1``): each inner tool is offered as ``<namespace>__<name>`` and its
  call comes back as ``{"type": "function_call", "name": <name>, "namespace": <namespace>}``,
  which is how OpenAI returns namespaced calls and how Codex routes them.
* ``custom``: a freeform tool whose input is one string, optionally constrained by a
  grammar (``lark`` or ``regex``); calls come back as ``custom_tool_call`` items.
* hosted tool types (:mod:`plugins.openresponses.hosted`): omitted or rejected by policy.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from kernel import ApiError, ToolSpec
from kernel.schema_check import check_json_schema
from plugins.openresponses import models as m
from plugins.openresponses.hosted import HOSTED_TOOL_TYPES, HostedToolsPolicy, hosted_tool
from plugins.openresponses.server_tools import SERVER_TOOL_TYPES

NAMESPACE_SEPARATOR = "__"
MAX_TOOLS = 512
MAX_GRAMMAR = 100_000


@dataclass(frozen=True, slots=True)
class ToolRoute:
    """What the client declared behind one model-facing tool name."""

    type: Literal["function", "custom"]
    name: str
    namespace: str | None = None


@dataclass
class ParsedTools:
    """The request's tools: for the model (specs), for the echo, and the way back (routes)."""

    specs: list[ToolSpec] = field(default_factory=list)
    echo: list[dict[str, Any]] = field(default_factory=list)
    routes: dict[str, ToolRoute] = field(default_factory=dict)
    # Hosted tool types left out of the model's view, in request order, without repeats.
    omitted: list[str] = field(default_factory=list)

    def model_name(self, name: str, namespace: str | None = None, kind: str | None = None) -> str | None:
        """The model-facing name of the client's tool ``name`` (in ``namespace``), or None."""
        for model_name, route in self.routes.items():
            if route.name == name and route.namespace == namespace and (kind is None or route.type == kind):
                return model_name
        return None


def parse_tools(value: Any, policy: HostedToolsPolicy = "omit") -> ParsedTools:
    """``tools`` -> :class:`ParsedTools`; 400 naming the field on the first problem."""
    out = ParsedTools()
    if value is None:
        return out
    if not isinstance(value, list):
        raise ApiError(400, f"invalid type for 'tools': expected an array, got {m.type_name(value)}",
                       param="tools", code="invalid_type")
    if len(value) > MAX_TOOLS:
        raise ApiError(400, f"'tools' has {len(value)} entries; at most {MAX_TOOLS} are accepted",
                       param="tools", code="array_above_max_length")
    for i, raw in enumerate(value):
        at = f"tools[{i}]"
        if not isinstance(raw, dict):
            raise ApiError(400, f"invalid type for '{at}': expected a tool object, got {m.type_name(raw)}",
                           param=at, code="invalid_type")
        kind = raw.get("type")
        if kind == "function":
            _add(out, _function(raw, at), at, echo=True)
        elif kind == "custom":
            _add(out, _custom(raw, at), at, echo=True)
        elif kind == "namespace":
            _namespace(out, raw, at)
        elif kind in SERVER_TOOL_TYPES:
            continue  # run server-side by a kernel tool kind (server_tools.attach_server_tools)
        elif isinstance(kind, str) and kind in HOSTED_TOOL_TYPES:
            hosted_tool(kind, policy, at)
            if kind not in out.omitted:
                out.omitted.append(kind)
            out.echo.append(dict(raw))
        else:
            raise ApiError(400, f"unsupported tool type {kind!r} at '{at}.type'; expected 'function', 'custom', "
                           f"'namespace' or a hosted tool type ({', '.join(sorted(HOSTED_TOOL_TYPES))})",
                           param=f"{at}.type", code="invalid_value")
    return out


# --------------------------------------------------------------------------- one tool each


def _function(raw: dict[str, Any], at: str) -> tuple[ToolSpec, dict[str, Any], str]:
    if "function" in raw and "name" not in raw:
        fn: m.FunctionTool | m.NestedFunction = m.validate(m.NestedFunctionTool, raw, at).function
        base = f"{at}.function"
    else:
        fn = m.validate(m.FunctionTool, raw, at)
        base = at
    if fn.parameters is not None:
        check_json_schema(fn.parameters, f"{base}.parameters")
    parameters = fn.parameters if fn.parameters is not None else {"type": "object", "properties": {}}
    spec = ToolSpec(name=fn.name, parameters=parameters, description=fn.description, strict=fn.strict)
    echo = {"type": "function", "name": fn.name, "description": fn.description, "parameters": fn.parameters,
            "strict": fn.strict}
    return spec, echo, f"{base}.name"


def _custom(raw: dict[str, Any], at: str) -> tuple[ToolSpec, dict[str, Any], str]:
    tool = m.validate(m.CustomTool, raw, at)
    fmt = custom_format(tool.format, f"{at}.format")
    spec = ToolSpec(name=tool.name, description=tool.description, tool_kind="custom", format=fmt,
                    parameters={"type": "object", "properties": {}})
    echo: dict[str, Any] = {"type": "custom", "name": tool.name, "format": fmt}
    if tool.description is not None:
        echo["description"] = tool.description
    return spec, echo, f"{at}.name"


def custom_format(value: Any, at: str) -> dict[str, Any]:
    """A custom tool's ``format``: ``{"type": "text"}`` (the default) or a lark/regex grammar."""
    if value is None:
        return {"type": "text"}
    if not isinstance(value, dict):
        raise ApiError(400, f"invalid type for '{at}': expected an object, got {m.type_name(value)}",
                       param=at, code="invalid_type")
    kind = value.get("type")
    if kind == "text":
        return {"type": "text"}
    if kind != "grammar":
        raise ApiError(400, f"unsupported custom tool format {kind!r} at '{at}.type'; expected 'text' or "
                       "'grammar'", param=f"{at}.type", code="invalid_value")
    grammar = m.validate(m.GrammarFormat, value, at)
    if len(grammar.definition) > MAX_GRAMMAR:
        raise ApiError(400, f"'{at}.definition' is longer than {MAX_GRAMMAR} characters",
                       param=f"{at}.definition", code="string_above_max_length")
    if grammar.syntax == "regex":
        try:
            re.compile(grammar.definition)
        except re.error as exc:
            raise ApiError(400, f"'{at}.definition' is not a valid regular expression: {exc}",
                           param=f"{at}.definition", code="invalid_value") from None
    return {"type": "grammar", "syntax": grammar.syntax, "definition": grammar.definition}


def _namespace(out: ParsedTools, raw: dict[str, Any], at: str) -> None:
    ns = m.validate(m.NamespaceTool, raw, at)
    echo_tools: list[dict[str, Any]] = []
    for j, inner in enumerate(ns.tools):
        inner_at = f"{at}.tools[{j}]"
        if not isinstance(inner, dict) or inner.get("type") not in ("function", "custom"):
            kind = inner.get("type") if isinstance(inner, dict) else m.type_name(inner)
            raise ApiError(400, f"unsupported tool type {kind!r} at '{inner_at}.type' inside a namespace; "
                           "expected 'function' or 'custom'", param=f"{inner_at}.type", code="invalid_value")
        spec, echo, _ = (_function if inner["type"] == "function" else _custom)(inner, inner_at)
        client_name = spec.name
        spec.name = _unique(f"{ns.name}{NAMESPACE_SEPARATOR}{client_name}", out.routes)
        if ns.description:
            spec.description = f"({ns.name}: {ns.description}) {spec.description or ''}".strip()
        out.specs.append(spec)
        out.routes[spec.name] = ToolRoute(type=spec.tool_kind, name=client_name, namespace=ns.name)
        echo_tools.append(echo)
    echo_ns: dict[str, Any] = {"type": "namespace", "name": ns.name, "tools": echo_tools}
    if ns.description is not None:
        echo_ns["description"] = ns.description
    out.echo.append(echo_ns)


def _add(out: ParsedTools, built: tuple[ToolSpec, dict[str, Any], str], at: str, *, echo: bool) -> None:
    spec, echo_shape, name_at = built
    if spec.name in out.routes:
        raise ApiError(400, f"duplicate tool name {spec.name!r} at '{name_at}'; tool names must be unique",
                       param=name_at, code="invalid_value")
    out.specs.append(spec)
    out.routes[spec.name] = ToolRoute(type=spec.tool_kind, name=spec.name)
    if echo:
        out.echo.append(echo_shape)


def _unique(name: str, taken: dict[str, ToolRoute]) -> str:
    """``name`` within the 64-character function-name limit and not yet taken (a short hash otherwise)."""
    if len(name) <= 64 and name not in taken:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()
    for width in range(6, 17):
        candidate = f"{name[:64 - width - 1]}_{digest[:width]}"
        if candidate not in taken:
            return candidate
    raise ApiError(400, f"cannot give tool {name!r} a unique name", param="tools", code="invalid_value")
