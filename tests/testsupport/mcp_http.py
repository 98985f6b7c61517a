"""Small HTTP helpers for the MCP tests."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
from openai.types.responses import Response, ResponseOutputItem, ResponseStreamEvent, Tool
from pydantic import BaseModel, TypeAdapter

from kernel.testing import AUTH_HEADERS, TEST_TOKEN


def post(base: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{base}/v1/responses", headers=AUTH_HEADERS, json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def chat(base: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{base}/v1/chat/completions", headers=AUTH_HEADERS, json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def sdk(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=TEST_TOKEN, max_retries=0, timeout=60)


def sdk_check(body: dict[str, Any]) -> Response:
    """Parse a whole response strictly with the openai SDK's ``Response`` (see :func:`sdk_response`)."""
    return sdk_response(body)


def _extras(model: Any, path: str, out: list[str]) -> list[str]:
    """Fields the SDK's models kept as extras (its models allow unknown keys), recursively."""
    if isinstance(model, BaseModel):
        out.extend(f"{path}.{key}" for key in (model.model_extra or {}))
        for name in type(model).model_fields:
            _extras(getattr(model, name), f"{path}.{name}", out)
    elif isinstance(model, list):
        for index, value in enumerate(model):
            _extras(value, f"{path}[{index}]", out)
    return out


def _no_extras(model: Any, path: str, response_at: str) -> None:
    # The OpenResponses schema's own response fields the SDK does not declare are expected
    # (on the response object at ``response_at`` only); anything else unknown is a wrong shape.
    allowed = {f"{response_at}.{name}" for name in SPEC_ONLY_RESPONSE_FIELDS}
    unexpected = [p for p in _extras(model, path, []) if p not in allowed]
    assert not unexpected, f"fields the openai SDK does not know: {unexpected}"


def sdk_response(body: dict[str, Any]) -> Response:
    """Validate a whole response with the openai SDK's ``Response`` in strict mode (no
    coercion), every output item and tool with the SDK's unions, and fail on any field the
    SDK does not declare (other than the OpenResponses schema's own response fields)."""
    response = Response.model_validate(body, strict=True)
    sdk_items(body)
    _no_extras(response, "response", "response")
    return response


def sdk_items(body: dict[str, Any]) -> None:
    """Validate every output item and tool of a response strictly with the SDK's unions."""
    for index, item in enumerate(body["output"]):
        parsed = _ITEMS.validate_python(item, strict=True)
        assert parsed.type == item["type"], (index, parsed.type, item["type"])
        _no_extras(parsed, f"output[{index}]", "-")
    for tool in body["tools"]:
        _TOOLS.validate_python(tool, strict=True)


def sdk_event(event: dict[str, Any]) -> Any:
    """Validate one streamed event with the SDK's ``ResponseStreamEvent`` union, strictly: the
    member chosen is the one its ``type`` names, and no field is unknown to the SDK."""
    parsed = _EVENTS.validate_python(event, strict=True)
    assert parsed.type == event["type"], (parsed.type, event["type"])
    _no_extras(parsed, "event", "event.response")
    return parsed


def stream_events(base: str, body: dict[str, Any], path: str = "/v1/responses") -> list[dict[str, Any]]:
    """POST ``body`` with ``stream: true``; every SSE event (before ``[DONE]``) as JSON."""
    with httpx.stream("POST", f"{base}{path}", headers=AUTH_HEADERS, json={**body, "stream": True},
                      timeout=60) as response:
        assert response.status_code == 200, response.read()
        datas = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    return [json.loads(d) for d in datas[:-1]]


SPEC_ONLY_RESPONSE_FIELDS = frozenset({"frequency_penalty", "presence_penalty", "store"})
_ITEMS: TypeAdapter[Any] = TypeAdapter(ResponseOutputItem)
_TOOLS: TypeAdapter[Any] = TypeAdapter(Tool)
_EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
