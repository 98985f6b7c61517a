"""POST /hooks/agent and GET /hooks/runs/<id> against a real server."""

from __future__ import annotations

import asyncio
import logging


def test_agent_run_completes_and_reports_its_status(hooks_server, kit):
    with hooks_server() as hub:
        r = hub.post("/hooks/agent", {"message": "Summarise the inbox", "name": "Email", "agent": "plain",
                                      "session_key": "hook:email:1", "wake_mode": "next-heartbeat"})
        assert r.status_code == 202, r.text
        body = r.json()
        assert set(body) == {"ok", "run_id"} and body["ok"] is True
        run = hub.kernel.runs.get(body["run_id"])  # the kernel's own run, not an alias
        assert run is not None and run.background and run.turn.session_key == "hook:email:1"

        status = hub.wait_run(body["run_id"])
        result = run.result()
        assert status["status"] == "completed"
        assert status["run_id"] == body["run_id"]
        assert status["name"] == "Email" and status["agent"] == "plain" and status["hook"] == "agent"
        assert status["session_key"] == "hook:email:1"
        # plain echo answers with the text it was given: the wrapped message.
        assert status["output_text"] == result.text
        assert kit.block.search(result.text).group(2) == "Summarise the inbox"
        assert status["usage"] == {
            "input_tokens": result.usage.input_tokens, "output_tokens": result.usage.output_tokens,
            "reasoning_tokens": 0, "total_tokens": result.usage.total_tokens,
        }
        assert status["usage"]["output_tokens"] > 0
        assert status["error"] is None and status["finished_at"] >= status["created_at"]

        # The hook session holds the wrapped message and the answer.
        session = hub.transcript("hook:email:1")
        assert [m.role for m in session] == ["user", "assistant"]
        assert kit.block.search(session[0].text).group(2) == "Summarise the inbox"

        # One summary line in the main session, wrapped, and (next-heartbeat) no main turn.
        main = hub.wait_for(lambda: hub.transcript(kit.main_key))
        assert [m.role for m in main] == ["system"]
        line = kit.block.search(main[0].text).group(2)
        first_line = result.text.splitlines()[0]  # the untrusted-content notice, long: cut to 160
        assert len(first_line) > 160
        assert line == f"Hook Email: completed: {first_line[:159]}…"


def test_default_session_and_summary_now_runs_the_main_session(hooks_server, kit):
    with hooks_server() as hub:
        r = hub.post("/hooks/agent", {"message": "ping", "agent": "reply"})
        assert r.status_code == 202, r.text
        status = hub.wait_run(r.json()["run_id"])
        assert status["session_key"].startswith("hook:") and len(status["session_key"]) == 5 + 32
        assert status["agent"] == "reply" and status["output_text"] == kit.reply
        assert status["name"] == "agent"

        # wake_mode defaults to now: the summary becomes the input of a main-session turn.
        main = hub.wait_for(lambda: (items := hub.transcript(kit.main_key)) and len(items) == 2 and items)
        event, answer = main
        assert event.role == "system" and answer.role == "assistant"
        # One line: the first line of the output.
        assert kit.block.search(event.text).group(2) == "Hook agent: completed: Done: 2 new mails"
        assert answer.text.endswith(event.text)


def test_summary_to_main_false_posts_nothing(hooks_server, kit):
    with hooks_server() as hub:
        r = hub.post("/hooks/agent", {"message": "quiet", "summary_to_main": False})
        assert hub.wait_run(r.json()["run_id"])["status"] == "completed"
        hub.wait_for(hub.followers_idle)  # the follower is where a summary would be posted
        assert hub.transcript(kit.main_key) == []


def test_timeout_really_stops_the_run(hooks_server, kit):
    with hooks_server() as hub:
        provider = hub.provider("hang")  # says "started", then waits until it is stopped
        r = hub.post("/hooks/agent", {"message": "work", "agent": "hang", "timeout_seconds": 0.3,
                                      "wake_mode": "next-heartbeat", "name": "Slow"})
        assert r.status_code == 202, r.text
        status = hub.wait_run(r.json()["run_id"])
        assert status["status"] == "failed"
        assert status["error"] == {"message": "run timed out after 0.3 seconds", "type": "timeout",
                                   "code": "timeout"}
        assert status["output_text"] == "started"  # the output up to the timeout is kept
        # The provider's own work was cancelled, not merely abandoned.
        assert provider.started == 1 and provider.stopped == 1
        run = hub.kernel.runs.get(r.json()["run_id"])
        assert run.done and run._task.done()
        main = hub.wait_for(lambda: hub.transcript(kit.main_key))
        assert kit.block.search(main[0].text).group(2) == "Hook Slow: failed: run timed out after 0.3 seconds"


