"""Mapped hooks against a real server: templates, match rules, the GitHub preset, transforms."""

from __future__ import annotations

import json
import re

from kernel import hookimpl
from plugins.hooks.gate import signature_for
from plugins.hooks.settings import DEFAULT_INSTRUCTIONS

ALERTS = {
    "mappings": [
        {
            "path": "alerts",
            "match": {"payload.kind": ["disk", "inode"]},
            "name": "Disk {{payload.host}}",
            "session_key": "hook:alerts:{{payload.host}}",
            "wake_mode": "{{query.wake}}",
            "message": (
                "{{payload.kind}} on {{payload.host}} at {{payload.metrics[0].value}}% "
                "(2nd: {{payload.metrics.1.value}}) via {{headers.x-source}} env={{query.env}} hook={{path}} "
                "at={{now}} auth=[{{headers.authorization}}] cookie=[{{headers.cookie}}] "
                "token=[{{headers.x-hook-token}}] missing=[{{payload.nope.deeper}}] none=[{{payload.metrics[9]}}]"
            ),
        },
        {"path": "alerts", "action": "wake", "wake_mode": "next-heartbeat",
         "message": "Other alert: {{payload.kind}} tags={{payload.tags}}"},
        {"path": "strict", "match": {"headers.x-source": "monitor"}, "action": "wake",
         "wake_mode": "next-heartbeat", "message": "strict {{payload.x}}"},
    ],
}

PUSH = {
    "ref": "refs/heads/main",
    "repository": {"full_name": "owner/repo"},
    "pusher": {"name": "alice"},
    "sender": {"login": "alice"},
    "commits": [
        {"id": "abc1234deadbeef", "message": "Fix the parser\n\nLong explanation"},
        {"id": "def5678cafebabe", "message": "Add tests"},
        {"id": "0123456789abcde", "message": "Tidy up"},
    ],
}
ISSUE = {
    "action": "opened",
    "issue": {"number": 12, "title": "Crash on start", "html_url": "https://github.com/owner/repo/issues/12",
              "user": {"login": "bob"}},
    "repository": {"full_name": "owner/repo"},
    "sender": {"login": "bob"},
}
PR = {
    "action": "closed",
    "pull_request": {"number": 34, "title": "Faster startup", "merged": True,
                     "head": {"ref": "speed"}, "base": {"ref": "main"},
                     "html_url": "https://github.com/owner/repo/pull/34"},
    "repository": {"full_name": "owner/repo"},
    "sender": {"login": "carol"},
}


def message_block(hub, kit, session_key: str) -> str:
    """The untrusted block of the user message the hook run stored (what the model read)."""
    user = hub.transcript(session_key)[0]
    assert user.role == "user"
    return kit.block.search(user.text).group(2)


def test_templates_render_payload_headers_query_path_and_now(hooks_server, kit):
    with hooks_server(ALERTS) as hub:
        payload = {"kind": "disk", "host": "db1", "metrics": [{"value": 93}, {"value": 7.5}]}
        r = hub.post("/hooks/alerts?env=prod&wake=next-heartbeat", payload,
                     headers={**kit.headers, "X-Source": "monitor", "Cookie": "session=s3cret"})
        assert r.status_code == 202, r.text
        assert r.json()["hook"] == "alerts"
        status = hub.wait_run(r.json()["run_id"])
        assert status["name"] == "Disk db1" and status["session_key"] == "hook:alerts:db1"
        assert status["hook"] == "alerts" and status["status"] == "completed"

        text = message_block(hub, kit, "hook:alerts:db1")
        m = re.fullmatch(
            r"disk on db1 at 93% \(2nd: 7\.5\) via monitor env=prod hook=alerts "
            r"at=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00) auth=\[\] cookie=\[\] token=\[\] missing=\[\] none=\[\]",
            text,
        )
        assert m is not None, text
        assert kit.token not in json.dumps(status) and "s3cret" not in status["output_text"]
        # wake_mode rendered from the query: next-heartbeat, so the summary is queued only.
        main = hub.wait_for(lambda: hub.transcript(kit.main_key))
        assert [i.role for i in main] == ["system"]
        assert kit.block.search(main[0].text).group(2).startswith("Hook Disk db1: completed: system: ")


