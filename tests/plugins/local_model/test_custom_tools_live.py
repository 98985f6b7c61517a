"""The bundled model calls custom (freeform) tools under their grammars, over real HTTP.

The tool's lark or regex grammar is translated to GBNF and enforced by llama.cpp, so
the input the model writes is checked with the source dialect's own reference: lark's
parser for a lark grammar, ``re.fullmatch`` for a regex (and the event stream with
the openai SDK's types and the spec, as for every client).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import lark
import pytest
from testsupport.gbnf_check import admits
from testsupport.sdk_check import assert_event_valid, assert_response_valid

from kernel.testing import AUTH_HEADERS
from plugins.local_model.lark_gbnf import lark_to_gbnf

pytestmark = pytest.mark.slow

WEATHER_CALL = '''start: "weather(" CITY ", " UNIT ")"
CITY: /[A-Z][a-z]{1,15}/
UNIT: "celsius" | "fahrenheit"
'''
CODEX = json.loads((Path(__file__).parents[1] / "openresponses" / "client_requests" /
                    "codex_0171_gpt55.json").read_text())
APPLY_PATCH = next(t for t in CODEX["tools"] if t["type"] == "custom")


def custom(name: str, syntax: str, definition: str) -> dict[str, Any]:
    return {"type": "custom", "name": name, "description": f"The {name} tool",
            "format": {"type": "grammar", "syntax": syntax, "definition": definition}}


@pytest.fixture
def http(make_app: Any, live_server: Any) -> Iterator[httpx.Client]:
    app = make_app({
        "plugins": {"local_model": {"enabled": True}, "openresponses": {"enabled": True}},
        "providers": {"local": {"kind": "local_model", "n_threads": 1, "seed": 7}},
        "agents": {"main": {"provider": "local"}},
    })
    with live_server(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=120) as client:
        yield client


def call_input(http: httpx.Client, tool: dict[str, Any], prompt: str, max_tokens: int) -> str:
    """Force ``tool`` on a streamed request; the custom_tool_call's input, every event checked."""
    body = {"model": "main", "input": prompt, "tools": [tool], "stream": True, "max_output_tokens": max_tokens,
            "tool_choice": {"type": "custom", "name": tool["name"]}}
    with http.stream("POST", "/v1/responses", json=body) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: {")]
    events = [json.loads(line[6:]) for line in lines]
    for event in events:
        assert_event_valid(event)
    final = events[-1]
    assert final["type"] == "response.completed", final
    [call] = assert_response_valid(final["response"]).output
    assert call.type == "custom_tool_call" and call.name == tool["name"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta")
    assert deltas == call.input
    print(f"{tool['name']}: {call.input!r}")
    return call.input


def test_lark_and_regex_grammars_constrain_the_input(http: httpx.Client) -> None:
    text = call_input(http, custom("weather", "lark", WEATHER_CALL), "Weather in Oslo, please", 40)
    lark.Lark(WEATHER_CALL, start="start").parse(text)  # raises unless the input is in the grammar

    pattern = r"(?:[A-Z][a-z]+ ){1,3}\(\d{4}\)"
    text = call_input(http, custom("cite", "regex", pattern), "Cite a famous paper", 40)
    assert re.fullmatch(pattern, text), text


# Codex's apply_patch grammar written as one regular expression, as an independent
# reference (lark's Earley parser refuses the grammar: its /(.*)/ terminals can be empty).
_HUNK = (r"\*\*\* Add File: .+\n(?:\+.*\n)+"
         r"|\*\*\* Delete File: .+\n"
         r"|\*\*\* Update File: .+\n(?:\*\*\* Move to: .+\n)?"
         r"(?:(?:(?:@@|@@ .+)\n|[-+ ].*\n)+(?:\*\*\* End of File\n)?)?")
PATCH = re.compile(rf"\*\*\* Begin Patch\n(?:{_HUNK})+\*\*\* End Patch\n?")


def test_codex_apply_patch_input_is_a_patch(http: httpx.Client) -> None:
    prompt = "Create the file hello.txt containing the line Hello"
    text = call_input(http, APPLY_PATCH, prompt, 300)
    assert PATCH.fullmatch(text), text
    # The reference regex agrees with the translated grammar on the answer.
    assert admits(lark_to_gbnf(APPLY_PATCH["format"]["definition"]), text)
