"""``/call`` directives: tell the echo provider, deterministically, which tools to call.

A line of the newest user message of the form ``/call NAME {json arguments}`` is one
step; several calls joined by `` && `` on one line are made in parallel in one step.
Each provider turn makes the next step whose calls have not been made since that user
message (so a server-side agent loop walks through the steps one turn at a time); a
step naming a tool that is not offered is skipped. Once every step is done, echo
answers with the results of the calls made since the user message, one per line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kernel import Message, ToolCall, ToolResult, Turn

PREFIX = "/call "


@dataclass(frozen=True, slots=True)
class Directive:
    """One tool call the user asked for."""

    name: str
    arguments: str


def parse_steps(text: str) -> list[list[Directive]]:
    """The ``/call`` steps in ``text``, in order (lines without the prefix are ignored)."""
    steps: list[list[Directive]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith(PREFIX):
            continue
        step: list[Directive] = []
        for piece in line.split(" && "):
            piece = piece.strip().removeprefix("/call").strip()
            name, _, args = piece.partition(" ")
            args = args.strip() or "{}"
            try:
                json.loads(args)
            except ValueError:
                args = json.dumps({"input": args})
            if name:
                step.append(Directive(name, args))
        if step:
            steps.append(step)
    return steps


def since_last_user(turn: Turn) -> tuple[Message | None, list[ToolCall], list[ToolResult]]:
    """The newest user message and the tool calls and results after it."""
    items = turn.conversation()
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if isinstance(item, Message) and item.role == "user":
            after = items[index + 1:]
            return (item, [i for i in after if isinstance(i, ToolCall)],
                    [i for i in after if isinstance(i, ToolResult)])
    return None, [], []


def next_calls(turn: Turn) -> tuple[list[Directive], list[ToolResult]] | None:
    """The calls to make this turn (possibly none: all done), and the results so far;
    None when the newest user message has no directives."""
    user, calls, results = since_last_user(turn)
    if user is None:
        return None
    steps = parse_steps(user.text)
    if not steps:
        return None
    offered = {tool.name for tool in turn.offered_tools()}
    made = len(calls)
    for step in steps:
        if made >= len(step):
            made -= len(step)
            continue
        runnable = [d for d in step if d.name in offered]
        return runnable, results
    return [], results