def test_timeout_stops_a_streaming_run_midway(hooks_server):
    with hooks_server() as hub:
        words = " ".join(f"w{i}" for i in range(100))  # 100 words at 0.1 s each: 10 s unstopped
        r = hub.post("/hooks/agent", {"message": words, "agent": "slow", "timeout_seconds": 0.35,
                                      "summary_to_main": False})
        status = hub.wait_run(r.json()["run_id"])
        assert status["status"] == "failed" and status["error"]["code"] == "timeout"
        assert len(status["output_text"].split()) < 10  # stopped where the timeout hit


def test_default_timeout_applies(hooks_server):
    with hooks_server({"default_timeout_seconds": 0.25}) as hub:
        r = hub.post("/hooks/agent", {"message": "a b c d e f g h i j k", "agent": "slow",
                                      "summary_to_main": False})
        status = hub.wait_run(r.json()["run_id"])
        assert status["status"] == "failed" and status["error"]["code"] == "timeout"


def test_status_while_running_shows_progress(hooks_server, kit):
    with hooks_server() as hub:
        r = hub.post("/hooks/agent", {"message": "one two three four five six", "agent": "brisk",
                                      "summary_to_main": False})
        run_id = r.json()["run_id"]
        body = hub.wait_for(lambda: (b := hub.run_status(run_id).json())["output_text"] and b)
        assert body["status"] == "in_progress" and body["finished_at"] is None
        final = hub.wait_run(run_id)
        assert final["status"] == "completed"
        assert final["output_text"].startswith(body["output_text"]) and len(final["output_text"]) > len(
            body["output_text"])
        assert kit.block.search(final["output_text"]).group(2) == "one two three four five six"


def test_unknown_and_expired_runs_are_404(hooks_server):
    with hooks_server({"run_retention_seconds": 60}) as hub:
        r = hub.run_status("run_doesnotexist")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "run_not_found" and r.json()["error"]["param"] == "run_id"

        run_id = hub.post("/hooks/agent", {"message": "x", "summary_to_main": False}).json()["run_id"]
        hub.wait_run(run_id)
        store = hub.kernel.store
        # 59 s after it finished the record is still kept; 61 s after, it is gone.
        hub.call(store.execute("UPDATE hook_runs SET finished_at = finished_at - 59 WHERE run_id = ?", (run_id,)))
        assert hub.run_status(run_id).status_code == 200
        hub.call(store.execute("UPDATE hook_runs SET finished_at = finished_at - 2 WHERE run_id = ?", (run_id,)))
        r = hub.run_status(run_id)
        assert r.status_code == 404 and "run_retention_seconds" in r.json()["error"]["message"]


def test_status_between_the_run_ending_and_its_record_being_written(hooks_server, kit):
    with hooks_server() as hub:
        service = hub.service
        release = asyncio.Event()
        original_finish = service.records.finish

        async def held_finish(*args, **kwargs):
            await release.wait()
            await original_finish(*args, **kwargs)

        service.records.finish = held_finish
        run_id = hub.post("/hooks/agent", {"message": "x", "agent": "reply", "summary_to_main": False}).json()["run_id"]
        hub.wait_for(lambda: hub.kernel.runs.get(run_id).done)
        body = hub.run_status(run_id).json()  # the record still says queued: the live run answers
        assert body["status"] == "completed" and body["finished_at"] is not None
        assert body["output_text"] == kit.reply and body["usage"]["output_tokens"] == len(kit.reply.split())
        hub.tap.loop.call_soon_threadsafe(release.set)
        hub.wait_for(hub.followers_idle)
        assert hub.run_status(run_id).json() == body  # the stored record says the same


