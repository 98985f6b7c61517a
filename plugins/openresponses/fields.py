"""Every top-level field of a create request, and what the gateway does with it.

Nothing a client sends is dropped silently: each field is *honoured* (the gateway
acts on it), *passed* to the provider through the neutral turn (which may forward it
upstream or state it in the system text), or *refused* with a 400 naming it. A field
outside the table (a vendor flag some client adds) is not refused, since OpenAI-compatible
clients add their own, but never dropped quietly either: the request's log line warns
and the ``x-kernel-ignored-fields`` response header names it. docs/openresponses.md holds
the same table for people; tests walk the published ``CreateResponseBody`` schema
and the openai SDK's create parameters against :data:`FIELDS`.
"""

from __future__ import annotations

from typing import Any, Literal

from kernel import ApiError
from plugins.openresponses import models as m

Treatment = Literal["honoured", "passed", "refused"]

FIELDS: dict[str, Treatment] = {
    # CreateResponseBody, as published
    "model": "honoured",
    "input": "honoured",
    "previous_response_id": "honoured",
    "include": "honoured",
    "tools": "honoured",
    "tool_choice": "honoured",
    "metadata": "honoured",
    "text": "passed",
    "temperature": "passed",
    "top_p": "passed",
    "presence_penalty": "passed",
    "frequency_penalty": "passed",
    "parallel_tool_calls": "honoured",
    "stream": "honoured",
    "stream_options": "honoured",
    "background": "honoured",
    "max_output_tokens": "passed",
    "max_tool_calls": "honoured",
    "reasoning": "passed",
    "safety_identifier": "passed",
    "prompt_cache_key": "passed",
    "truncation": "passed",
    "instructions": "honoured",
    "store": "honoured",
    "service_tier": "passed",
    "top_logprobs": "refused",  # only 0 is accepted: no provider here returns logprobs
    # OpenAI extensions mainstream clients send
    "user": "passed",
    "prompt_cache_retention": "passed",
    "client_metadata": "honoured",  # Codex: validated and logged with the request
    "conversation": "honoured",  # split off first by conversations/params.py
    "prompt": "refused",  # stored prompt templates live on OpenAI's platform
    "context_management": "refused",  # server-side compaction: use POST /v1/responses/compact
    "moderation": "refused",  # OpenAI's moderation policies
    "image": "refused",  # OpenAI's image context compression
    "access_programs": "refused",  # OpenAI account programs
    "background_options": "refused",
    "prompt_cache_options": "refused",
}

# ``include`` values OpenAI knows. Those of tools the gateway never runs have nothing to
# add; reasoning is always returned in full (``content``), never encrypted.
INCLUDE_VALUES: frozenset[str] = frozenset({
    "reasoning.encrypted_content",
    "message.input_image.image_url",
    "web_search_call.results",
    "web_search_call.action.sources",
    "file_search_call.results",
    "code_interpreter_call.outputs",
    "computer_call_output.output.image_url",
})
REFUSED_INCLUDE: dict[str, str] = {
    "message.output_text.logprobs": "no provider behind this gateway returns logprobs",
}
MAX_CLIENT_METADATA = 16


IGNORED_FIELDS_HEADER = "x-kernel-ignored-fields"
MAX_IGNORED_NAMES = 16


def check_fields(data: dict[str, Any]) -> list[str]:
    """400 for a refused field (with a value that would need it); returns the unknown field names."""
    unknown: list[str] = []
    for name, value in data.items():
        treatment = FIELDS.get(name)
        if treatment is None:
            if len(unknown) < MAX_IGNORED_NAMES:
                unknown.append(name[:64])
        elif treatment == "refused" and value is not None:
            _refuse(name, value)
    check_include(data.get("include"))
    check_client_metadata(data.get("client_metadata"))
    return unknown


def _refuse(name: str, value: Any) -> None:
    if name == "top_logprobs":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 20:
            return  # 0 is fine; a wrong type or range gets the model's own 400
        raise ApiError(400, "top_logprobs is not supported: no provider behind this gateway returns logprobs; "
                       "send 0 or leave it out", param=name, code="unsupported_parameter")
    if name == "prompt":
        raise ApiError(400, "'prompt' (a stored prompt template) is not supported: this gateway has no prompt "
                       "templates; send the text as instructions and input", param=name,
                       code="unsupported_parameter")
    if name == "context_management":
        raise ApiError(400, "'context_management' (server-side compaction) is not supported; compact with "
                       "POST /v1/responses/compact instead", param=name, code="unsupported_parameter")
    raise ApiError(400, f"{name!r} is not supported", param=name, code="unsupported_parameter")


def check_include(value: Any) -> None:
    """``include`` must list known values; one that cannot be honoured is refused."""
    if value is None:
        return
    if not isinstance(value, list):
        raise ApiError(400, f"invalid type for 'include': expected an array of strings, got {m.type_name(value)}",
                       param="include", code="invalid_type")
    for i, entry in enumerate(value):
        at = f"include[{i}]"
        if entry in REFUSED_INCLUDE:
            raise ApiError(400, f"include value {entry!r} is not supported: {REFUSED_INCLUDE[entry]}",
                           param=at, code="unsupported_parameter")
        if not isinstance(entry, str) or entry not in INCLUDE_VALUES:
            known = ", ".join(sorted(INCLUDE_VALUES))
            raise ApiError(400, f"invalid value for '{at}': {entry!r}; expected one of {known}", param=at,
                           code="invalid_value")


def check_client_metadata(value: Any) -> None:
    """``client_metadata`` (Codex): at most 16 string pairs, keys up to 64 and values up to 512 characters."""
    if value is None:
        return
    if not isinstance(value, dict) or len(value) > MAX_CLIENT_METADATA:
        raise ApiError(400, f"'client_metadata' must be an object of at most {MAX_CLIENT_METADATA} string values",
                       param="client_metadata", code="invalid_value")
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > 64 or len(item) > 512:
            raise ApiError(400, f"'client_metadata.{key[:64]}' must be a string of at most 512 characters "
                           "(keys at most 64)", param=f"client_metadata.{key[:64]}", code="invalid_value")
