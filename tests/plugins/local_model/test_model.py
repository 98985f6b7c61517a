"""The real bundled model through the kernel's run seam (loaded once for this module)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import pytest_asyncio

from kernel import (
    ApiError,
    ImagePart,
    Limits,
    Message,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallDone,
    ToolCallStart,
    ToolChoice,
    ToolSpec,
    Turn,
    Usage,
)
from kernel.testing import build_app, default_config, merge
from plugins.local_model.engine import Engine, EngineConfig, Sampling
from plugins.local_model.model_file import bundled_model_path
from plugins.local_model.prompt import prompt_parts
from plugins.local_model.provider import LocalModelProvider

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
EMAIL = ToolSpec(
    name="send_email",
    description="Send an email",
    parameters={
        "type": "object",
        "properties": {"to": {"type": "string"}, "subject": {"type": "string"}, "urgent": {"type": "boolean"}},
        "required": ["to", "subject", "urgent"],
        "additionalProperties": False,
    },
)
# A grammar that cannot end before ~1500 characters: a generation that is guaranteed
# to still be running when a test cancels it.
ENDLESS = {"type": "json_schema", "name": "story", "schema": {
    "type": "object", "properties": {"story": {"type": "string", "minLength": 1500}}, "required": ["story"]}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kernel(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    root = tmp_path_factory.mktemp("local_model")
    config = merge(default_config(root / "state"), {
        "plugins": {"local_model": {"enabled": True}},
        # One thread: these tests share a 2-core machine with other suites, and
        # llama.cpp's spinning threads slow down badly when oversubscribed.
        "providers": {"local": {"kind": "local_model", "n_threads": 1, "max_queue": 1, "seed": 7,
                                "default_max_output_tokens": 48}},
        "agents": {"main": {"provider": "local", "instructions": "You are a helpful assistant. Answer briefly."}},
    })
    app = build_app(config, root / "plugins.toml")
    async with app.test_app():
        yield app.extensions["kernel"]


def provider_of(kernel: Any) -> LocalModelProvider:
    provider = kernel.providers["local"]
    assert isinstance(provider, LocalModelProvider)
    return provider


def ask(text: str, **kw: Any) -> Turn:
    return Turn(agent="main", input=[Message("user", [TextPart(text)])], **kw)


def assert_answered(result: Any) -> None:
    """A text answer that ended normally: at end-of-turn, or at the token limit."""
    assert (result.status, result.finish_reason) in (("completed", "stop"), ("incomplete", "length"))
    assert result.text.strip()


async def events_of(kernel: Any, turn: Turn) -> tuple[list[Any], Any]:
    run = kernel.runs.start(turn)
    events = [ev async for ev in run.events()]
    return events, await run.wait()


async def test_model_is_loaded_at_startup(kernel: Any) -> None:
    assert provider_of(kernel).loaded


async def test_streams_a_short_answer_with_finish_reason_and_usage(kernel: Any) -> None:
    events, result = await events_of(kernel, ask("What is the capital of France?"))
    deltas = [ev for ev in events if isinstance(ev, TextDelta)]
    assert len(deltas) > 1  # streamed in pieces, not one block
    assert_answered(result)
    assert result.text == "".join(d.text for d in deltas)
    usage = next(ev for ev in events if isinstance(ev, Usage))
    assert usage.input_tokens > 10  # system + question under the chat template
    assert 0 < usage.output_tokens <= 48  # default_max_output_tokens in this module
    assert result.usage == usage


async def test_first_text_streams_while_the_model_is_still_generating(kernel: Any) -> None:
    # The grammar forbids ending before ~1500 characters, so when the first delta arrives
    # the generation job must still be running: text is not sent after the fact.
    provider = provider_of(kernel)
    run = kernel.runs.start(ask("Write a very long story.", limits=Limits(max_output_tokens=1000),
                                response_format=ENDLESS))
    async for ev in run.events():
        if isinstance(ev, TextDelta):
            break
    assert provider.gate.busy and provider._jobs and not run.done
    run.cancel()
    await run.wait()
    await asyncio.wait_for(provider.idle(), timeout=10)


async def test_the_answer_ends_at_the_end_of_turn_token(kernel: Any) -> None:
    _, result = await events_of(kernel, ask("Name a colour.", limits=Limits(temperature=0, max_output_tokens=200)))
    # Stopped by the model's own end-of-turn token, long before the budget, and the
    # template's special tokens never leak into the text.
    assert (result.status, result.finish_reason) == ("completed", "stop")
    assert 0 < result.usage.output_tokens < 100 and result.text.strip()
    assert "<|im_end|>" not in result.text and "<|im_start|>" not in result.text


async def test_prompts_use_the_chat_template_stored_in_the_gguf(kernel: Any) -> None:
    engine = provider_of(kernel).engine
    template = engine.llm.metadata["tokenizer.chat_template"]
    assert "SmolLM" in template  # SmolLM2's own, not the ChatML fallback
    prompt = engine.llm.detokenize(engine.render([{"role": "user", "content": "Hello"}]), special=True).decode()
    # SmolLM2's template adds its default system message when there is none.
    assert prompt == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                      "<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")


async def test_max_output_tokens_ends_with_length(kernel: Any) -> None:
    _, result = await events_of(kernel, ask("Tell me a long story about a dragon.", limits=Limits(max_output_tokens=5)))
    assert result.status == "incomplete" and result.finish_reason == "length"
    assert result.usage.output_tokens == 5
    assert result.text.strip()


async def test_stop_string_ends_the_answer_before_it(kernel: Any) -> None:
    greedy = Limits(temperature=0)
    _, free = await events_of(kernel, ask("What is the capital of France?", limits=greedy))
    words = free.text.split()
    assert len(words) >= 3
    stop = f" {words[2]}"  # cut the same (greedy, so repeatable) answer after two words
    _, result = await events_of(kernel, ask("What is the capital of France?",
                                            limits=Limits(temperature=0, stop=[stop])))
    assert result.finish_reason == "stop"
    assert result.text == free.text[: free.text.index(stop)]
    assert stop not in result.text


async def test_forced_named_tool_call_has_schema_valid_arguments(kernel: Any) -> None:
    turn = ask("What's the weather like in Oslo today?", tools=[EMAIL, WEATHER],
               tool_choice=ToolChoice(mode="required", function="get_weather"))
    events, result = await events_of(kernel, turn)
    assert result.status == "completed" and result.finish_reason == "tool_calls"
    kinds = [type(ev) for ev in events]
    assert kinds.index(ToolCallStart) < kinds.index(ToolCallDelta) < kinds.index(ToolCallDone)
    done = next(ev for ev in events if isinstance(ev, ToolCallDone))
    assert done.name == "get_weather" and done.call_id.startswith("call_")
    assert "".join(ev.arguments for ev in events if isinstance(ev, ToolCallDelta)) == done.arguments
    jsonschema.validate(json.loads(done.arguments), WEATHER.parameters)
    assert [c.name for c in result.tool_calls] == ["get_weather"]


@pytest.mark.parametrize("choice", [
    ToolChoice(mode="required"),
    ToolChoice(mode="required", allowed=["send_email", "get_weather"]),
])
async def test_required_tool_choice_picks_an_offered_tool_with_valid_arguments(kernel: Any, choice: ToolChoice) -> None:
    turn = ask("Email bob@example.com that the meeting moved, it is urgent.", tools=[WEATHER, EMAIL],
               tool_choice=choice)
    _, result = await events_of(kernel, turn)
    assert result.finish_reason == "tool_calls"
    (call,) = result.tool_calls
    spec = {"get_weather": WEATHER, "send_email": EMAIL}[call.name]
    jsonschema.validate(json.loads(call.arguments), spec.parameters)


async def test_allowed_tools_narrow_the_forced_choice(kernel: Any) -> None:
    turn = ask("What's the weather in Rome?", tools=[WEATHER, EMAIL],
               tool_choice=ToolChoice(mode="required", allowed=["send_email"]))
    _, result = await events_of(kernel, turn)
    (call,) = result.tool_calls
    assert call.name == "send_email"
    jsonschema.validate(json.loads(call.arguments), EMAIL.parameters)


async def test_auto_tool_choice_answers_in_text(kernel: Any) -> None:
    _, result = await events_of(kernel, ask("Say hello.", tools=[WEATHER]))
    assert_answered(result)
    assert not result.tool_calls


async def test_json_schema_response_format_parses_and_validates(kernel: Any) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                              "tags": {"type": "array", "items": {"type": "string"}}},
              "required": ["name", "age", "tags"], "additionalProperties": False}
    turn = ask("Describe a person named Ada, aged 36.", limits=Limits(max_output_tokens=200),
               response_format={"type": "json_schema", "name": "person", "schema": schema, "strict": True})
    _, result = await events_of(kernel, turn)
    assert result.finish_reason == "stop"
    jsonschema.validate(json.loads(result.text), schema)


async def test_json_object_response_format_is_an_object(kernel: Any) -> None:
    _, result = await events_of(kernel, ask("Give me a JSON object describing a cat.",
                                            limits=Limits(max_output_tokens=200),
                                            response_format={"type": "json_object"}))
    assert result.finish_reason == "stop"
    assert isinstance(json.loads(result.text), dict)


async def test_an_image_is_described_as_a_placeholder_not_a_crash(kernel: Any) -> None:
    turn = Turn(agent="main", input=[Message("user", [
        TextPart("What is in this picture?"), ImagePart("data:image/png;base64,iVBORw0KGgo=", media_type="image/png"),
    ])])
    _, result = await events_of(kernel, turn)
    assert_answered(result)


async def test_long_history_is_trimmed_oldest_first_to_fit_the_context(kernel: Any) -> None:
    # Checked on the prompt itself: prefilling 2,000 tokens would take this busy machine
    # tens of seconds, and what matters is which tokens go in.
    engine = provider_of(kernel).engine
    filler = "The quick brown fox jumps over the lazy dog. " * 20  # about 200 tokens
    history = [Message(role, [TextPart(f"message {n}: {filler}")])
               for n in range(15) for role in ("user", "assistant")]
    parts = prompt_parts(ask("Say yes.", history=history, system="Be brief."), "")
    tokens = engine.fit(parts, reserve=256)
    assert 1000 < len(tokens) <= 2048 - 256
    prompt = engine.llm.detokenize(tokens, special=True).decode()
    assert prompt.index("Be brief.") < prompt.index("message 14:") < prompt.index("Say yes.")
    assert "message 0:" not in prompt  # the oldest went first


async def test_an_input_larger_than_the_context_fails_with_400(kernel: Any) -> None:
    _, result = await events_of(kernel, ask("word " * 3000))
    assert result.status == "failed"
    assert result.error.status == 400 and result.error.code == "context_length_exceeded"
    assert "[providers.local]" in result.error.message


async def test_cancel_stops_generation_and_frees_the_model(kernel: Any) -> None:
    provider = provider_of(kernel)
    run = kernel.runs.start(ask("Write a very long story.", limits=Limits(max_output_tokens=1000),
                                response_format=ENDLESS))
    async for ev in run.events():
        if isinstance(ev, TextDelta):
            break
    assert run.cancel()
    result = await run.wait()
    assert result.status == "cancelled" and result.finish_reason == "cancelled"
    await asyncio.wait_for(provider.idle(), timeout=10)
    stats = provider.last_stats
    assert stats is not None and stats.finish_reason == "cancelled"
    # The grammar forbids ending before ~1500 characters: only a cancel ends it this early.
    assert stats.output_tokens < 200
    assert not provider.gate.busy


async def test_full_queue_answers_429_with_retry_after_and_the_queue_moves_on(kernel: Any) -> None:
    provider = provider_of(kernel)
    await provider.idle()
    generating = kernel.runs.start(ask("Write a very long story.", limits=Limits(max_output_tokens=1000),
                                       response_format=ENDLESS))
    waiting = kernel.runs.start(ask("Say hi.", limits=Limits(max_output_tokens=3)))  # max_queue = 1
    with pytest.raises(ApiError) as info:
        kernel.runs.start(ask("Me too."))
    err = info.value
    assert err.status == 429 and err.code == "model_busy"
    assert int(err.headers["Retry-After"]) >= 1
    assert "max_queue" in err.message
    async for ev in generating.events():
        if isinstance(ev, TextDelta):
            break
    assert waiting.status == "in_progress" and not waiting.done  # queued behind the first
    generating.cancel()
    result = await asyncio.wait_for(waiting.wait(), timeout=30)
    assert result.text.strip() and result.usage.output_tokens <= 3
    await provider.idle()
    again = kernel.runs.start(ask("Now there is room.", limits=Limits(max_output_tokens=2)))  # admitted again
    assert (await again.wait()).usage.output_tokens <= 2


async def test_first_use_loading_waits_for_the_first_run(tmp_path: Path) -> None:
    config = merge(default_config(tmp_path / "state"), {
        "plugins": {"local_model": {"enabled": True}},
        "providers": {"lazy": {"kind": "local_model", "load": "first_use", "n_threads": 1}},
        "agents": {"main": {"provider": "lazy"}},
    })
    app = build_app(config, tmp_path / "plugins.toml")
    async with app.test_app():
        kernel = app.extensions["kernel"]
        provider = kernel.providers["lazy"]
        assert not provider.loaded
        # Two runs at once share one load.
        runs = [kernel.runs.start(ask("Hi", limits=Limits(max_output_tokens=2))) for _ in range(2)]
        results = [await r.wait() for r in runs]
        assert all(r.status in ("completed", "incomplete") for r in results)
        assert provider.loaded
    assert not provider.loaded  # shutdown freed the model


async def test_chat_template_option_replaces_the_gguf_template() -> None:
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n[custom] {{ m['content'] }}<|im_end|>\n"
                "{% endfor %}{{ '<|im_start|>assistant\n' }}")
    engine = Engine(EngineConfig(path=bundled_model_path(), n_ctx=512, n_threads=1, chat_template=template))
    await asyncio.to_thread(engine.load)
    try:
        tokens = engine.render([{"role": "user", "content": "Hello"}])
        assert engine.llm.detokenize(tokens, special=True).decode() == (
            "<|im_start|>user\n[custom] Hello<|im_end|>\n<|im_start|>assistant\n")
        gen = await asyncio.to_thread(engine.generate, tokens, Sampling(max_tokens=4, temperature=0, top_p=1),
                                      lambda _: None, threading.Event())
        assert gen.completion_tokens > 0 and gen.text
    finally:
        engine.close()
