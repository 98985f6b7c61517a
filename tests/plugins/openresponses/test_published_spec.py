"""The tests validate against the published OpenResponses document, never a drifting copy."""

from __future__ import annotations

import json

from testsupport.spec import SHARED_SPEC, VENDORED_SPEC, spec


def test_the_vendored_spec_is_the_published_document():
    vendored = VENDORED_SPEC.read_bytes()
    if SHARED_SPEC.exists():  # the workspace's published copy: the repo's must match it byte for byte
        assert vendored == SHARED_SPEC.read_bytes()
    doc = json.loads(vendored)
    assert doc["info"]["version"] == "2026-04-24"
    assert "ResponseResource" in doc["components"]["schemas"]
    assert spec()["info"]["version"] == "2026-04-24"
