"""Pydantic wire models for the request side of ``POST /v1/responses``.

Only leaf objects are pydantic models; the unions between them (item ``type``,
message ``role``, content part ``type``, tool shapes, tool_choice shapes) are
dispatched by :mod:`plugins.openresponses.request`, which knows the field path and
can say exactly which alternative was expected. Models are strict (no ``"1"`` for
``1``) and ignore unknown keys, as clients send extra fields such as ``status``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from kernel import ApiError

NAME_PATTERN = r"^[a-zA-Z0-9_-]+$"
MAX_TEXT = 10 * 1024 * 1024

Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NAME_PATTERN)]
CallId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ShortStr = Annotated[str, StringConstraints(max_length=64)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
M = TypeVar("M", bound=BaseModel)


class Wire(BaseModel):
    """Base of every wire model: strict types, unknown keys ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


# --------------------------------------------------------------------------- top level


class CreateResponseBody(Wire):
    """The scalar part of ``CreateResponseBody``; unions stay ``Any`` for the dispatcher."""

    model: str | None = None
    input: Any = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    tools: Any = None
    tool_choice: Any = None
    metadata: dict[Annotated[str, StringConstraints(max_length=64)],
                   Annotated[str, StringConstraints(max_length=512)]] | None = Field(None, max_length=16)
    text: Any = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    parallel_tool_calls: bool | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    background: bool | None = None
    max_output_tokens: int | None = Field(None, ge=16)
    max_tool_calls: int | None = Field(None, ge=1)
    reasoning: ReasoningConfig | None = None
    safety_identifier: ShortStr | None = None
    prompt_cache_key: ShortStr | None = None
    truncation: Literal["auto", "disabled"] | None = None
    instructions: str | None = None
    store: bool | None = None
    service_tier: Literal["auto", "default", "flex", "priority"] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    user: str | None = None
    # OpenAI extensions (see plugins.openresponses.fields for what each one does here).
    prompt_cache_retention: Literal["in-memory", "24h", "in_memory"] | None = None
    client_metadata: dict[str, str] | None = None


class CompactBody(Wire):
    """``CompactResponseMethodPublicBody``: ``model`` is required."""

    model: str
    input: Any = None
    previous_response_id: str | None = None
    instructions: str | None = None
    prompt_cache_key: ShortStr | None = None


class ReasoningConfig(Wire):
    # Exactly the spec's ReasoningEffortEnum: the value is echoed in ``reasoning.effort``,
    # which must validate, and forwarded to the provider as the turn's reasoning effort.
    effort: Literal["none", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["concise", "detailed", "auto"] | None = None


CreateResponseBody.model_rebuild()

# --------------------------------------------------------------------------- content parts


class InputText(Wire):
    type: Literal["input_text"]
    text: Text


class InputImage(Wire):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto"] | None = None


class InputFile(Wire):
    type: Literal["input_file"]
    filename: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    file_id: str | None = None


class InputVideo(Wire):
    type: Literal["input_video"]
    video_url: str


class OutputText(Wire):
    type: Literal["output_text"]
    text: Text


class Refusal(Wire):
    type: Literal["refusal"]
    refusal: Text


class SummaryText(Wire):
    type: Literal["summary_text"]
    text: Text


class ReasoningText(Wire):
    type: Literal["reasoning_text"]
    text: Text


# --------------------------------------------------------------------------- items


class MessageItem(Wire):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Any
    id: str | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCallItem(Wire):
    type: Literal["function_call"]
    call_id: CallId
    name: Name
    arguments: str
    id: str | None = None
    # A call to a tool inside a ``namespace`` tool (OpenAI and Codex send it back this way).
    namespace: Name | None = None


class CustomToolCallItem(Wire):
    type: Literal["custom_tool_call"]
    call_id: CallId
    name: Name
    input: Text
    id: str | None = None


class CustomToolCallOutputItem(Wire):
    type: Literal["custom_tool_call_output"]
    call_id: CallId
    output: Any
    id: str | None = None


class FunctionCallOutputItem(Wire):
    type: Literal["function_call_output"]
    call_id: CallId
    output: Any
    id: str | None = None


class ReasoningItem(Wire):
    type: Literal["reasoning"]
    # Required by the spec; tolerated when missing because clients echo partial items back.
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    id: str | None = None


class ItemReference(Wire):
    type: Literal["item_reference"] | None = None
    id: str


class CompactionItem(Wire):
    type: Literal["compaction"]
    encrypted_content: Text
    id: str | None = None


# --------------------------------------------------------------------------- tools


class FunctionTool(Wire):
    """The Responses shape: ``{type, name, description, parameters, strict}``."""

    type: Literal["function"]
    name: Name
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class GrammarFormat(Wire):
    type: Literal["grammar"]
    syntax: Literal["lark", "regex"]
    definition: str


class CustomTool(Wire):
    """A freeform tool: ``{type: 'custom', name, description, format}``."""

    type: Literal["custom"]
    name: Name
    description: str | None = None
    format: Any = None


class NamespaceTool(Wire):
    """A group of tools under one name: ``{type: 'namespace', name, description, tools}``."""

    type: Literal["namespace"]
    name: Name
    description: str | None = None
    tools: list[Any] = Field(min_length=1, max_length=512)


class NestedFunction(Wire):
    name: Name
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NestedFunctionTool(Wire):
    """The Chat Completions shape some clients send: ``{type, function: {...}}``."""

    type: Literal["function"]
    function: NestedFunction


class JsonSchemaFormat(Wire):
    type: Literal["json_schema"]
    name: Name
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(Wire):
    format: Any = None
    verbosity: Literal["low", "medium", "high"] | None = None


# --------------------------------------------------------------------------- errors


def validate(model: type[M], data: Any, path: str) -> M:
    """``model.model_validate(data)``, turning the first error into a 400 naming its field path."""
    if not isinstance(data, dict):
        raise ApiError(400, f"{path or 'body'} must be an object, got {type_name(data)}",
                       param=path or None, code="invalid_type")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise api_error_from(exc, path) from None


def api_error_from(exc: ValidationError, prefix: str) -> ApiError:
    """A 400 for the first pydantic error, with an OpenAI-style code and the full field path."""
    err = exc.errors(include_url=False)[0]
    param = join_path(prefix, err["loc"])
    kind = err["type"]
    if kind == "missing":
        return ApiError(400, f"missing required parameter: {param!r}", param=param,
                        code="missing_required_parameter")
    value = err.get("input")
    message = err["msg"]
    if kind.endswith("_type") or kind in ("model_type", "model_attributes_type"):
        code = "invalid_type"
        message = f"{message} (got {type_name(value)})"
    else:
        code = "invalid_value"
    return ApiError(400, f"invalid value for {param!r}: {message}", param=param, code=code)


def join_path(prefix: str, loc: tuple[int | str, ...] | list[int | str]) -> str:
    """``("input", 2, "content")`` under ``prefix`` -> ``prefix.input[2].content``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "schema_":
            out += ".schema" if out else "schema"
        else:
            out += f".{part}" if out else str(part)
    return out


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
