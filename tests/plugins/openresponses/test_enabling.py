"""Turning the plugin on, its options and their defaults, and options taking effect on a real server."""

from __future__ import annotations

import base64

import httpx
import pytest
from testsupport.spec import assert_valid

from kernel.config import ConfigError
from kernel.media import MediaLimits
from kernel.testing import AUTH_HEADERS
from plugins.openresponses.settings import OpenResponsesSettings

from .test_live_media import PNG_URL, tiny_png


async def test_off_by_default_and_independent_of_chat_completions(make_app):
    async def statuses(config: dict) -> tuple[int, int]:
        async with make_app(config).test_app() as test_app:
            client = test_app.test_client()
            responses = await client.post("/v1/responses", json={"input": "x"}, headers=AUTH_HEADERS)
            chat = await client.post("/v1/chat/completions", headers=AUTH_HEADERS,
                                     json={"messages": [{"role": "user", "content": "x"}]})
            return responses.status_code, chat.status_code

    assert await statuses({}) == (404, 404)
    assert await statuses({"plugins": {"openresponses": {"enabled": True}}}) == (200, 404)
    assert await statuses({"plugins": {"chat_completions": {"enabled": True}}}) == (404, 200)


def test_defaults_are_the_documented_ones():
    settings = OpenResponsesSettings()
    assert settings.max_body_bytes == 20 * 1024 * 1024
    assert settings.run_timeout_seconds is None and settings.keepalive_seconds == 15
    media = settings.media
    assert media == MediaLimits()
    assert media.image_mime_types == ["image/jpeg", "image/png", "image/gif", "image/webp"]
    assert media.max_image_bytes == 10 * 1024 * 1024
    assert media.file_mime_types == ["text/plain", "text/markdown", "text/html", "text/csv", "application/json",
                                     "application/pdf"]
    assert media.max_file_bytes == 5 * 1024 * 1024 and media.max_file_chars == 200_000


def test_a_misspelt_option_is_a_config_error_naming_it(make_app):
    with pytest.raises(ConfigError, match="max_body_byte"):
        make_app({"plugins": {"openresponses": {"enabled": True, "max_body_byte": 10}}})


def _error_param(resp: httpx.Response) -> str:
    assert resp.status_code == 400, resp.text
    return resp.json()["error"]["param"]


def test_media_limits_come_from_the_plugin_table(make_app, live_server):
    png = tiny_png()
    app = make_app({"plugins": {"openresponses": {"enabled": True, "media": {
        "max_image_bytes": len(png) - 1, "file_mime_types": ["text/plain"], "max_file_chars": 5,
        "max_total_bytes": 10}}}})

    def user(*parts: dict) -> dict:
        return {"input": [{"role": "user", "content": list(parts)}], "store": False}

    txt = base64.b64encode(b"0123456789abc").decode()
    with live_server(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as client:
        too_big = client.post("/v1/responses", json=user({"type": "input_image", "image_url": PNG_URL}))
        assert _error_param(too_big) == "input[0].content[0].image_url"
        assert "max_image_bytes" in too_big.json()["error"]["message"]
        csv = client.post("/v1/responses", json=user({"type": "input_file", "filename": "a.csv",
                                                      "file_data": base64.b64encode(b"a,b").decode()}))
        assert _error_param(csv) == "input[0].content[0].file_data"
        total = client.post("/v1/responses", json=user(
            {"type": "input_file", "filename": "a.txt", "file_data": base64.b64encode(b"abcdef").decode()},
            {"type": "input_file", "filename": "b.txt", "file_data": base64.b64encode(b"ghijkl").decode()}))
        assert _error_param(total) == "input[0].content[1].file_data"
        cut = client.post("/v1/responses", json=user({"type": "input_file", "filename": "a.txt", "file_data": txt}))
        # 13 bytes fit no total of 10: the per-request cap applies to a single file too.
        assert _error_param(cut) == "input[0].content[0].file_data"


def test_max_file_chars_cuts_extracted_text(make_app, live_server):
    app = make_app({"plugins": {"openresponses": {"enabled": True, "media": {"max_file_chars": 5}}},
                    "providers": {"t": {"kind": "echo", "mode": "transcript"}}, "agents": {"main": {"provider": "t"}}})
    with live_server(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as client:
        resp = client.post("/v1/responses", json={"store": False, "input": [{"role": "user", "content": [
            {"type": "input_file", "filename": "a.txt", "file_data": base64.b64encode(b"0123456789").decode()}]}]})
    assert resp.status_code == 200, resp.text
    text = resp.json()["output"][0]["content"][0]["text"]
    assert "01234" in text and "0123456" not in text


def test_run_timeout_fails_the_response(make_app, live_server, sse):
    app = make_app({"plugins": {"openresponses": {"enabled": True, "run_timeout_seconds": 0.3}},
                    "providers": {"slow": {"kind": "echo", "delay_seconds": 0.2}},
                    "agents": {"main": {"provider": "slow"}}})
    words = " ".join(f"w{i}" for i in range(100))  # 20 s of words: only the timeout ends this run
    with live_server(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as client:
        resp = client.post("/v1/responses", json={"input": words, "store": False})
        assert resp.status_code == 504, resp.text
        body = resp.json()
        assert_valid("ResponseResource", body)
        assert body["status"] == "failed" and body["error"]["code"] == "timeout"
        assert "timed out" in body["error"]["message"]
        with client.stream("POST", "/v1/responses", json={"input": words, "store": False, "stream": True}) as s:
            raw = s.read()
        assert s.status_code == 200  # the stream had started: the failure is in its events
    events = sse.parse(raw)
    sse.check(events)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1]["response"]["error"]["code"] == "timeout"
