"""Turn -> Chat Completions request: every mapping rule, checked on the body the fake
upstream actually received (and on ``build_body`` directly for the finer rules)."""

from __future__ import annotations

from typing import Any

from testsupport.fake_openai import stream_reply, text_chunks

from kernel import (
    FilePart,
    ImagePart,
    Limits,
    Message,
    Reasoning,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolResult,
    ToolSpec,
    Turn,
)
from plugins.openai_upstream.request import build_body
from plugins.openai_upstream.settings import UpstreamOptions

from .conftest import API_KEY

PNG = "data:image/png;base64,iVBORw0KGgo="
WEATHER = ToolSpec(name="get_weather", description="Weather for a city",
                   parameters={"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}, strict=True)
TIME = ToolSpec(name="get_time", parameters={"type": "object", "properties": {}})


def body_for(turn: Turn, **options: Any) -> dict[str, Any]:
    return build_body(turn, UpstreamOptions(base_url="http://127.0.0.1:9/v1", model="default-model", **options))


def user(*parts: Any) -> Message:
    return Message(role="user", parts=list(parts))


# --------------------------------------------------------------------------- end to end


async def test_fake_upstream_receives_the_mapped_request(upstream_app, fake, user_turn, run_turn):
    app = upstream_app({"agents": {"main": {"instructions": "Be terse."}}},
                       headers={"X-Title": "agentkernel-tests"})
    fake.script(stream_reply(text_chunks("ok")))
    turn = user_turn("What is the weather in Oslo?", system="Use metric units.", tools=[WEATHER, TIME],
                     tool_choice=ToolChoice(mode="auto"),
                     limits=Limits(max_output_tokens=64, temperature=0.2, top_p=0.9, stop=["END"]))
    async with app.test_app():
        _, result = await run_turn(app, turn)
    assert result.status == "completed"
    [req] = fake.chat_requests
    assert req.method == "POST" and req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {API_KEY}"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-title"] == "agentkernel-tests"
    body = req.json
    assert body["model"] == "fake-model"  # the provider's default model
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    # The agent's instructions come first, then the turn's system text, as one system message.
    assert body["messages"] == [
        {"role": "system", "content": "Be terse.\n\nUse metric units."},
        {"role": "user", "content": "What is the weather in Oslo?"},
    ]
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]
    assert body["tools"][0] == {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "strict": True,
        "parameters": WEATHER.parameters}}
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"]) == (64, 0.2, 0.9, ["END"])


async def test_turn_model_overrides_the_default_and_agent_model_is_used(upstream_app, fake, user_turn, run_turn):
    app = upstream_app({"agents": {"main": {"model": "agent-model"}, "other": {"provider": "up"}}})
    fake.script(stream_reply(text_chunks("a")), stream_reply(text_chunks("b")), stream_reply(text_chunks("c")))
    async with app.test_app():
        await run_turn(app, user_turn("x"))
        await run_turn(app, user_turn("x", model="llama3.2:1b"))
        await run_turn(app, Turn(agent="other", input=[user(TextPart("x"))]))
    assert [r.json["model"] for r in fake.chat_requests] == ["agent-model", "llama3.2:1b", "fake-model"]


async def test_session_history_reaches_the_upstream(upstream_app, fake, user_turn, run_turn):
    app = upstream_app()
    fake.script(stream_reply(text_chunks("Hello ", "Ada")), stream_reply(text_chunks("You are Ada")))
    async with app.test_app():
        await run_turn(app, user_turn("I am Ada", session_key="s1"))
        await run_turn(app, user_turn("Who am I?", session_key="s1"))
    assert fake.chat_requests[1].json["messages"] == [
        {"role": "user", "content": "I am Ada"},
        {"role": "assistant", "content": "Hello Ada"},
        {"role": "user", "content": "Who am I?"},
    ]


async def test_no_model_anywhere_fails_clearly(upstream_app, fake, user_turn, run_turn):
    app = upstream_app(model=None)
    async with app.test_app():
        _, result = await run_turn(app, user_turn())
    assert result.status == "failed" and result.error is not None
    assert result.error.code == "model_not_configured"
    assert "provider 'up' (127.0.0.1:" in result.error.message
    assert fake.chat_requests == []


# --------------------------------------------------------------------------- messages


def test_history_with_tool_calls_results_and_reasoning():
    turn = Turn(agent="main", system="sys", history=[
        user(TextPart("Weather in Oslo and Rome?")),
        Reasoning(text="I should call the tool twice."),
        Message(role="assistant", parts=[TextPart("Checking both.")]),
        ToolCall(call_id="call_1", name="get_weather", arguments='{"city":"Oslo"}'),
        ToolCall(call_id="call_2", name="get_weather", arguments='{"city":"Rome"}'),
        ToolResult(call_id="call_1", output="4C"),
        ToolResult(call_id="call_2", output="19C"),
        ToolCall(call_id="call_3", name="get_time", arguments=""),
        ToolResult(call_id="call_3", output="12:00"),
    ], input=[user(TextPart("Thanks"))])
    messages = body_for(turn)["messages"]
    assert messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        # Reasoning is not sent back by default; both parallel calls join the assistant text.
        {"role": "assistant", "content": "Checking both.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "19C"},
        # A call without assistant text gets its own assistant message with null content.
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_3", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_3", "content": "12:00"},
        {"role": "user", "content": "Thanks"},
    ]


