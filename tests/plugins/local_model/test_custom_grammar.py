"""Custom tools' lark and regex grammars -> GBNF, checked by llama.cpp's own grammar sampler.

Each translation is compared with the reference implementation of its source dialect:
for every sample string, llama.cpp admits it under the GBNF exactly when Python's
``re.fullmatch`` (regex) or lark's own parser (lark) accepts it. Only the bundled
model's vocabulary is loaded (testsupport.gbnf_check), so these run in milliseconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import lark
import pytest
from testsupport.gbnf_check import admits, parses

from plugins.local_model.grammar import custom_tool_grammar
from plugins.local_model.lark_gbnf import lark_to_gbnf
from plugins.local_model.regex_gbnf import Unsupported, regex_to_gbnf

CODEX = json.loads((Path(__file__).parents[1] / "openresponses" / "client_requests" /
                    "codex_0171_gpt55.json").read_text())
APPLY_PATCH = next(t for t in CODEX["tools"] if t["type"] == "custom")["format"]["definition"]


def regex_grammar(pattern: str) -> str:
    return f"root ::= {regex_to_gbnf(pattern)}\n"


@pytest.mark.parametrize("pattern, expected", [
    (r"^\d{3}-\d{4}$", '[0-9]{3} "-" [0-9]{4}'),
    (r"(?:foo|bar)+!?", '("foo" | "bar")+ "!"?'),
    (r"[^\"\\]*", r"[^\x22\x5C]*"),
    (r".+", r"[^\x0A]+"),
    (r"(?s).*", ".*"),
    (r"(?i)ok", "[oO] [kK]"),
    (r"\w+@\w+\.com", '[0-9A-Za-z_]+ "@" [0-9A-Za-z_]+ ".com"'),
    (r"x{2,}y{0,3}", '"x"{2,} "y"{0,3}'),
    (r"", '""'),
])
def test_regex_translations_read_as_expected(pattern, expected):
    assert regex_to_gbnf(pattern) == expected


REGEX_SAMPLES = {
    r"\d{3}-\d{4}": ["555-1234", "55-1234", "555-12345", "abc-defg", ""],
    r"(?:foo|bar)+!?": ["foo", "foobar!", "bar!!", "!", "fooba"],
    r"(?i)yes|no": ["yes", "YeS", "NO", "nope", "yesno"],
    r"[A-Z][a-z]*(?: [A-Z][a-z]*)*": ["Ada", "Ada Lovelace", "ada", "Ada lovelace", "Ada  Lovelace"],
    r"[^,\n]+(?:,[^,\n]+)*": ["a,b,c", "a,,b", "a b, c d", ",a", "a\nb"],
    r"\s*\w+\s*=\s*\d+(?:\.\d+)?\s*": ["x = 1", " rate=0.25 ", "x = 1.", "= 3", "x = 1.5.2"],
    r"[-+]?\d*\.?\d+": ["-1", "+.5", "3.14", "1.", "--1"],
    r"\[(?:\"[a-z]+\"(?:,\"[a-z]+\")*)?\]": ['[]', '["a","bc"]', '["a",]', '[a]', '["A"]'],
}


@pytest.mark.parametrize("pattern", list(REGEX_SAMPLES))
def test_regex_grammar_admits_exactly_what_fullmatch_accepts(pattern):
    gbnf = regex_grammar(pattern)
    assert parses(gbnf), gbnf
    for sample in REGEX_SAMPLES[pattern]:
        expected = re.fullmatch(pattern, sample) is not None
        assert admits(gbnf, sample) == expected, (pattern, sample, gbnf)


@pytest.mark.parametrize("pattern, reason", [
    (r"(?=a)\w+", "assert"),
    (r"(a)\1", "groupref"),
    (r"\bword\b", "at_boundary"),
    (r"a^b", "anchor"),
    (r"a{300}", "repetition count above 256"),
    (r"(?>ab)c", "atomic"),
])
def test_regex_features_outside_the_subset_are_named(pattern, reason):
    with pytest.raises(Unsupported, match=reason):
        regex_to_gbnf(pattern)


PATCHES_OK = [
    "*** Begin Patch\n*** Add File: hello.txt\n+Hello from the gateway\n*** End Patch\n",
    "*** Begin Patch\n*** Delete File: old.txt\n*** End Patch",
    "*** Begin Patch\n*** Update File: src/app.py\n*** Move to: src/main.py\n@@ def main():\n"
    "-    return 1\n+    return 2\n     pass\n*** End of File\n*** End Patch\n",
    "*** Begin Patch\n*** Update File: a\n@@\n+x\n*** Add File: b\n+\n+y\n*** End Patch\n",
]
PATCHES_BAD = [
    "*** Add File: hello.txt\n+Hello\n*** End Patch\n",  # no Begin Patch
    "*** Begin Patch\n*** End Patch\n",  # no hunk
    "*** Begin Patch\n*** Add File: hello.txt\nHello\n*** End Patch\n",  # added line without "+"
    "*** Begin Patch\n*** Add File: hello.txt\n+Hello\n",  # no End Patch
    "*** Begin Patch\n*** Update File: a\n@@\n*x\n*** End Patch\n",  # change line with a bad prefix
]


def test_codex_apply_patch_grammar_is_enforced_exactly():
    # lark's own Earley parser refuses this grammar (its /(.*)/ terminals can match
    # nothing), so the expectations are read off the grammar by hand.
    gbnf = lark_to_gbnf(APPLY_PATCH)
    assert parses(gbnf)
    for patch in PATCHES_OK:
        assert admits(gbnf, patch), patch
    for patch in PATCHES_BAD:
        assert not admits(gbnf, patch), patch


LARK_CASES = {
    # %import of common terminals, %ignore between symbols, * and grouping
    'start: WORD ("," WORD)*\n%import common.WORD\n%import common.WS\n%ignore WS':
        ["a,b", "  alpha , beta,gamma ", "a,,b", "a b", ",a"],
    # left recursion (how lark compiles +), common.NUMBER's composed regex, ? and aliases
    'start: start "+" term -> add\n     | term\nterm: NUMBER ("*" NUMBER)?\n%import common.NUMBER':
        ["1", "1+2*3+4.5", "1e3+2", "1++2", "+1", "1*", "2*3*4"],
    # case-insensitive literals, [] optional, regex terminal with a flag, inlined ?rule
    'start: "select"i _cols ["where"i COND]\n_cols: COL ("," COL)*\nCOL: /[a-z_]+/i\nCOND: / [^;]+/\n':
        ["SELECT a,b", "select A where x>1", "select", "Select a where", "select a;"],
    # repetition ranges and a nested rule
    'start: pair~1..3\npair: KEY "=" VALUE ";"\nKEY: /[a-z]+/\nVALUE: /\\d+/':
        ["a=1;", "a=1;b=22;c=3;", "a=1;b=2;c=3;d=4;", "a=1", "=1;"],
}


@pytest.mark.parametrize("definition", list(LARK_CASES))
def test_lark_grammar_admits_exactly_what_lark_parses(definition):
    gbnf = lark_to_gbnf(definition)
    assert parses(gbnf), gbnf
    parser = lark.Lark(definition, start="start")
    for sample in LARK_CASES[definition]:
        try:
            parser.parse(sample)
            expected = True
        except lark.exceptions.LarkError:
            expected = False
        assert admits(gbnf, sample) == expected, (sample, gbnf)


@pytest.mark.parametrize("definition, reason", [
    ("begin: \"x\"", "no 'start' rule"),
    ('start: A\nA: /(?<=x)y/', "terminal A: assert"),
    ("start: \"a\" (", "lark could not compile"),
])
def test_lark_grammars_outside_the_subset_are_named(definition, reason):
    with pytest.raises(Unsupported, match=re.escape(reason)):
        lark_to_gbnf(definition)


def test_left_recursion_through_another_rule_is_left_to_llama_cpp_which_refuses():
    gbnf = lark_to_gbnf('start: other "x" | "y"\nother: start "z"')
    assert not parses(gbnf)  # the runner checks every grammar first and falls back to free text


def test_custom_tool_grammar_logs_and_falls_back(caplog):
    assert custom_tool_grammar({"type": "text"}, "custom tool 't'") is None
    assert custom_tool_grammar({"type": "grammar", "syntax": "regex", "definition": r"\d+"}, "t") == \
        "root ::= [0-9]+\n"
    assert custom_tool_grammar({"type": "grammar", "syntax": "regex", "definition": r"(a)\1"},
                               "custom tool 'backref'") is None
    assert "custom tool 'backref': its regex grammar cannot be enforced by llama.cpp (groupref)" in caplog.text


def test_an_oversized_translation_is_refused(monkeypatch):
    import plugins.local_model.lark_gbnf as lark_gbnf

    monkeypatch.setattr(lark_gbnf, "MAX_GBNF", 1000)
    small = 'start: "a" ~ 1..3'
    assert lark_to_gbnf(small)
    with pytest.raises(Unsupported, match="larger than 1000 characters"):
        lark_to_gbnf('start: ' + " | ".join(f'"word{i}"' for i in range(100)))
