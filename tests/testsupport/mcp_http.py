"""Small HTTP helpers for the MCP tests."""

from __future__ import annotations

from typing import Any

import httpx
import openai

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


def sdk_check(body: dict[str, Any]) -> None:
    """Validate every output item and tool of a response strictly against the openai SDK's types.

    (The whole ``Response`` is not validated strictly: the installed SDK requires
    ``usage.input_tokens_details.cache_write_tokens``, which no endpoint of this gateway sends
    yet; the SDK's own client parses responses leniently.)
    """
    from openai.types.responses import ResponseOutputItem, Tool
    from pydantic import TypeAdapter

    items = TypeAdapter(ResponseOutputItem)
    for item in body["output"]:
        items.validate_python(item)
    tools = TypeAdapter(Tool)
    for tool in body["tools"]:
        tools.validate_python(tool)
