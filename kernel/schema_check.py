"""JSON Schemas sent by clients (tool parameters, structured-output formats), checked at the edge.

A schema that is not a JSON Schema (``"properties": []``) used to reach a provider and
fail there as a 500 (the echo provider's ``TypeError: unhashable type: 'list'``). Every
endpoint checks it against the JSON Schema 2020-12 meta-schema instead, and answers 400
naming the field.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from kernel.errors import ApiError

# Built once: the meta-schema's validator is the same for every request.
_META = Draft202012Validator(Draft202012Validator.META_SCHEMA)


def check_json_schema(schema: Any, param: str) -> None:
    """Raise a 400 naming ``param`` (and the place inside it) unless ``schema`` is a valid JSON Schema."""
    error = best_match(_META.iter_errors(schema))
    if error is None:
        return
    inner = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
    raise ApiError(400, f"invalid JSON Schema at '{param}{inner}': {error.message}", param=param,
                   code="invalid_value")
