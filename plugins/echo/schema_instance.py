"""Build a small value that is valid for a JSON schema (for forced tool calls)."""

from __future__ import annotations

import math
from typing import Any


def instance_for(schema: dict[str, Any], text: str = "", depth: int = 0, root: dict[str, Any] | None = None) -> Any:
    """A deterministic instance of ``schema``; strings take ``text`` where allowed.

    Covers the schema features tools use in practice: type (or a list of types),
    enum/const, local ``$ref`` (``#/$defs/...``, ``#/definitions/...``),
    properties/required, items/minItems/maxItems/uniqueItems, numeric
    minimum/maximum (inclusive and exclusive) and multipleOf, string
    minLength/maxLength, anyOf/oneOf/allOf (first branch).
    """
    root = schema if root is None else root
    if depth > 8:
        return None
    if isinstance(schema.get("$ref"), str):
        target = _resolve(schema["$ref"], root)
        if target is not None:
            return instance_for({**target, **{k: v for k, v in schema.items() if k != "$ref"}}, text, depth + 1, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return instance_for(schema[key][0], text, depth + 1, root)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for sub in schema["allOf"]:
            merged.update(sub)
        return instance_for(merged, text, depth + 1, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {name: instance_for(props.get(name, {}), text, depth + 1, root) for name in required}
    if kind == "array":
        return _array(schema, text, depth, root)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, text or "echo")


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any] | None:
    """Follow a local JSON pointer (``#/$defs/Name``); remote references are not fetched."""
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, dict) else None


def _string(schema: dict[str, Any], value: str) -> str:
    lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
    if len(value) < lo:
        value = value + "x" * (lo - len(value))
    if hi is not None:
        value = value[: int(hi)]
    return value


def _array(schema: dict[str, Any], text: str, depth: int, root: dict[str, Any]) -> list[Any]:
    items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
    count = int(schema.get("minItems", 1 if items else 0))
    if "maxItems" in schema:
        count = min(count, int(schema["maxItems"]))
    if not schema.get("uniqueItems"):
        return [instance_for(items, text, depth + 1, root) for _ in range(count)]
    out: list[Any] = []
    for i in range(count):  # distinct values: vary the text, the enum member or the number
        value = instance_for(items, f"{text} {i + 1}" if i else text, depth + 1, root)
        if items.get("enum") and i < len(items["enum"]):
            value = items["enum"][i]
        elif isinstance(value, int | float) and not isinstance(value, bool):
            value += i * (items.get("multipleOf") or 1)
        out.append(value)
    return out


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    """The first of a few natural candidates (0, the bounds, just inside them) that fits."""
    lows = [b for b in (schema.get("minimum"), schema.get("exclusiveMinimum")) if _is_num(b)]
    highs = [b for b in (schema.get("maximum"), schema.get("exclusiveMaximum")) if _is_num(b)]
    step = schema.get("multipleOf") if _is_num(schema.get("multipleOf")) and schema.get("multipleOf") > 0 else None
    candidates: list[float] = [0]
    for b in lows:
        candidates += [b, math.floor(b) + 1, b + 1]
    for b in highs:
        candidates += [b, math.ceil(b) - 1, b - 1]
    if lows and highs:
        candidates.append((max(lows) + min(highs)) / 2)
    if step:
        candidates += [math.ceil(b / step) * step for b in lows] + [math.floor(b / step) * step for b in highs]
        candidates += [math.ceil(b / step) * step + step for b in lows]
    for c in candidates:
        if integer and not float(c).is_integer():
            continue
        value = int(c) if integer else float(c)
        if _fits(value, schema, step):
            return value
    return int(candidates[0]) if integer else float(candidates[0])


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fits(value: float, schema: dict[str, Any], step: float | None) -> bool:
    if _is_num(schema.get("minimum")) and value < schema["minimum"]:
        return False
    if _is_num(schema.get("exclusiveMinimum")) and value <= schema["exclusiveMinimum"]:
        return False
    if _is_num(schema.get("maximum")) and value > schema["maximum"]:
        return False
    if _is_num(schema.get("exclusiveMaximum")) and value >= schema["exclusiveMaximum"]:
        return False
    if step:
        quotient = value / step
        return math.isclose(quotient, round(quotient), abs_tol=1e-9)
    return True
