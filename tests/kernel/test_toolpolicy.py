"""ToolPolicy: the kernel's hard limit on which tool calls reach a client, and their numbering."""

from __future__ import annotations

from kernel import Finished, TextDelta, ToolCallDelta, ToolCallDone, ToolCallStart, ToolChoice, Turn
from kernel.toolpolicy import ToolPolicy


def calls(*names_at: tuple[int, str]) -> list:
    """Start, two deltas and done for each (index, name), one call after the other."""
    events: list = []
    for index, name in names_at:
        events += [
            ToolCallStart(index=index, call_id=f"c_{name}", name=name),
            ToolCallDelta(index=index, arguments="{"),
            ToolCallDelta(index=index, arguments="}"),
            ToolCallDone(index=index, call_id=f"c_{name}", name=name, arguments="{}"),
        ]
    return events


def run_policy(turn: Turn, events: list) -> tuple[list, ToolPolicy]:
    policy = ToolPolicy(turn)
    out = [ev for ev in (policy.apply(e) for e in events) if ev is not None]
    return out, policy


def summary(events: list) -> list[tuple[str, int, str]]:
    return [(ev.kind, ev.index, getattr(ev, "name", "")) for ev in events if hasattr(ev, "index")]


def test_auto_passes_everything_and_renumbers_from_zero():
    out, policy = run_policy(Turn(agent="a", input=[]), [*calls((3, "x"), (8, "y")), Finished("tool_calls")])
    assert summary(out) == [
        ("tool_call_start", 0, "x"), ("tool_call_delta", 0, ""), ("tool_call_delta", 0, ""), ("tool_call_done", 0, "x"),
        ("tool_call_start", 1, "y"), ("tool_call_delta", 1, ""), ("tool_call_delta", 1, ""), ("tool_call_done", 1, "y"),
    ]
    assert out[-1] == Finished("tool_calls")
    assert (policy.kept, policy.suppressed) == (2, 0)


def test_allowed_list_suppresses_other_calls_with_their_deltas():
    turn = Turn(agent="a", input=[], tool_choice=ToolChoice(allowed=["y"]))
    out, policy = run_policy(turn, calls((0, "x"), (1, "y"), (2, "z")))
    assert summary(out) == [("tool_call_start", 0, "y"), ("tool_call_delta", 0, ""), ("tool_call_delta", 0, ""),
                            ("tool_call_done", 0, "y")]
    assert (policy.kept, policy.suppressed) == (1, 2)


def test_a_named_function_permits_only_that_function():
    turn = Turn(agent="a", input=[], tool_choice=ToolChoice(mode="required", function="z"))
    out, _ = run_policy(turn, calls((0, "x"), (1, "z")))
    assert {name for _, _, name in summary(out) if name} == {"z"}
    assert {index for _, index, _ in summary(out)} == {0}


def test_mode_none_drops_all_calls_and_turns_tool_calls_into_stop():
    turn = Turn(agent="a", input=[], tool_choice=ToolChoice(mode="none"))
    out, policy = run_policy(turn, [TextDelta("hi"), *calls((0, "x")), Finished("tool_calls")])
    assert out == [TextDelta("hi"), Finished("stop")]
    assert policy.suppressed == 1


def test_max_tool_calls_caps_the_count():
    turn = Turn(agent="a", input=[])
    turn.limits.max_tool_calls = 2
    out, policy = run_policy(turn, [*calls((0, "a"), (1, "b"), (2, "c"), (3, "d")), Finished("tool_calls")])
    assert [name for kind, _, name in summary(out) if kind == "tool_call_done"] == ["a", "b"]
    assert (policy.kept, policy.suppressed) == (2, 2)
    assert out[-1] == Finished("tool_calls")  # some calls survived


def test_parallel_tool_calls_false_means_one_call():
    turn = Turn(agent="a", input=[])
    turn.limits.parallel_tool_calls = False
    turn.limits.max_tool_calls = 5
    out, _ = run_policy(turn, calls((0, "a"), (1, "b")))
    assert [name for kind, _, name in summary(out) if kind == "tool_call_start"] == ["a"]


def test_interleaved_calls_keep_their_own_new_index():
    # Two calls stream at once; deltas must follow their own call's new index.
    turn = Turn(agent="a", input=[], tool_choice=ToolChoice(allowed=["b", "c"]))
    events = [
        ToolCallStart(index=10, call_id="1", name="a"),
        ToolCallStart(index=11, call_id="2", name="b"),
        ToolCallStart(index=12, call_id="3", name="c"),
        ToolCallDelta(index=12, arguments="C"),
        ToolCallDelta(index=10, arguments="A"),
        ToolCallDelta(index=11, arguments="B"),
        ToolCallDone(index=11, call_id="2", name="b", arguments="B"),
        ToolCallDone(index=12, call_id="3", name="c", arguments="C"),
        ToolCallDone(index=10, call_id="1", name="a", arguments="A"),
    ]
    out, _ = run_policy(turn, events)
    assert [(ev.kind, ev.index, getattr(ev, "arguments", getattr(ev, "name", ""))) for ev in out] == [
        ("tool_call_start", 0, "b"),
        ("tool_call_start", 1, "c"),
        ("tool_call_delta", 1, "C"),
        ("tool_call_delta", 0, "B"),
        ("tool_call_done", 0, "B"),
        ("tool_call_done", 1, "C"),
    ]


def test_a_done_without_start_is_still_policed():
    turn = Turn(agent="a", input=[], tool_choice=ToolChoice(allowed=["ok"]))
    out, _ = run_policy(turn, [
        ToolCallDone(index=4, call_id="1", name="bad", arguments="{}"),
        ToolCallDone(index=6, call_id="2", name="ok", arguments="{}"),
        ToolCallDelta(index=99, arguments="orphan"),
    ])
    assert summary(out) == [("tool_call_done", 0, "ok")]


def test_non_tool_events_pass_untouched():
    events = [TextDelta("a"), Finished("length")]
    out, _ = run_policy(Turn(agent="a", input=[]), events)
    assert out == events
