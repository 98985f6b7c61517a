"""JSON schemas -> GBNF grammars, so constrained output always parses.

llama.cpp's grammar sampler only lets the model pick tokens that keep the output a
prefix of the grammar's language, and only lets it stop once the value is complete.
The converter is llama-cpp-python's port of llama.cpp's ``json_schema_to_grammar``:
it enforces types, required/optional properties, enums/consts, anyOf/oneOf, $ref,
array item counts and string lengths. Numeric bounds (minimum/maximum) and ``pattern``
on plain strings are not enforced by the grammar.

Custom (freeform) tools' ``lark`` and ``regex`` grammars are translated by
:mod:`plugins.local_model.lark_gbnf` and :mod:`plugins.local_model.regex_gbnf`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

from plugins.local_model.lark_gbnf import lark_to_gbnf
from plugins.local_model.regex_gbnf import Unsupported, regex_to_gbnf

log = logging.getLogger("plugins.local_model")

# Any JSON object (used for `json_object` and as the fallback for schemas the converter rejects).
ANY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


class GrammarError(Exception):
    """A schema could not be turned into a grammar."""


def schema_grammar(schema: dict[str, Any]) -> str:
    """The GBNF grammar for JSON values valid under ``schema``.

    Raises :class:`GrammarError` with the converter's reason when the schema uses
    something it cannot express (an unknown type, an unresolvable ``$ref`` ...).
    """
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except (AssertionError, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise GrammarError(f"cannot build a grammar from this JSON schema: {exc}") from None


def object_grammar(schema: dict[str, Any] | None, what: str) -> str:
    """``schema``'s grammar, or any JSON object when the schema cannot be converted.

    The fallback still guarantees parseable JSON; ``what`` names the schema's owner
    in the warning (e.g. ``tool 'get_weather'``).
    """
    if schema is None:
        return schema_grammar(ANY_OBJECT_SCHEMA)
    try:
        return schema_grammar(schema)
    except GrammarError as exc:
        log.warning("%s: %s; falling back to any JSON object", what, exc)
        return schema_grammar(ANY_OBJECT_SCHEMA)


def choice_grammar(options: list[str]) -> str:
    """A grammar whose only sentences are the JSON strings of ``options``."""
    return schema_grammar({"enum": list(options)})


def custom_tool_grammar(fmt: dict[str, Any] | None, what: str) -> str | None:
    """The GBNF grammar constraining a custom tool's input, or None for free text.

    ``fmt`` is the tool's ``format``: ``{"type": "text"}`` is free text; a ``lark``
    grammar goes through :func:`lark_to_gbnf`, a ``regex`` through :func:`regex_to_gbnf`
    (docs/local_model.md lists what each supports). A grammar outside that subset
    is logged with the reason (``what`` names the tool) and the input is free text.
    """
    fmt = fmt or {}
    if fmt.get("type") != "grammar":
        return None
    syntax = str(fmt.get("syntax"))
    gbnf, reason = _translate(syntax, str(fmt.get("definition", "")))
    if gbnf is None:
        log.warning("%s: its %s grammar cannot be enforced by llama.cpp (%s); the input is free text, "
                    "with the grammar stated in the prompt", what, syntax, reason)
    return gbnf


@functools.lru_cache(maxsize=64)
def _translate(syntax: str, definition: str) -> tuple[str | None, str]:
    """(GBNF, "") or (None, why not); cached: clients send the same tools every turn."""
    try:
        if syntax == "lark":
            return lark_to_gbnf(definition), ""
        if syntax == "regex":
            return f"root ::= {regex_to_gbnf(definition)}\n", ""
    except (Unsupported, re.error) as exc:
        return None, str(exc)
    return None, f"unknown grammar syntax {syntax!r}"
