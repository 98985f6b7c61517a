"""Small typed readers for JSON request fields; every failure is a 400 naming the field path."""

from __future__ import annotations

from typing import Any

from kernel import ApiError

_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


def invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    """A 400 whose message starts with the offending path, as OpenAI's do."""
    return ApiError(400, f"Invalid '{param}': {message}", param=param, code=code)


def describe(value: Any) -> str:
    """The JSON type name of ``value`` for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return _JSON_NAMES.get(type(value), type(value).__name__)


def want(value: Any, kind: type, param: str) -> Any:
    """``value`` if it is of JSON type ``kind`` (bools are never numbers), else a 400."""
    if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
        return value
    raise invalid(param, f"expected {_JSON_NAMES.get(kind, kind.__name__)}, but got {describe(value)}.",
                  code="invalid_type")


def opt(body: dict[str, Any], key: str, kind: type, param: str | None = None) -> Any:
    """An optional field: ``None`` when absent or null, else checked like :func:`want`."""
    value = body.get(key)
    return None if value is None else want(value, kind, param or key)


def number(body: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    """An optional number within ``[lo, hi]``."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(key, f"expected a number, but got {describe(value)}.", code="invalid_type")
    if not lo <= value <= hi:
        raise invalid(key, f"{value!r} is out of range; expected a number from {lo:g} to {hi:g}.")
    return float(value)


def integer(body: dict[str, Any], key: str, lo: int | None = None) -> int | None:
    """An optional integer of at least ``lo`` (any integer when ``lo`` is None)."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(key, f"expected an integer, but got {describe(value)}.", code="invalid_type")
    if lo is not None and value < lo:
        raise invalid(key, f"{value} is too small; expected an integer of at least {lo}.")
    return value


def required(obj: dict[str, Any], key: str, kind: type, param: str) -> Any:
    """A field that must be present, non-null and of JSON type ``kind``."""
    if obj.get(key) is None:
        raise ApiError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    return want(obj[key], kind, param)
