"""Turn -> chat messages: roles folded to system/user/assistant, nothing crashes."""

from __future__ import annotations

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from kernel import FilePart, ImagePart, Message, Reasoning, TextPart, ToolCall, ToolResult, ToolSpec, Turn
from plugins.local_model.engine import CHATML_TEMPLATE
from plugins.local_model.prompt import (
    build_messages,
    choose_tool_instructions,
    prompt_parts,
    tool_arguments_instructions,
)


def user(text: str) -> Message:
    return Message("user", [TextPart(text)])


def test_system_then_conversation_in_order() -> None:
    msgs = build_messages("Be brief.", [user("hi"), Message("assistant", [TextPart("hello")]), user("bye")])
    assert msgs == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]


def test_no_system_message_when_system_is_empty() -> None:
    assert build_messages("", [user("hi")]) == [{"role": "user", "content": "hi"}]


def test_image_becomes_placeholder_and_file_its_text() -> None:
    image = ImagePart("data:image/png;base64,AAAA", media_type="image/png")
    file = FilePart("notes.txt", "text/plain", "remember the milk")
    msgs = build_messages("", [Message("user", [TextPart("look:"), image, file])])
    content = msgs[0]["content"]
    assert image.placeholder() in content
    assert file.as_text() in content
    assert "base64" not in content  # the image data never reaches the model


def test_tool_call_and_result_become_assistant_and_user_text_with_the_tool_name() -> None:
    items = [
        user("weather?"),
        ToolCall(call_id="call_1", name="get_weather", arguments='{"city":"Oslo"}'),
        ToolResult(call_id="call_1", output="rain"),
    ]
    msgs = build_messages("", items)
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert "get_weather" in msgs[1]["content"] and '{"city":"Oslo"}' in msgs[1]["content"]
    assert "get_weather" in msgs[2]["content"] and "rain" in msgs[2]["content"]


def test_same_role_neighbours_merge_and_reasoning_is_dropped() -> None:
    items = [user("one"), Reasoning(text="thinking"), user("two"), Message("system", [TextPart("woke up")])]
    msgs = build_messages("S", items)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "one" in msgs[1]["content"] and "two" in msgs[1]["content"] and "woke up" in msgs[1]["content"]
    assert "thinking" not in msgs[1]["content"]


def test_empty_conversation_still_ends_with_a_user_turn() -> None:
    assert build_messages("S", [])[-1] == {"role": "user", "content": ""}


def test_trimmed_history_keeps_tool_names_for_results() -> None:
    turn = Turn(
        agent="main",
        history=[ToolCall(call_id="call_9", name="lookup", arguments="{}")],
        input=[ToolResult(call_id="call_9", output="42")],
    )
    parts = prompt_parts(turn, "extra")
    parts.history.clear()  # what Engine.fit does when the context is short
    msgs = parts.messages()
    assert msgs[0] == {"role": "system", "content": "extra"}
    assert "lookup" in msgs[-1]["content"] and "42" in msgs[-1]["content"]


def test_tool_instructions_name_the_tools_and_schema() -> None:
    tools = [ToolSpec("a_tool", description="does a"), ToolSpec("b_tool", {"type": "object", "properties": {
        "x": {"type": "integer"}}})]
    choose = choose_tool_instructions(tools)
    assert "a_tool: does a" in choose and "b_tool" in choose
    args = tool_arguments_instructions(tools[1])
    assert "b_tool" in args and '"x":{"type":"integer"}' in args


def test_chatml_fallback_template_renders_the_messages_and_the_generation_prompt() -> None:
    fmt = Jinja2ChatFormatter(template=CHATML_TEMPLATE, eos_token="<|im_end|>", bos_token="")
    prompt = fmt(messages=build_messages("Be brief.", [user("hi")])).prompt
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                      "<|im_start|>assistant\n")
