"""Query arguments and JSON answers shared by the plugin's read views.

The response, listing and conversation views all take ``limit``/``order``/``after``
pages and flags from the query string and answer JSON; one parser each, so every view
gives the same 400 for the same mistake, naming the argument.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quart import Response

from kernel import ApiError

DEFAULT_PAGE = 20
MAX_PAGE = 100
ORDERS = ("asc", "desc")


@dataclass(frozen=True)
class PageQuery:
    """``limit`` 1-100 (20), ``order`` asc/desc (desc), ``after`` a cursor id or None."""

    limit: int
    order: str
    after: str | None


def page_query(args: Mapping[str, str]) -> PageQuery:
    """The page arguments of a list request; a 400 naming the argument when one is invalid."""
    return PageQuery(limit=int_arg(args, "limit", default=DEFAULT_PAGE, low=1, high=MAX_PAGE),
                     order=choice_arg(args, "order", ORDERS, default="desc"), after=args.get("after") or None)


def int_arg(args: Mapping[str, str], name: str, *, default: int, low: int, high: int | None) -> int:
    value = args.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ApiError(400, f"invalid value for '{name}': {value!r}; expected an integer {bounds}", param=name,
                       code="invalid_value")
    return number


def choice_arg(args: Mapping[str, str], name: str, choices: tuple[str, ...], *, default: str) -> str:
    value = args.get(name, default)
    if value not in choices:
        expected = " or ".join(repr(c) for c in choices) if len(choices) == 2 else f"one of {', '.join(choices)}"
        raise ApiError(400, f"invalid value for '{name}': {value!r}; expected {expected}", param=name,
                       code="invalid_value")
    return value


def bool_arg(args: Mapping[str, str], name: str) -> bool:
    value = args.get(name)
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ApiError(400, f"invalid value for '{name}': {value!r}; expected true or false", param=name,
                   code="invalid_value")


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), status=status,
                    mimetype="application/json")


def response_not_found(response_id: str) -> ApiError:
    return ApiError(404, f"response {response_id!r} was not found (it may have been created with store: false, "
                    "deleted or expired, or belong to another API key)", param="response_id",
                    code="response_not_found")
