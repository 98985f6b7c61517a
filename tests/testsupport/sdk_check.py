"""Bodies and events with OpenAI extras the published spec does not define.

Custom tool calls, namespaced and hosted tools are outside the OpenResponses spec; the
official openai SDK's types are the reference for them. :func:`assert_response_valid`
parses a ``ResponseResource`` with ``openai.types.responses.Response`` *and* checks
everything the spec does define against the spec: the resource with the extras taken
out must validate. :func:`assert_event_valid` does the same for one stream event.
"""

from __future__ import annotations

import copy
from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from testsupport.spec import assert_valid, assert_valid_event, spec

_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
SPEC_ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning", "compaction"})


def spec_event_types() -> frozenset[str]:
    """Every stream event ``type`` the published spec defines."""
    doc = spec()
    schemas = doc["components"]["schemas"]
    found: set[str] = set()
    for schema in schemas.values():
        kind = schema.get("properties", {}).get("type", {}) if isinstance(schema, dict) else {}
        for value in kind.get("enum", []):
            if isinstance(value, str) and (value.startswith("response.") or value == "error"):
                found.add(value)
    return frozenset(found)


def spec_projection(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with what the spec does not define (non-function tools, extra item types) removed."""
    out = copy.deepcopy(resource)
    out["tools"] = [t for t in out.get("tools") or [] if t.get("type") == "function"]
    out["output"] = [i for i in out.get("output") or [] if i.get("type") in SPEC_ITEM_TYPES]
    choice = out.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") not in ("function", "allowed_tools"):
        out["tool_choice"] = "required"
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        choice["tools"] = [t for t in choice["tools"] if t.get("type") == "function"] or [
            {"type": "function", "name": "placeholder"}]
    return out


def assert_response_valid(resource: dict[str, Any]) -> Response:
    """Parse with the openai SDK and check the spec-defined part against the spec."""
    parsed = Response.model_validate(resource)
    assert_valid("ResponseResource", spec_projection(resource))
    return parsed


def assert_event_valid(event: dict[str, Any]) -> Any:
    """One stream event: the SDK's event union always; the spec for event types it defines."""
    parsed = _EVENT_ADAPTER.validate_python(event)
    assert parsed.type == event["type"], f"the SDK parsed {event['type']!r} as {parsed.type!r}"
    if event["type"] in spec_event_types():
        projected = dict(event)
        if "response" in projected:
            projected["response"] = spec_projection(projected["response"])
        if "item" in projected and projected["item"].get("type") not in SPEC_ITEM_TYPES:
            return parsed  # an added/done event for an item the spec does not define
        assert_valid_event(projected)
    return parsed
