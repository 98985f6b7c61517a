"""Schemas -> grammars, and the stop-string filter of the token loop (no model needed)."""

from __future__ import annotations

import pytest

from plugins.local_model.engine import StopFilter
from plugins.local_model.grammar import GrammarError, choice_grammar, object_grammar, schema_grammar


def test_schema_grammar_names_required_properties_and_enum_values() -> None:
    gbnf = schema_grammar({"type": "object", "properties": {"unit": {"enum": ["c", "f"]}}, "required": ["unit"]})
    assert "root ::=" in gbnf
    assert '\\"unit\\"' in gbnf and '\\"c\\"' in gbnf and '\\"f\\"' in gbnf


def test_unconvertible_schema_is_an_error_and_object_grammar_falls_back() -> None:
    bad = {"type": "no-such-type"}
    with pytest.raises(GrammarError, match="cannot build a grammar"):
        schema_grammar(bad)
    assert object_grammar(bad, "tool 'x'") == object_grammar(None, "response format")


def test_choice_grammar_admits_exactly_the_names() -> None:
    gbnf = choice_grammar(["get_weather", "send_email"])
    assert gbnf.count('\\"get_weather\\"') == 1 and gbnf.count('\\"send_email\\"') == 1


def run_filter(stops: list[str], pieces: list[str]) -> tuple[list[str], bool, str]:
    sent: list[str] = []
    f = StopFilter(stops, sent.append)
    stopped = False
    for piece in pieces:
        if f.feed(piece):
            stopped = True
            break
    f.flush()
    return sent, stopped, f.text


def test_stop_filter_passes_text_through_without_stops() -> None:
    assert run_filter([], ["a", "b"]) == (["a", "b"], False, "ab")


def test_stop_filter_cuts_at_a_stop_string_split_across_pieces() -> None:
    sent, stopped, text = run_filter(["END"], ["hello E", "N", "D and more"])
    assert stopped and text == "hello " and "".join(sent) == "hello "


def test_stop_filter_releases_a_false_alarm() -> None:
    sent, stopped, text = run_filter(["END"], ["hello E", "NX"])
    assert not stopped and text == "hello ENX"
    assert sent[0] == "hello "  # "E" was held back until it could not start "END"
