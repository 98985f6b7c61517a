"""Validate bodies and events against the published OpenResponses OpenAPI document."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import jsonschema

REPO = Path(__file__).resolve().parents[2]
SPEC_NAME = "openresponses-openapi.json"
# The published document as it sits beside the checkout in this workspace ...
SHARED_SPEC = REPO.parent / "shared" / "spec" / SPEC_NAME
# ... and a byte-identical copy of it in the repo, so a clone anywhere (CI) has it too;
# tests/plugins/openresponses/test_published_spec.py fails if the two ever differ.
VENDORED_SPEC = Path(__file__).resolve().parent / "published" / SPEC_NAME


def _spec_path() -> Path:
    given = os.environ.get("OPENRESPONSES_SPEC")
    if given:
        return Path(given)
    return SHARED_SPEC if SHARED_SPEC.exists() else VENDORED_SPEC


SPEC_PATH = _spec_path()


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
