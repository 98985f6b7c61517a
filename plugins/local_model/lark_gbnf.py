"""Lark grammars -> GBNF (for custom tools' ``lark`` grammars, e.g. Codex's apply_patch).

Lark itself reads the grammar (``lark.load_grammar``) and compiles it to plain BNF: rules
as lists of alternatives, each a sequence of rule and terminal names, with ``?``, ``*``,
``+``, ``[...]``, ``x ~ n..m``, grouping, aliases, inlined ``?rule``/``_rule`` rules,
templates and ``%import`` (lark's bundled ``common`` grammar, no network) already
expanded, and every terminal flattened to one regular expression. This module then
writes each rule as a GBNF rule and each terminal through :mod:`regex_gbnf`.

What is translated, exactly:

* rules, alternatives, sequences, string literals (``"..."``, ``"..."i``), and
  everything lark expands into those (``? * + [] ~``, groups, aliases, templates);
* terminals whose regular expression :mod:`regex_gbnf` supports (``/.../`` with
  flags ``i``/``s``, terminals built from other terminals and literals);
* ``%import`` of lark's ``common`` terminals, ``%ignore`` (the ignored terminals may
  appear between any two symbols and around the input);
* left recursion through the rule itself (``a: a "x" | "y"``, which is how lark
  compiles ``+``): rewritten as ``a ::= ("y") ("x")*``, the same language.

Not translated (the custom tool then gets free text, with a logged note): terminal
regexes :mod:`regex_gbnf` cannot express (lookaround, backreferences ...), left
recursion through other rules, ``%declare``\\ d terminals, and a grammar without a
``start`` rule. Terminal priorities and the lexer's longest-match rule are not
modelled: the GBNF admits the grammar's context-free language with each terminal's
regex language, which is what a parse of the finished input checks anyway.
"""

from __future__ import annotations

import re
from collections import defaultdict

from lark.exceptions import LarkError
from lark.lexer import TerminalDef
from lark.load_grammar import load_grammar

from plugins.local_model.regex_gbnf import Unsupported, quote, regex_to_gbnf

START = "start"
# A translation larger than this (a grammar exploding through templates or repeats) is not
# handed to llama.cpp, whose grammar stacks grow with it.
MAX_GBNF = 500_000
_IGNORE_RULE = "ignored"


def lark_to_gbnf(definition: str) -> str:
    """A complete GBNF grammar (``root`` first) for the lark grammar ``definition``.

    Raises :class:`Unsupported` naming the construct that cannot be expressed.
    """
    try:
        grammar, _ = load_grammar(definition, "<custom tool grammar>", [], False)
        terminals, rules, ignore_names = grammar.compile([START], "*")
    except LarkError as exc:
        raise Unsupported(f"lark could not compile the grammar: {str(exc).strip().splitlines()[0]}") from None
    except (RecursionError, ValueError, KeyError) as exc:
        raise Unsupported(f"lark could not compile the grammar: {exc}") from None
    by_origin: dict[str, list[list[tuple[str, bool]]]] = defaultdict(list)
    for rule in rules:
        by_origin[rule.origin.name].append([(s.name, s.is_term) for s in rule.expansion])
    if START not in by_origin:
        raise Unsupported(f"the grammar has no {START!r} rule")
    ignored = f" {_IGNORE_RULE}*" if ignore_names else ""
    lines = [f"root ::={ignored} {_rule_name(START)}{ignored}"]
    for name, alternatives in by_origin.items():
        lines.append(f"{_rule_name(name)} ::= {_alternatives(name, alternatives, bool(ignore_names))}")
    for terminal in terminals:
        lines.append(f"{_terminal_name(terminal.name)} ::= {_terminal(terminal)}")
    if ignore_names:
        lines.append(f"{_IGNORE_RULE} ::= " + " | ".join(_terminal_name(n) for n in ignore_names))
    gbnf = "\n".join(lines) + "\n"
    if len(gbnf) > MAX_GBNF:
        raise Unsupported(f"the translation is larger than {MAX_GBNF} characters")
    return gbnf


def _alternatives(name: str, alternatives: list[list[tuple[str, bool]]], ignoring: bool) -> str:
    def seq(symbols: list[tuple[str, bool]]) -> str:
        names = [_terminal_name(s) if is_term else _rule_name(s) for s, is_term in symbols]
        return (f" {_IGNORE_RULE}* " if ignoring else " ").join(names) if names else '""'

    recursive = [alt[1:] for alt in alternatives if alt and alt[0] == (name, False)]
    base = [alt for alt in alternatives if not (alt and alt[0] == (name, False))]
    if not recursive:
        return " | ".join(seq(alt) for alt in base)
    if not base:
        raise Unsupported(f"rule {name!r} only recurses into itself")
    gap = f" {_IGNORE_RULE}*" if ignoring else ""
    return (f"({' | '.join(seq(alt) for alt in base)}) "
            f"({gap} ({' | '.join(seq(alt) for alt in recursive)}))*")


def _terminal(terminal: TerminalDef) -> str:
    pattern = terminal.pattern
    if pattern.type == "str" and not pattern.flags:
        return quote(pattern.value) if pattern.value else '""'
    try:
        return regex_to_gbnf(pattern.to_regexp())
    except re.error as exc:
        raise Unsupported(f"terminal {terminal.name}: {exc}") from None
    except Unsupported as exc:
        raise Unsupported(f"terminal {terminal.name}: {exc}") from None


def _rule_name(name: str) -> str:
    return "r-" + _clean(name)


def _terminal_name(name: str) -> str:
    return "t-" + _clean(name)


def _clean(name: str) -> str:
    # GBNF names are [a-zA-Z0-9-]+; lark names are [a-zA-Z0-9_]+ (case kept: GBNF is case-sensitive).
    return name.replace("_", "-")
