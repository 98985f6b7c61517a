"""ToolRegistry.prepare: listings kept for the loop, clashes from listed names, request sets
closed when the request is refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kernel import ApiError, Message, TextPart, ToolInfo, ToolOutput, ToolSpec, Turn
from kernel.agents import Agent
from kernel.tools import ToolRegistry, find_name_clash


class FakeSet:
    """A per-request tool set that records what happened to it."""

    def __init__(self, name: str, tools: list[str], *, fail: bool = False, hang: bool = False) -> None:
        self.name = name
        self.timeout_seconds = 0.5
        self.per_request = True
        self.tools = tools
        self.fail = fail
        self.hang = hang
        self.listed = 0
        self.closed = False

    async def list_tools(self) -> list[ToolInfo]:
        self.listed += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail:
            raise ConnectionError("refused")
        return [ToolInfo(name) for name in self.tools]

    async def call(self, name: str, arguments: dict[str, Any], context: Any) -> ToolOutput:
        return ToolOutput("")

    async def aclose(self) -> None:
        self.closed = True


def turn_with(*sets: FakeSet, client: tuple[str, ...] = ()) -> Turn:
    return Turn(agent="a", input=[Message(role="user", parts=[TextPart("hi")])],
                tools=[ToolSpec(name=n) for n in client], toolsets=list(sets))


AGENT = Agent(name="a", provider="echo")


async def test_a_clash_names_both_tools_and_closes_the_request_sets() -> None:
    calc, other = FakeSet("calc", ["add", "mul"]), FakeSet("other", ["x"])
    turn = turn_with(calc, other, client=("lookup", "calc__mul"))
    with pytest.raises(ApiError) as caught:
        await ToolRegistry(None).prepare(turn, AGENT, {"calc__mul": "tools[3].name"}.get)  # type: ignore[arg-type]
    assert caught.value.status == 400 and caught.value.param == "tools[3].name"
    assert str(caught.value.message).startswith("tools[3].name 'calc__mul' clashes with server tool 'mul' of "
                                                "server 'calc'")
    assert calc.closed and other.closed


async def test_listings_are_kept_for_the_loop_and_failures_recorded_once() -> None:
    calc, broken, stuck = FakeSet("calc", ["add"]), FakeSet("broken", [], fail=True), FakeSet("stuck", [], hang=True)
    turn = turn_with(calc, broken, stuck, client=("calc__sub",))
    await ToolRegistry(None).prepare(turn, AGENT)  # type: ignore[arg-type]
    assert [t.name for t in turn.listed["calc"]] == ["add"]
    assert turn.listed["broken"] == "listing tools failed: refused"
    assert turn.listed["stuck"] == "listing tools timed out after 0.5 seconds"
    assert not calc.closed and (calc.listed, broken.listed) == (1, 1)


def test_find_name_clash_uses_model_facing_names() -> None:
    listed = {"my.server": [ToolInfo("do it")]}
    clash = find_name_clash(["my_server__do_it"], listed)
    assert clash is not None and (clash.server, clash.tool) == ("my.server", "do it")
    assert find_name_clash(["my_server__other"], listed) is None