def test_send_reasoning_rides_on_the_next_assistant_message():
    turn = Turn(agent="main", history=[
        user(TextPart("q")), Reasoning(text="think"),
        ToolCall(call_id="c1", name="f", arguments="{}"), ToolResult(call_id="c1", output="r"),
        Reasoning(summary=["more", "thought"]), Message(role="assistant", parts=[TextPart("done")]),
    ], input=[user(TextPart("next"))])
    messages = body_for(turn, send_reasoning=True)["messages"]
    assert messages[1] == {"role": "assistant", "content": None, "reasoning_content": "think",
                           "tool_calls": [{"id": "c1", "type": "function",
                                           "function": {"name": "f", "arguments": "{}"}}]}
    assert messages[3] == {"role": "assistant", "content": "done", "reasoning_content": "more\nthought"}
    assert all("reasoning_content" not in m for m in body_for(turn)["messages"])


def test_images_become_image_url_parts_when_the_upstream_sees_images():
    turn = Turn(agent="main", input=[user(TextPart("What is this?"), ImagePart(url=PNG, media_type="image/png",
                                                                              detail="low"))])
    [message] = body_for(turn)["messages"]
    assert message == {"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
    ]}


def test_images_become_placeholders_without_vision_and_files_become_text():
    image = ImagePart(url=PNG, media_type="image/png")
    turn = Turn(agent="main", input=[user(TextPart("Look: "), image,
                                          FilePart(filename="a.txt", media_type="text/plain", text="hello"))])
    [message] = body_for(turn, accepts_images=False)["messages"]
    assert message["content"] == ("Look: " + image.placeholder()
                                  + '<file name="a.txt" type="text/plain">\nhello\n</file>')


# --------------------------------------------------------------------------- tools, limits, format


def tool_turn(choice: ToolChoice, parallel: bool = True) -> Turn:
    return Turn(agent="main", input=[user(TextPart("x"))], tools=[WEATHER, TIME], tool_choice=choice,
                limits=Limits(parallel_tool_calls=parallel))


def test_tool_choice_mapping():
    required = body_for(tool_turn(ToolChoice(mode="required"), parallel=False))
    assert required["tool_choice"] == "required" and required["parallel_tool_calls"] is False
    assert len(required["tools"]) == 2

    named = body_for(tool_turn(ToolChoice(mode="required", function="get_time")))
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert [t["function"]["name"] for t in named["tools"]] == ["get_time"]

    allowed = body_for(tool_turn(ToolChoice(mode="auto", allowed=["get_weather"])))
    assert [t["function"]["name"] for t in allowed["tools"]] == ["get_weather"]
    assert allowed["tool_choice"] == "auto"

    # none: no tool fields at all (OpenAI rejects tool_choice/parallel_tool_calls without tools).
    none = body_for(tool_turn(ToolChoice(mode="none")))
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(none)


def test_limits_and_max_tokens_field():
    turn = Turn(agent="main", input=[user(TextPart("x"))], limits=Limits(max_output_tokens=10))
    assert body_for(turn)["max_tokens"] == 10
    body = body_for(turn, max_tokens_field="max_completion_tokens")
    assert body["max_completion_tokens"] == 10 and "max_tokens" not in body
    plain = body_for(Turn(agent="main", input=[user(TextPart("x"))]))
    assert not {"max_tokens", "temperature", "top_p", "stop", "response_format", "presence_penalty",
                "frequency_penalty", "reasoning_effort"} & set(plain)
    tuned = body_for(Turn(agent="main", input=[user(TextPart("x"))], limits=Limits(
        presence_penalty=0.0, frequency_penalty=1.5, reasoning_effort="none")))
    # Zero and "none" are values the client chose, not "unset": they are sent.
    assert (tuned["presence_penalty"], tuned["frequency_penalty"], tuned["reasoning_effort"]) == (0.0, 1.5, "none")


def test_response_format_mapping():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    turn = Turn(agent="main", input=[user(TextPart("x"))],
                response_format={"type": "json_schema", "name": "thing", "schema": schema, "strict": True})
    assert body_for(turn)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}}
    turn.response_format = {"type": "json_object"}
    assert body_for(turn)["response_format"] == {"type": "json_object"}


def test_stream_usage_off_and_extra_body():
    turn = Turn(agent="main", input=[user(TextPart("x"))], limits=Limits(temperature=0.5))
    body = body_for(turn, stream_usage=False, extra_body={"options": {"num_ctx": 8192}, "temperature": 1.5})
    assert "stream_options" not in body
    assert body["options"] == {"num_ctx": 8192}
    assert body["temperature"] == 0.5  # the turn's own value wins over extra_body
