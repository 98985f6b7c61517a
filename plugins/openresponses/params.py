"""Request parameters besides the input and tools: ``tool_choice`` and ``text``.

Each parser returns what the kernel's turn needs and the exact shape the
``ResponseResource`` echoes (tools always in the flat Responses shape).
"""

from __future__ import annotations

from typing import Any

from kernel import ApiError, ToolChoice
from kernel.schema_check import check_json_schema
from plugins.openresponses import models as m
from plugins.openresponses.hosted import HOSTED_TOOL_TYPES, forced_hosted
from plugins.openresponses.tools import ParsedTools

# --------------------------------------------------------------------------- tool_choice


def parse_tool_choice(value: Any, tools: ParsedTools) -> tuple[ToolChoice, Any]:
    """``tool_choice`` in any of its shapes -> (the kernel's ToolChoice, the shape to echo).

    Named tools are looked up among function, custom and namespaced tools and become
    their model-facing names; forcing a hosted tool is a 400 whatever the policy.
    """
    if value is None:
        return ToolChoice(), "auto"
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise ApiError(400, f"invalid value for 'tool_choice': {value!r}; expected 'none', 'auto', 'required' "
                           "or an object", param="tool_choice", code="invalid_value")
        if value == "required" and not tools.specs:
            raise ApiError(400, "tool_choice 'required' needs at least one function or custom tool in 'tools'"
                           + (f" (hosted tools are not run here: {', '.join(tools.omitted)})" if tools.omitted else ""),
                           param="tool_choice", code="invalid_value")
        return ToolChoice(mode=value), value  # type: ignore[arg-type]
    if not isinstance(value, dict):
        raise ApiError(400, f"invalid type for 'tool_choice': got {m.type_name(value)}", param="tool_choice",
                       code="invalid_type")
    kind = value.get("type")
    if kind in ("function", "custom"):
        name, echo = _named(value, tools, "tool_choice")
        return ToolChoice(mode="required", function=name), echo
    if kind == "allowed_tools":
        listed = value.get("tools")
        if not isinstance(listed, list) or not 1 <= len(listed) <= 128:
            raise ApiError(400, "'tool_choice.tools' must be an array of 1 to 128 {type: 'function', name} objects",
                           param="tool_choice.tools", code="invalid_value")
        mode = value.get("mode", "auto")
        if mode not in ("none", "auto", "required"):
            raise ApiError(400, f"invalid value for 'tool_choice.mode': {mode!r}; expected 'none', 'auto' or "
                           "'required'", param="tool_choice.mode", code="invalid_value")
        allowed: list[str] = []
        echo_tools: list[dict[str, Any]] = []
        for i, entry in enumerate(listed):
            at = f"tool_choice.tools[{i}]"
            if isinstance(entry, dict) and entry.get("type") in HOSTED_TOOL_TYPES:
                echo_tools.append(dict(entry))  # allowed but never offered: it is not run here
                continue
            if not isinstance(entry, dict) or entry.get("type") not in ("function", "custom"):
                raise ApiError(400, f"'{at}' must be {{type: 'function' | 'custom', name}}", param=at,
                               code="invalid_value")
            name, echo = _named(entry, tools, at)
            allowed.append(name)
            echo_tools.append(echo)
        if mode == "required" and not allowed:
            raise forced_hosted(", ".join(str(e.get("type")) for e in echo_tools), "tool_choice.tools")
        return ToolChoice(mode=mode, allowed=allowed), {"type": "allowed_tools", "tools": echo_tools, "mode": mode}
    if isinstance(kind, str) and (kind in HOSTED_TOOL_TYPES or kind.startswith("web_search")):
        raise forced_hosted(kind, "tool_choice.type")
    raise ApiError(400, f"unsupported tool_choice type {kind!r}; expected 'function', 'custom' or 'allowed_tools'",
                   param="tool_choice.type", code="invalid_value")


def _named(value: dict[str, Any], tools: ParsedTools, at: str) -> tuple[str, dict[str, Any]]:
    """A ``{type, name[, namespace]}`` reference (or Chat's ``{type, function: {name}}``) -> model name, echo."""
    kind = value.get("type")
    fn = value.get("function")
    if kind == "function" and isinstance(fn, dict) and "name" not in value:
        name, name_at = fn.get("name"), f"{at}.function.name"
    else:
        name, name_at = value.get("name"), f"{at}.name"
    if not isinstance(name, str) or not name:
        raise ApiError(400, f"missing required parameter: '{name_at}'", param=name_at,
                       code="missing_required_parameter")
    namespace = value.get("namespace")
    model_name = tools.model_name(name, namespace if isinstance(namespace, str) else None, kind)
    if model_name is None and namespace is None and name in tools.routes and tools.routes[name].type == kind:
        model_name = name  # a namespaced tool named by its model-facing name
    if model_name is None:
        known = ", ".join(sorted(f"{r.namespace}.{r.name}" if r.namespace else r.name
                                 for r in tools.routes.values() if r.type == kind)) or f"(no {kind} tools were given)"
        raise ApiError(400, f"'{name_at}' names {name!r}, which is not a {kind} tool in 'tools'; defined: {known}",
                       param=name_at, code="invalid_value")
    echo: dict[str, Any] = {"type": kind, "name": name}
    if isinstance(namespace, str):
        echo["namespace"] = namespace
    return model_name, echo


# --------------------------------------------------------------------------- text format


def parse_text(value: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``text`` -> (the turn's response_format, the ``text`` field to echo)."""
    if value is None:
        return None, {"format": {"type": "text"}}
    cfg = m.validate(m.TextConfig, value, "text")
    echo: dict[str, Any] = {}
    fmt = cfg.format
    response_format: dict[str, Any] | None = None
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        echo["format"] = {"type": "text"}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        js = m.validate(m.JsonSchemaFormat, fmt, "text.format")
        check_json_schema(js.schema_, "text.format.schema")
        strict = bool(js.strict)
        response_format = {"type": "json_schema", "name": js.name, "schema": js.schema_, "strict": strict}
        if js.description is not None:
            response_format["description"] = js.description
        # The published ResponseResource schema types the echoed schema as null.
        echo["format"] = {"type": "json_schema", "name": js.name, "description": js.description,
                          "schema": None, "strict": strict}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        response_format = {"type": "json_object"}
        echo["format"] = {"type": "json_object"}
    else:
        kind = fmt.get("type") if isinstance(fmt, dict) else m.type_name(fmt)
        raise ApiError(400, f"unsupported text format {kind!r}; expected 'text', 'json_schema' or 'json_object'",
                       param="text.format.type" if isinstance(fmt, dict) else "text.format", code="invalid_value")
    if cfg.verbosity is not None:
        echo["verbosity"] = cfg.verbosity
    return response_format, echo
