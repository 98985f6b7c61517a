"""Retention: the duration setting, the periodic sweep on a real server, and a clean shutdown."""

from __future__ import annotations

import time

import httpx
import pytest

from kernel.app import get_kernel
from kernel.errors import ConfigError
from kernel.testing import AUTH_HEADERS
from plugins.openresponses import plugin
from plugins.openresponses.retention import parse_duration
from plugins.openresponses.settings import OpenResponsesSettings

from .conftest import parse_sse, wait_for
from .stored_support import Probe, stored_app


@pytest.mark.parametrize(("text", "seconds"), [
    ("30d", 30 * 86400), ("12h", 43200), ("45m", 2700), ("90s", 90), ("2w", 14 * 86400), ("1.5h", 5400),
    (" 7D ", 7 * 86400), ("0", None), ("none", None), ("forever", None), ("0h", None),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_the_default_is_thirty_days():
    assert OpenResponsesSettings().retention_seconds == 30 * 86400


@pytest.mark.parametrize("bad", ["30", "thirty days", "-1d", "5y", ""])
def test_a_bad_retention_is_a_config_error_naming_the_key(make_app, bad):
    with pytest.raises(ConfigError) as err:
        stored_app(make_app, retention=bad)
    message = str(err.value)
    assert "[plugins.openresponses] retention" in message and "'30d'" in message


def _backdate(sql, response_id: str, seconds: float) -> None:
    sql("UPDATE or_responses SET created_at = created_at - ? WHERE id = ?", (seconds, response_id))


def _count(sql, table: str, response_id: str) -> int:
    return sql(f"SELECT count(*) FROM {table} WHERE response_id = ?", (response_id,))[0][0]


def test_the_sweep_deletes_expired_responses_and_their_logs(make_app, live_server, state_sql):
    app = stored_app(make_app, retention="1h", sweep_interval_seconds=0.05)
    state = state_sql
    with live_server(app) as base, httpx.Client(base_url=base, headers=AUTH_HEADERS, timeout=30) as http:
        old_id = parse_sse(http.post("/v1/responses", json={"input": "old", "stream": True}).content)[0][
            "response"]["id"]
        fresh = http.post("/v1/responses", json={"input": "fresh"}).json()
        assert _count(state, "or_events", old_id) > 0 and _count(state, "or_input_items", old_id) == 1
        _backdate(state, old_id, 2 * 3600)
        wait_for(lambda: http.get(f"/v1/responses/{old_id}").status_code == 404)
        assert _count(state, "or_events", old_id) == 0 and _count(state, "or_input_items", old_id) == 0
        assert http.post("/v1/responses", json={"input": "x", "previous_response_id": old_id}).status_code == 404
        assert http.get(f"/v1/responses/{fresh['id']}").status_code == 200


async def test_sweeps_keep_running_responses_and_stop_cleanly_at_shutdown(make_app):
    app = stored_app(make_app, retention="1h")
    async with app.test_app() as test_app:
        stored = plugin._STORED[get_kernel(app)]
        sweeper = stored._sweeper
        assert sweeper is not None and sweeper.interval == 3600
        task = sweeper._task
        client = test_app.test_client()
        done = await (await client.post("/v1/responses", json={"input": "a"}, headers=AUTH_HEADERS)).get_json()
        probe = Probe()
        running = await (await client.post("/v1/responses", json={"model": "probe", "input": probe.key,
                                                                  "background": True},
                                           headers=AUTH_HEADERS)).get_json()
        assert await stored.sweep(now=time.time() + 1800) == 0  # not yet expired
        assert await stored.sweep(now=time.time() + 2 * 3600) == 1  # the running one is kept
        assert (await client.get(f"/v1/responses/{done['id']}", headers=AUTH_HEADERS)).status_code == 404
        probe.release.set()
        assert (await client.get(f"/v1/responses/{running['id']}", headers=AUTH_HEADERS)).status_code == 200
    assert task is not None and task.cancelled() and sweeper._task is None


async def test_retention_none_keeps_everything(make_app):
    app = stored_app(make_app, retention="none")
    async with app.test_app() as test_app:
        stored = plugin._STORED[get_kernel(app)]
        assert stored._sweeper is None
        client = test_app.test_client()
        done = await (await client.post("/v1/responses", json={"input": "a"}, headers=AUTH_HEADERS)).get_json()
        assert await stored.sweep(now=time.time() + 10 * 365 * 86400) == 0
        assert (await client.get(f"/v1/responses/{done['id']}", headers=AUTH_HEADERS)).status_code == 200
