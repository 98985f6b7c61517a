"""Sessions belong to the API key that made them; the main session only to those allowed it.

A real Hypercorn on loopback, two named keys (``alice``, ``bob``) beside the main secret,
both OpenAI-style endpoints and the hooks plugin. The agent echoes its whole view of the
conversation (one line per item), so every answer shows exactly which history it saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from quart import Quart

from kernel.errors import ConfigError
from kernel.testing import TEST_TOKEN

ALICE = "alice-secret-0123456789"
BOB = "bob-secret-0123456789"
HOOK_TOKEN = "hook-secret-0123456789abcdef"

CONFIG: dict[str, Any] = {
    "kernel": {
        "auth": {"keys": {"alice": {"secret": ALICE}, "bob": {"secret": BOB}}},
        "main_session_principal": "alice",
    },
    "providers": {"tx": {"kind": "echo", "mode": "transcript"}},
    "agents": {"main": {"provider": "tx"}},
    "plugins": {
        "openresponses": {"enabled": True},
        "chat_completions": {"enabled": True},
        "hooks": {"enabled": True, "token": HOOK_TOKEN},
    },
}


class Gateway:
    """One client per principal against the same server."""

    def __init__(self, base: str) -> None:
        self.base = base

    def ask(self, secret: str, endpoint: str, text: str, *, session: str | None = None,
            user: str | None = None) -> str:
        """One turn as the key ``secret``; the echoed view of the conversation."""
        headers = {"Authorization": f"Bearer {secret}"}
        if session is not None:
            headers["x-session-key"] = session
        if endpoint == "responses":
            body: dict[str, Any] = {"input": text}
        else:
            body = {"model": "agent:main", "messages": [{"role": "user", "content": text}]}
        if user is not None:
            body["user"] = user
        r = httpx.post(f"{self.base}/v1/{endpoint}", json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        data = r.json()
        if endpoint == "responses":
            return data["output"][0]["content"][0]["text"]
        return data["choices"][0]["message"]["content"]


@pytest.fixture
def gateway(make_app: Callable[..., Quart], live_server: Callable[[Quart], Any]) -> Iterator[Gateway]:
    with live_server(make_app(CONFIG)) as base:
        yield Gateway(base)


# The two ways a request names a session: the header, or a ``user`` value.
SAME_SESSION = {"header": {"session": "shared-session"}, "user": {"user": "u-1"}}


@pytest.mark.parametrize("endpoint", ["responses", "chat/completions"])
@pytest.mark.parametrize("kind", ["header", "user"])
def test_another_key_naming_the_same_session_gets_a_fresh_one(gateway: Gateway, endpoint: str, kind: str) -> None:
    names = SAME_SESSION[kind]
    assert gateway.ask(ALICE, endpoint, "alice secret one", **names) == "user: alice secret one"
    # bob names the same session: he sees none of alice's history ...
    assert gateway.ask(BOB, endpoint, "bob here", **names) == "user: bob here"
    # ... and wrote nothing into it: alice's next turn sees only her own conversation,
    # so her derived key (from `user`) is stable too.
    assert gateway.ask(ALICE, endpoint, "alice two", **names).splitlines() == [
        "user: alice secret one", "assistant: user: alice secret one", "user: alice two"]
    # The main secret is a principal of its own as well.
    assert gateway.ask(TEST_TOKEN, endpoint, "main secret", **names) == "user: main secret"
    # bob's session is his own and keeps his history.
    assert gateway.ask(BOB, endpoint, "bob again", **names).splitlines() == [
        "user: bob here", "assistant: user: bob here", "user: bob again"]


def wake(base: str, text: str) -> None:
    r = httpx.post(f"{base}/hooks/wake", json={"text": text, "mode": "next-heartbeat"},
                   headers={"Authorization": f"Bearer {HOOK_TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("endpoint", ["responses", "chat/completions"])
def test_the_main_session_is_reachable_only_by_the_configured_principal(gateway: Gateway, endpoint: str) -> None:
    main = "agent:main:main"
    wake(gateway.base, "webhook event: invoice 42 paid")
    for outsider in (BOB, TEST_TOKEN):
        # Not the main session: a private one of the same name, empty at first.
        assert gateway.ask(outsider, endpoint, "what happened?", session=main) == "user: what happened?"
    # alice is the configured main-session principal: she sees the webhook's event and
    # nothing the outsiders wrote under the same key.
    seen = gateway.ask(ALICE, endpoint, "and now?", session=main)
    assert seen.startswith("system: ") and seen.endswith(">>>\nuser: and now?")
    assert "webhook event: invoice 42 paid" in seen and "what happened?" not in seen


def test_a_hook_session_key_does_not_reach_an_api_keys_session(gateway: Gateway) -> None:
    assert gateway.ask(ALICE, "responses", "alice private", session="shared-session") == "user: alice private"
    r = httpx.post(f"{gateway.base}/hooks/agent",
                   json={"message": "from a webhook", "session_key": "shared-session", "summary_to_main": False},
                   headers={"Authorization": f"Bearer {HOOK_TOKEN}"}, timeout=30)
    assert r.status_code == 202, r.text
    status: dict[str, Any] = {}
    for _ in range(500):
        status = httpx.get(f"{gateway.base}/hooks/runs/{r.json()['run_id']}",
                           headers={"Authorization": f"Bearer {HOOK_TOKEN}"}, timeout=30).json()
        if status["finished_at"] is not None:
            break
        time.sleep(0.02)
    assert status["status"] == "completed"
    assert "alice private" not in status["output_text"]
    assert gateway.ask(ALICE, "responses", "still mine?", session="shared-session").splitlines() == [
        "user: alice private", "assistant: user: alice private", "user: still mine?"]


def test_the_main_secret_keeps_its_unprefixed_transcripts(make_app: Callable[..., Quart]) -> None:
    # Transcripts written before sessions were scoped are the main secret's: same stored key.
    sessions = make_app(CONFIG).extensions["kernel"].sessions
    assert sessions.scoped("default", "k") == sessions.scoped(None, "k") == "k"
    assert sessions.scoped("alice", "k") != "k" and sessions.scoped("bob", "k") != sessions.scoped("alice", "k")
    assert sessions.scoped("alice", "agent:main:main") == "agent:main:main"  # the configured principal
    assert sessions.scoped("hooks", "agent:main:main") == "agent:main:main"  # the hooks plugin
    assert sessions.scoped("default", "agent:main:main") != "agent:main:main"


@pytest.mark.parametrize(("kernel_table", "expected"), [
    ({"main_session_principal": "carol"}, "main_session_principal 'carol' is not a principal"),
    ({"auth": {"keys": {"default": {"secret": "x-secret-0123"}}}}, "'default' is the main secret's principal"),
    ({"auth": {"keys": {"hooks": {"secret": "x-secret-0123"}}}}, "the name 'hooks' is reserved"),
])
def test_principal_clashes_are_config_errors(make_app: Callable[..., Quart], kernel_table: dict[str, Any],
                                             expected: str) -> None:
    config = {**CONFIG, "kernel": kernel_table}
    with pytest.raises(ConfigError, match=expected):
        make_app(config)
