"""Validate bodies and events against the published OpenResponses OpenAPI document."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import jsonschema

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = Path(os.environ.get("OPENRESPONSES_SPEC", REPO.parent / "shared" / "spec" / "openresponses-openapi.json"))


@functools.cache
def spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


@functools.cache
def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    """A validator for ``#/components/schemas/<schema_name>``."""
    doc = spec()
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]}
    )


@functools.cache
def stream_event_validator() -> jsonschema.Draft202012Validator:
    """The union of streamed events: POST /responses' text/event-stream schema."""
    doc = spec()
    op = doc["paths"]["/responses"]["post"]
    schema = op["responses"]["200"]["content"]["text/event-stream"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def assert_valid(schema_name: str, body: Any) -> None:
    """Raise with every schema violation listed."""
    errors = sorted(validator(schema_name).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        raise AssertionError(_describe(schema_name, errors))


def assert_valid_event(event: Any) -> None:
    errors = list(stream_event_validator().iter_errors(event))
    if errors:
        raise AssertionError(_describe(f"stream event {event.get('type')!r}", errors))


def _describe(what: str, errors: list[jsonschema.ValidationError]) -> str:
    lines = [f"{what} is not valid against the OpenResponses spec:"]
    for e in errors[:10]:
        best = jsonschema.exceptions.best_match([e])
        lines.append(f"  at {'/'.join(map(str, best.absolute_path)) or '(root)'}: {best.message[:300]}")
    return "\n".join(lines)
