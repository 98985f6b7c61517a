"""The shipped plugins.toml answers the README's first request with the bundled model:
no upstream, no API key, only loopback (served by a real Hypercorn)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from testsupport.spec import assert_valid

from kernel.testing import AUTH_HEADERS, TEST_TOKEN, build_app, merge
from plugins.local_model.provider import LocalModelProvider

pytestmark = pytest.mark.slow

SHIPPED = Path(__file__).resolve().parents[3] / "plugins.toml"


def test_readme_first_request_gets_a_real_local_model_answer(live_server: Any, tmp_path: Path) -> None:
    shipped = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    main = shipped["agents"]["main"]
    assert shipped["providers"][main["provider"]]["kind"] == "local_model"
    assert "model_path" not in shipped["providers"][main["provider"]]  # the bundled GGUF
    # Only what a test must change: a private state folder and a known token.
    config = merge(shipped, {"kernel": {"state_dir": str(tmp_path / "state"), "auth": {"token": TEST_TOKEN},
                                        "access_log": False}})
    app = build_app(config, tmp_path / "plugins.toml")
    provider = app.extensions["kernel"].providers[main["provider"]]
    assert isinstance(provider, LocalModelProvider)
    with live_server(app) as base:
        assert provider.loaded  # load = "startup": loaded before the first request
        # The README's curl command.
        resp = httpx.post(f"{base}/v1/responses", headers=AUTH_HEADERS, timeout=120,
                          json={"model": "agent:main", "input": "Say hello"})
    assert resp.status_code == 200
    body = resp.json()
    assert_valid("ResponseResource", body)
    assert body["status"] in ("completed", "incomplete")
    text = "".join(part["text"] for item in body["output"] if item["type"] == "message"
                   for part in item["content"])
    assert text.strip() and body["usage"]["output_tokens"] > 0
    assert provider.last_stats is not None and provider.last_stats.output_tokens == body["usage"]["output_tokens"]
