"""Python regular expressions -> GBNF expressions (for custom tools' ``regex`` grammars).

The pattern is parsed by Python's own regex parser (``re._parser``, the one behind
``re.compile``), so the dialect is exactly the one requests are validated with, and
the parse tree is translated node by node. llama-cpp-python ships llama.cpp's pattern
converter too, but it copies escapes such as ``\\d`` into GBNF verbatim and rejects
``(?:...)``; a tree walk has neither problem.

Supported: literals and escapes, ``.`` (``[^\\n]``, or any character with ``s``),
character classes with ranges and negation, ``\\d \\w \\s`` and their negations (taken
as ASCII), groups (capturing, ``(?:...)``, named, with ``i``/``s`` flags),
alternation, ``? * +`` and ``{m}``/``{m,}``/``{m,n}`` up to :data:`MAX_REPEAT` (lazy
quantifiers too: they match the same strings), and ``^``/``\\A`` at the very start and
``$``/``\\Z`` at the very end (the whole input must match anyway). Anything else
(lookaround, backreferences, word boundaries, anchors inside, atomic groups,
possessive quantifiers, conditionals) raises :class:`Unsupported`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from re import _constants as c  # type: ignore[attr-defined]
from re import _parser as sre  # type: ignore[attr-defined]
from typing import Any

MAX_REPEAT = 256


class Unsupported(Exception):
    """The pattern uses something GBNF cannot express (the message says what)."""


@dataclass(frozen=True, slots=True)
class _Flags:
    ignorecase: bool = False
    dotall: bool = False

    def with_(self, add: int, remove: int) -> _Flags:
        known = re.IGNORECASE | re.DOTALL | re.MULTILINE | re.VERBOSE | re.UNICODE | re.ASCII
        if (add | remove) & ~known:
            raise Unsupported("inline flags other than i, s, m, x, u, a")
        ignorecase = (self.ignorecase or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE
        dotall = (self.dotall or bool(add & re.DOTALL)) and not remove & re.DOTALL
        return _Flags(ignorecase, dotall)


_BEGIN = {c.AT_BEGINNING, c.AT_BEGINNING_STRING}
_END = {c.AT_END, c.AT_END_STRING}
_CLASS = {
    c.CATEGORY_DIGIT: "0-9",
    c.CATEGORY_WORD: "0-9A-Za-z_",
    c.CATEGORY_SPACE: r" \t\n\r\x0B\x0C",
}
_NEGATED = {c.CATEGORY_NOT_DIGIT: c.CATEGORY_DIGIT, c.CATEGORY_NOT_WORD: c.CATEGORY_WORD,
            c.CATEGORY_NOT_SPACE: c.CATEGORY_SPACE}


def regex_to_gbnf(pattern: str, flags: int = 0) -> str:
    """One GBNF expression matching exactly the strings ``re.fullmatch(pattern, s)`` accepts
    (``\\d \\w \\s`` as ASCII). Raises :class:`Unsupported` or ``re.error``."""
    parsed = sre.parse(pattern, flags)
    items = list(parsed)
    if items and items[0][0] is c.AT and items[0][1] in _BEGIN:
        items = items[1:]
    if items and items[-1][0] is c.AT and items[-1][1] in _END:
        items = items[:-1]
    return _sequence(items, _Flags().with_(parsed.state.flags, 0))


def _sequence(items: list[tuple[Any, Any]], flags: _Flags) -> str:
    return _parts(items, flags)[0]


def _parts(items: list[tuple[Any, Any]], flags: _Flags) -> tuple[str, bool]:
    """The sequence's expression and whether it is one atom (safe to quantify as is)."""
    parts: list[tuple[str, bool]] = []
    literal: list[str] = []
    for op, arg in items:
        if op is c.LITERAL and not (flags.ignorecase and chr(arg).lower() != chr(arg).upper()):
            literal.append(chr(arg))
            continue
        if literal:
            parts.append((quote("".join(literal)), True))
            literal = []
        parts.append(_node(op, arg, flags))
    if literal:
        parts.append((quote("".join(literal)), True))
    if not parts:
        return '""', True
    if len(parts) == 1:
        return parts[0]
    return " ".join(p for p, _ in parts), False


