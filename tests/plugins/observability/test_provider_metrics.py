"""Provider-side metrics: upstream retries by fault, the local model's queue depth and its 429s."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from quart import Quart
from testsupport.fake_openai import FakeOpenAI, error_reply, stream_reply, text_chunks, usage

from kernel.testing import AUTH_HEADERS

from .support import delta, scrape, value


def ask(base: str, model: str = "main") -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", headers=AUTH_HEADERS, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def test_upstream_retries_and_client_token_usage(make_app: Callable[..., Quart], live_server: Any) -> None:
    with FakeOpenAI() as fake:
        fake.script(error_reply(503, "busy"), error_reply(500, "oops"),
                    stream_reply(text_chunks("fine", usage_=usage(5, 1))))
        app = make_app({
            "plugins": {"observability": {"enabled": True}, "chat_completions": {"enabled": True},
                        "openai_upstream": {"enabled": True}},
            "providers": {"up": {"kind": "openai_upstream", "base_url": fake.base_url, "model": "fake-model",
                                 "max_retries": 2, "backoff_initial": 0.01, "backoff_max": 0.02}},
            "agents": {"main": {"provider": "up"}},
        })
        with live_server(app) as base:
            before = scrape(base)
            assert ask(base).status_code == 200
            after = scrape(base)
    assert delta(before, after, "agentkernel_provider_retries_total", provider="up", kind="upstream_error") == 2
    assert delta(before, after, "gen_ai_client_token_usage_sum", provider="up", gen_ai_token_type="input") == 5
    assert delta(before, after, "gen_ai_client_token_usage_count", provider="up", gen_ai_token_type="input") == 1
    assert delta(before, after, "agentkernel_tokens_total", provider="up", gen_ai_token_type="output") == 1


def test_local_model_queue_depth_and_429s(make_app: Callable[..., Quart], live_server: Any) -> None:
    app = make_app({
        "plugins": {"observability": {"enabled": True}, "chat_completions": {"enabled": True},
                    "local_model": {"enabled": True}},
        "providers": {"local": {"kind": "local_model", "max_queue": 2}},
        "agents": {"local": {"provider": "local"}},
    })
    provider = app.extensions["kernel"].providers["local"]
    with live_server(app) as base:
        assert value(scrape(base), "agentkernel_local_model_queue_depth", provider="local") == 0
        for _ in range(provider.gate.capacity):  # every place in the line taken (nothing loads the model)
            provider.gate.admit()
        before = scrape(base)
        assert value(before, "agentkernel_local_model_queue_depth", provider="local") == 3
        refused = ask(base, model="local")
        assert refused.status_code == 429 and "retry-after" in refused.headers
        after = scrape(base)
    code = refused.json()["error"]["code"]
    assert delta(before, after, "agentkernel_runs_rejected_total", provider="local", code=code) == 1
    assert delta(before, after, "http_server_requests_total", route="/v1/chat/completions", status="429") == 1