def test_first_matching_mapping_wins_and_wake_action(hooks_server, kit):
    with hooks_server(ALERTS) as hub:
        r = hub.post("/hooks/alerts", {"kind": "cpu", "tags": ["a", 1, None]})
        assert r.status_code == 200, r.text
        assert r.json() == {"ok": True, "hook": "alerts", "mode": "next-heartbeat"}
        main = hub.transcript(kit.main_key)
        assert len(main) == 1 and main[0].role == "system"
        assert kit.block.search(main[0].text).group(2) == 'Other alert: cpu tags=["a",1,null]'
        # A bad rendered wake_mode is the sender's problem: 400 naming the option.
        r = hub.post("/hooks/alerts?wake=soon", {"kind": "inode", "host": "h"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "wake_mode"


def test_no_matching_mapping_is_skipped_not_run(hooks_server, kit):
    with hooks_server(ALERTS) as hub:
        r = hub.post("/hooks/strict", {"x": 1}, headers={**kit.headers, "X-Source": "elsewhere"})
        assert r.status_code == 200 and "no mapping for 'strict' matched" in r.json()["skipped"]
        assert hub.transcript(kit.main_key) == []
        r = hub.post("/hooks/strict", {"x": 1}, headers={**kit.headers, "X-Source": "monitor"})
        assert r.json()["mode"] == "next-heartbeat"
        assert kit.block.search(hub.transcript(kit.main_key)[0].text).group(2) == "strict 1"


def test_wake_mapping_now_runs_the_main_session(hooks_server, kit):
    options = {"mappings": [{"path": "bell", "action": "wake", "message": "Bell: {{payload.door}}"}]}
    with hooks_server(options) as hub:
        r = hub.post("/hooks/bell", {"door": "front"})
        assert r.status_code == 200 and r.json()["mode"] == "now"
        assert hub.wait_run(r.json()["run_id"])["status"] == "completed"
        event, answer = hub.transcript(kit.main_key)
        assert kit.block.search(event.text).group(2) == "Bell: front"
        assert answer.text == f"system: {DEFAULT_INSTRUCTIONS}\nsystem: {event.text}"


def test_github_preset_push_issue_and_pull_request(hooks_server, kit):
    with hooks_server({"presets": ["github"]}) as hub:
        def send(event: str, payload: dict) -> dict:
            body = json.dumps(payload).encode()
            # GitHub cannot send custom headers: it signs the body with the secret instead.
            headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
                       "X-Hub-Signature-256": signature_for(kit.token, body)}
            r = hub.client.post("/hooks/github", content=body, headers=headers)
            assert r.status_code in (200, 202), r.text
            return r.json()

        run = hub.wait_run(send("push", PUSH)["run_id"])
        assert run["name"] == "GitHub" and run["session_key"].startswith("hook:github:")
        assert message_block(hub, kit, run["session_key"]) == (
            "push to owner/repo main by alice: 3 commits: abc1234 Fix the parser; def5678 Add tests; 0123456 Tidy up"
        )
        run = hub.wait_run(send("issues", ISSUE)["run_id"])
        assert message_block(hub, kit, run["session_key"]) == (
            "issue #12 opened in owner/repo by bob: Crash on start (https://github.com/owner/repo/issues/12)"
        )
        run = hub.wait_run(send("pull_request", PR)["run_id"])
        assert message_block(hub, kit, run["session_key"]) == (
            "pull request #34 merged in owner/repo by carol: Faster startup (speed -> main) "
            "(https://github.com/owner/repo/pull/34)"
        )
        skipped = send("ping", {"zen": "Keep it logically awesome.", "hook_id": 1})
        assert "'ping' is not handled by the github preset" in skipped["skipped"]
        assert len(hub.kernel.runs.runs) >= 3  # three hook runs (plus their summary turns)


def test_preset_with_own_template(hooks_server, kit):
    options = {"mappings": [{"path": "gh", "preset": "github", "action": "wake", "wake_mode": "next-heartbeat",
                             "message": "Review: {{summary}} [{{headers.x-github-event}}]"}]}
    with hooks_server(options) as hub:
        r = hub.post("/hooks/gh", PUSH, headers={**kit.headers, "X-GitHub-Event": "push"})
        assert r.status_code == 200, r.text
        text = kit.block.search(hub.transcript(kit.main_key)[0].text).group(2)
        assert text.startswith("Review: push to owner/repo main by alice: 3 commits: abc1234") and text.endswith(
            "[push]")


class Rewriter:
    """Registered first ('a_...'): upper-cases the host and records what it saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict, dict]] = []

    @hookimpl
    def transform_hook_payload(self, hook_name, payload, headers):
        self.calls.append((hook_name, dict(payload), dict(headers)))
        return {**payload, "host": str(payload.get("host", "")).upper()}


class Dropper:
    """Registered second ('b_...'): takes only the payload (pluggy allows a subset) and drops spam."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    @hookimpl
    def transform_hook_payload(self, payload):
        self.seen.append(dict(payload))
        return None if payload.get("spam") else payload


def test_transform_plugins_rewrite_and_drop(hooks_server, kit):
    rewriter, dropper = Rewriter(), Dropper()
    with hooks_server(ALERTS, extra_plugins={"a_rewrite": rewriter, "b_drop": dropper}) as hub:
        r = hub.post("/hooks/alerts?wake=next-heartbeat", {"kind": "disk", "host": "db2", "metrics": []},
                     headers={**kit.headers, "Cookie": "c=1", "X-Source": "monitor"})
        assert r.status_code == 202, r.text
        status = hub.wait_run(r.json()["run_id"])
        # The rewritten payload is what the templates saw.
        assert status["name"] == "Disk DB2" and status["session_key"] == "hook:alerts:DB2"
        assert message_block(hub, kit, "hook:alerts:DB2").startswith("disk on DB2 at % ")
        hook_name, payload, headers = rewriter.calls[0]
        assert hook_name == "alerts" and payload["host"] == "db2"
        assert headers["x-source"] == "monitor"
        assert not {"authorization", "cookie", "x-hook-token"} & set(headers)
        assert dropper.seen[0]["host"] == "DB2"  # chained: the second saw the first's result

        runs_before = len(hub.kernel.runs.runs)
        r = hub.post("/hooks/alerts", {"kind": "disk", "host": "db3", "spam": True})
        assert r.status_code == 204 and r.content == b""
        assert len(rewriter.calls) == 2 and len(dropper.seen) == 2
        assert len(hub.kernel.runs.runs) == runs_before
        assert hub.transcript("hook:alerts:DB3") == []
        # Built-in endpoints are not mapped hooks: no transform runs for them.
        hub.post("/hooks/wake", {"text": "x", "mode": "next-heartbeat"})
        assert len(rewriter.calls) == 2


class Broken:
    @hookimpl
    def transform_hook_payload(self, hook_name, payload, headers):
        raise KeyError("boom")


class Async:
    @hookimpl
    async def transform_hook_payload(self, payload):
        return {**payload, "host": "from-async"}


def test_transform_failures_and_async_transforms(hooks_server, kit):
    with hooks_server(ALERTS, extra_plugins={"broken": Broken()}) as hub:
        r = hub.post("/hooks/alerts", {"kind": "disk", "host": "h"})
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "transform_failed" and "'broken'" in r.json()["error"]["message"]
    with hooks_server(ALERTS, extra_plugins={"async_tx": Async()}) as hub:
        r = hub.post("/hooks/alerts?wake=next-heartbeat", {"kind": "disk", "host": "h", "metrics": []})
        assert hub.wait_run(r.json()["run_id"])["name"] == "Disk from-async"


def test_mapping_errors_at_request_time(hooks_server, kit):
    options = {"mappings": [
        {"path": "pick", "agent": "{{payload.agent}}", "message": "{{payload.text}}",
         "session_key": "{{payload.key}}"},
    ]}
    with hooks_server(options) as hub:
        r = hub.post("/hooks/pick", {"agent": "ghost", "text": "hi"})
        assert r.status_code == 404 and r.json()["error"]["param"] == "agent"
        r = hub.post("/hooks/pick", {"agent": "plain"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "empty_message"
        r = hub.post("/hooks/pick", {"text": "hi", "key": "x" * 300})
        assert r.status_code == 400 and r.json()["error"]["param"] == "session_key"
        r = hub.post("/hooks/pick", {"agent": "plain", "text": "hi", "key": "hook:pick:1"})
        status = hub.wait_run(r.json()["run_id"])
        assert status["agent"] == "plain" and status["session_key"] == "hook:pick:1"
        assert status["name"] == "pick"


def test_templated_model_and_session_key_prefixes(hooks_server, kit):
    options = {
        "session_key_prefixes": ["hook:"],
        "mappings": [{"path": "pick", "agent": "reply", "model": "{{payload.model}}", "message": "{{payload.text}}",
                      "session_key": "{{payload.key}}", "summary_to_main": False},
                     {"path": "fixed", "agent": "reply", "message": "{{payload.text}}", "session_key": "ops:fixed",
                      "summary_to_main": False}],
    }
    with hooks_server(options) as hub:
        provider = hub.provider("reply")
        r = hub.post("/hooks/pick", {"text": "hi", "key": "hook:pick:1", "model": "from-payload"})
        assert r.status_code == 202, r.text
        hub.wait_run(r.json()["run_id"])
        assert provider.turns[-1].model == "from-payload"
        # A key rendered from request data must carry an allowed prefix, like one sent to /hooks/agent.
        r = hub.post("/hooks/pick", {"text": "hi", "key": kit.main_key})
        assert r.status_code == 400 and r.json()["error"]["param"] == "session_key"
        assert r.json()["error"]["code"] == "invalid_session_key"
        assert len(provider.turns) == 1
        # A key written out in the configuration is the operator's choice.
        r = hub.post("/hooks/fixed", {"text": "hi"})
        assert hub.wait_run(r.json()["run_id"])["session_key"] == "ops:fixed"