def _node(op: Any, arg: Any, flags: _Flags) -> tuple[str, bool]:
    if op is c.LITERAL:  # a cased letter under ignorecase
        return "[" + _class_char(chr(arg).lower()) + _class_char(chr(arg).upper()) + "]", True
    if op is c.NOT_LITERAL:
        chars = {chr(arg), chr(arg).lower(), chr(arg).upper()} if flags.ignorecase else {chr(arg)}
        return "[^" + "".join(_class_char(ch) for ch in sorted(chars)) + "]", True
    if op is c.ANY:
        return ("." if flags.dotall else r"[^\x0A]"), True
    if op is c.IN:
        return _char_class(arg, flags), True
    if op is c.BRANCH:
        return "(" + " | ".join(_sequence(list(branch), flags) for branch in arg[1]) + ")", True
    if op is c.SUBPATTERN:
        _group, add, remove, sub = arg
        return "(" + _sequence(list(sub), flags.with_(add, remove)) + ")", True
    if op in (c.MAX_REPEAT, c.MIN_REPEAT):
        low, high, sub = arg
        return _repeat(_parts(list(sub), flags), low, high), False
    if op is c.AT:
        raise Unsupported(f"the anchor {str(arg).lower()} inside the pattern")
    raise Unsupported(str(op).lower().replace("_", " "))


def _repeat(inner: tuple[str, bool], low: int, high: int) -> str:
    expr, atom = inner
    operand = expr if atom else f"({expr})"
    unbounded = high == c.MAXREPEAT
    if low > MAX_REPEAT or (not unbounded and high > MAX_REPEAT):
        raise Unsupported(f"a repetition count above {MAX_REPEAT}")
    if unbounded:
        return operand + ("*" if low == 0 else "+" if low == 1 else f"{{{low},}}")
    if (low, high) == (0, 1):
        return operand + "?"
    return operand + (f"{{{low}}}" if low == high else f"{{{low},{high}}}")


def _char_class(items: list[tuple[Any, Any]], flags: _Flags) -> str:
    negate = bool(items) and items[0][0] is c.NEGATE
    body = items[1:] if negate else items
    if len(body) == 1 and body[0][0] is c.CATEGORY and body[0][1] in _NEGATED:
        # [\D] and \D: the negated ASCII class; a negated category mixed with others is not expressible.
        inner = _CLASS[_NEGATED[body[0][1]]]
        return f"[{inner}]" if negate else f"[^{inner}]"
    out: list[str] = []
    for op, arg in body:
        if op is c.LITERAL:
            out.extend(_class_char(ch) for ch in _cased(chr(arg), flags))
        elif op is c.RANGE:
            low, high = arg
            out.append(f"{_class_char(chr(low))}-{_class_char(chr(high))}")
            if flags.ignorecase:
                out.extend(_class_char(ch) for ch in _swapped_letters(low, high))
        elif op is c.CATEGORY and arg in _CLASS:
            out.append(_CLASS[arg])
        else:
            raise Unsupported(f"{str(op).lower()} {str(arg).lower()} in a character class")
    if not out:
        raise Unsupported("an empty character class")
    return "[" + ("^" if negate else "") + "".join(out) + "]"


def _cased(ch: str, flags: _Flags) -> set[str]:
    return {ch, ch.lower(), ch.upper()} if flags.ignorecase and len(ch.upper()) == 1 else {ch}


def _swapped_letters(low: int, high: int) -> list[str]:
    """Under ignorecase, the other-case ASCII letters of a range (at most 52)."""
    letters = [chr(i) for i in range(max(low, 0x41), min(high, 0x7A) + 1) if chr(i).isalpha()]
    return sorted({ch.swapcase() for ch in letters} - set(letters))


def quote(text: str) -> str:
    """A GBNF string literal for ``text``."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\' or code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _class_char(ch: str) -> str:
    """One character inside ``[...]``: letters, digits and space as they are, the rest escaped."""
    if ch.isascii() and (ch.isalnum() or ch == " "):
        return ch
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"