def test_model_override_reaches_the_provider(hooks_server):
    with hooks_server(config={"agents": {"reply": {"model": "agent-default"}}}) as hub:
        provider = hub.provider("reply")
        r = hub.post("/hooks/agent", {"message": "x", "agent": "reply", "model": "custom-model",
                                      "summary_to_main": False})
        hub.wait_run(r.json()["run_id"])
        r = hub.post("/hooks/agent", {"message": "y", "agent": "reply", "summary_to_main": False})
        hub.wait_run(r.json()["run_id"])
        assert [t.model for t in provider.turns] == ["custom-model", "agent-default"]
        run = hub.kernel.runs.get(r.json()["run_id"])
        assert run.principal == "hooks" and run.turn.surface == "hooks"
        assert run.turn.metadata == {"hook": "agent"}


def test_start_and_end_of_hook_runs_are_logged(hooks_server, caplog):
    with caplog.at_level(logging.INFO, logger="kernel.hooks"), hooks_server() as hub:
        r = hub.post("/hooks/agent", {"message": "x", "agent": "hang", "timeout_seconds": 0.2,
                                      "summary_to_main": False})
        run_id = r.json()["run_id"]
        hub.wait_run(run_id)
        hub.wait_for(hub.followers_idle)
        lines = [rec.getMessage() for rec in caplog.records if rec.name == "kernel.hooks"]
        key = hub.run_status(run_id).json()["session_key"]
        assert f"hook agent: run {run_id} started (agent 'hang', session {key!r})" in lines
        ended = [line for line in lines if line.startswith(f"hook agent: run {run_id} failed after ")]
        assert len(ended) == 1 and ended[0].endswith("s (timeout: run timed out after 0.2 seconds)")


def test_records_survive_a_restart(hooks_server):
    with hooks_server() as hub:
        run_id = hub.post("/hooks/agent", {"message": "persist me", "agent": "plain",
                                           "summary_to_main": False}).json()["run_id"]
        first = hub.wait_run(run_id)
    with hooks_server() as hub:  # same state dir, new process state
        assert hub.kernel.runs.get(run_id) is None
        r = hub.run_status(run_id)
        assert r.status_code == 200 and r.json() == first


def test_run_cut_short_by_shutdown_is_recorded(hooks_server):
    with hooks_server(config={"kernel": {"shutdown_grace_seconds": 0}}) as hub:
        run_id = hub.post("/hooks/agent", {"message": " ".join(["w"] * 100), "agent": "slow",
                                           "summary_to_main": False}).json()["run_id"]
        hub.wait_for(lambda: hub.run_status(run_id).json()["status"] == "in_progress")
    with hooks_server() as hub:
        body = hub.run_status(run_id).json()
        assert body["status"] == "cancelled" and body["finished_at"] is not None


def test_agent_field_errors_name_the_field(hooks_server):
    with hooks_server({"session_key_prefixes": ["hook:"]}) as hub:
        cases = [
            ({}, "message", "invalid_field"),
            ({"message": ""}, "message", "invalid_field"),
            ({"message": "x", "timeout_seconds": "5"}, "timeout_seconds", "invalid_field"),
            ({"message": "x", "timeout_seconds": 0}, "timeout_seconds", "invalid_field"),
            ({"message": "x", "wake_mode": "later"}, "wake_mode", "invalid_field"),
            ({"message": "x", "summary_to_main": 1}, "summary_to_main", "invalid_field"),
            ({"message": "x", "deliver": True}, "deliver", "invalid_field"),
            ({"message": "x", "session_key": "agent:main:main"}, "session_key", "invalid_session_key"),
            ({"message": "x", "session_key": "hook:\n"}, "session_key", "invalid_session_key"),
        ]
        for body, param, code in cases:
            r = hub.post("/hooks/agent", body)
            assert r.status_code == 400, (body, r.text)
            err = r.json()["error"]
            assert err["param"] == param and err["code"] == code and param in err["message"], (body, err)
        r = hub.post("/hooks/agent", {"message": "x", "agent": "nobody"})
        assert r.status_code == 404
        assert r.json()["error"]["param"] == "agent" and "main" in r.json()["error"]["message"]
        # camelCase spellings of OpenClaw-era senders are accepted.
        r = hub.post("/hooks/agent", {"message": "x", "sessionKey": "hook:camel", "wakeMode": "next-heartbeat",
                                      "timeoutSeconds": 5, "summaryToMain": False})
        assert r.status_code == 202, r.text
        assert hub.wait_run(r.json()["run_id"])["session_key"] == "hook:camel"
