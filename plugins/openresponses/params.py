"""Request parameters besides the input: ``tools``, ``tool_choice`` and ``text``.

Each parser returns what the kernel's turn needs and the exact shape the
``ResponseResource`` echoes (tools always in the flat Responses shape).
"""

from __future__ import annotations

from typing import Any

from kernel import ApiError, ToolChoice, ToolSpec
from kernel.schema_check import check_json_schema
from plugins.openresponses import models as m
from plugins.openresponses.server_tools import SERVER_TOOL_TYPES

# --------------------------------------------------------------------------- tools


def parse_tools(value: Any) -> tuple[list[ToolSpec], list[dict[str, Any]]]:
    """``tools`` (flat or nested function tools) -> (tool specs, the flat shape to echo)."""
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise ApiError(400, f"invalid type for 'tools': expected an array, got {m.type_name(value)}",
                       param="tools", code="invalid_type")
    specs: list[ToolSpec] = []
    echo: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, raw in enumerate(value):
        at = f"tools[{i}]"
        if not isinstance(raw, dict):
            raise ApiError(400, f"invalid type for '{at}': expected a tool object, got {m.type_name(raw)}",
                           param=at, code="invalid_type")
        if raw.get("type") in SERVER_TOOL_TYPES:
            continue  # a server-side tool: built by the kernel's tool kinds (server_tools.attach_server_tools)
        if raw.get("type") != "function":
            kind = raw.get("type")
            raise ApiError(400, f"unsupported tool type {kind!r} at '{at}.type'; only function tools "
                           "({type: 'function', name, parameters}) are supported", param=f"{at}.type",
                           code="invalid_value")
        if "function" in raw and "name" not in raw:
            nested = m.validate(m.NestedFunctionTool, raw, at)
            fn: m.FunctionTool | m.NestedFunction = nested.function
            name_at = f"{at}.function.name"
        else:
            fn = m.validate(m.FunctionTool, raw, at)
            name_at = f"{at}.name"
        if fn.name in seen:
            raise ApiError(400, f"duplicate tool name {fn.name!r} at '{name_at}'; tool names must be unique",
                           param=name_at, code="invalid_value")
        seen.add(fn.name)
        if fn.parameters is not None:
            check_json_schema(fn.parameters, f"{name_at.rsplit('.', 1)[0]}.parameters")
        parameters = fn.parameters if fn.parameters is not None else {"type": "object", "properties": {}}
        specs.append(ToolSpec(name=fn.name, parameters=parameters, description=fn.description, strict=fn.strict))
        echo.append({"type": "function", "name": fn.name, "description": fn.description,
                     "parameters": fn.parameters, "strict": fn.strict})
    return specs, echo


def parse_tool_choice(value: Any, tools: list[ToolSpec]) -> tuple[ToolChoice, Any]:
    """``tool_choice`` in any of its shapes -> (the kernel's ToolChoice, the shape to echo)."""
    names = {t.name for t in tools}
    if value is None:
        return ToolChoice(), "auto"
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise ApiError(400, f"invalid value for 'tool_choice': {value!r}; expected 'none', 'auto', 'required' "
                           "or an object", param="tool_choice", code="invalid_value")
        if value == "required" and not tools:
            raise ApiError(400, "tool_choice 'required' needs at least one tool in 'tools'",
                           param="tool_choice", code="invalid_value")
        return ToolChoice(mode=value), value  # type: ignore[arg-type]
    if not isinstance(value, dict):
        raise ApiError(400, f"invalid type for 'tool_choice': got {m.type_name(value)}", param="tool_choice",
                       code="invalid_type")
    kind = value.get("type")
    if kind == "function":
        fn = value.get("function")
        name, name_at = (fn.get("name"), "tool_choice.function.name") if isinstance(fn, dict) and "name" not in value \
            else (value.get("name"), "tool_choice.name")
        _known_tool(name, names, name_at)
        return ToolChoice(mode="required", function=name), {"type": "function", "name": name}
    if kind == "allowed_tools":
        listed = value.get("tools")
        if not isinstance(listed, list) or not 1 <= len(listed) <= 128:
            raise ApiError(400, "'tool_choice.tools' must be an array of 1 to 128 {type: 'function', name} objects",
                           param="tool_choice.tools", code="invalid_value")
        allowed: list[str] = []
        for i, entry in enumerate(listed):
            at = f"tool_choice.tools[{i}]"
            if not isinstance(entry, dict) or entry.get("type") != "function":
                raise ApiError(400, f"'{at}' must be {{type: 'function', name}}", param=at, code="invalid_value")
            _known_tool(entry.get("name"), names, f"{at}.name")
            allowed.append(entry["name"])
        mode = value.get("mode", "auto")
        if mode not in ("none", "auto", "required"):
            raise ApiError(400, f"invalid value for 'tool_choice.mode': {mode!r}; expected 'none', 'auto' or "
                           "'required'", param="tool_choice.mode", code="invalid_value")
        echo = {"type": "allowed_tools", "tools": [{"type": "function", "name": n} for n in allowed], "mode": mode}
        return ToolChoice(mode=mode, allowed=allowed), echo
    raise ApiError(400, f"unsupported tool_choice type {kind!r}; expected 'function' or 'allowed_tools'",
                   param="tool_choice.type", code="invalid_value")


def _known_tool(name: Any, names: set[str], at: str) -> None:
    if not isinstance(name, str) or not name:
        raise ApiError(400, f"missing required parameter: '{at}'", param=at, code="missing_required_parameter")
    if name not in names:
        known = ", ".join(sorted(names)) or "(no tools were given)"
        raise ApiError(400, f"'{at}' names {name!r}, which is not in 'tools'; defined tools: {known}",
                       param=at, code="invalid_value")


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
