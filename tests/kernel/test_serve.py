"""``kernel serve`` as a real process: HTTP on a free loopback port, token announcement, graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from kernel.testing import TEST_TOKEN, free_port, serve_process

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


def write_config(tmp_path: Path, *, grace: float, delay: float, token: bool = True) -> Path:
    auth = f'[kernel.auth]\ntoken = "{TEST_TOKEN}"\n' if token else ""
    path = tmp_path / "plugins.toml"
    path.write_text(
        f'[kernel]\nstate_dir = "state"\nshutdown_grace_seconds = {grace}\n{auth}'
        f'[agents.main]\nprovider = "slow"\n'
        f'[providers.slow]\nkind = "echo"\ndelay_seconds = {delay}\n'
        f"[plugins.echo]\nenabled = true\n[plugins.example]\nenabled = true\n",
        encoding="utf-8",
    )
    return path


@contextmanager
def kernel_serve(config: Path, port: int) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """Start ``kernel serve``; yield the process, its base URL and its stdout file."""
    with serve_process(config, port) as served:
        yield served.proc, served.base, served.stdout


def deltas_and_done(lines: Iterator[str]) -> tuple[list[str], str | None]:
    words, done = [], None
    for line in lines:
        if not line.startswith("data: "):
            continue
        event = json.loads(line[6:])
        if "delta" in event:
            words.append(event["delta"])
        else:
            done = event["done"]
    return words, done


def test_serve_answers_http_and_drains_an_open_stream_on_sigterm(tmp_path):
    config = write_config(tmp_path, grace=10, delay=0.1)
    with kernel_serve(config, free_port()) as (proc, base, _):
        assert httpx.get(f"{base}/-/plugins").status_code == 401
        listing = httpx.get(f"{base}/-/plugins", headers=AUTH).json()["data"]
        assert next(p for p in listing if p["name"] == "example")["enabled"] is True
        hello = httpx.get(f"{base}/example/hello", params={"name": "proc"}, headers=AUTH)
        assert hello.json()["text"] == "hello proc"

        text = " ".join(f"w{i}" for i in range(15))
        with httpx.stream("GET", f"{base}/example/stream", params={"text": text}, headers=AUTH,
                          timeout=30) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            words, done = deltas_and_done(lines)
        # The open stream was allowed to finish inside the grace period.
        assert [json.loads(first[6:])["delta"], *words] == [w + " " for w in text.split()[:-1]] + ["w14"]
        assert done == "completed"
        assert proc.wait(15) == 0
        assert time.monotonic() - sent < 10
        # New connections are refused once the server has stopped.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{base}/-/health", timeout=2)
    log = (tmp_path / f"stderr-{base.rsplit(':', 1)[1]}.txt").read_text()
    assert "Traceback" not in log and " ERROR " not in log and "cancelling run" not in log


def test_sigterm_cancels_a_stream_that_outlives_the_grace_period(tmp_path):
    config = write_config(tmp_path, grace=0.5, delay=0.1)
    with kernel_serve(config, free_port()) as (proc, base, _):
        words: list[str] = []
        done = None
        with httpx.stream("GET", f"{base}/example/stream", params={"text": "w " * 300}, headers=AUTH,
                          timeout=30) as response:
            lines = response.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            proc.send_signal(signal.SIGTERM)
            try:
                words, done = deltas_and_done(lines)
            except httpx.HTTPError:
                pass  # the server closed the connection when the grace period ended
        assert len(words) < 100 and done != "completed"
        # The 300-word stream (30 s) was cut at the 0.5 s grace period; the process then exits.
        assert proc.wait(15) == 0
    log = (tmp_path / f"stderr-{base.rsplit(':', 1)[1]}.txt").read_text()
    # The cut stream's run stopped with it (its on_disconnect), before the run drain.
    assert "client disconnected (or the server stopped)" in log and "kernel: stopped" in log
    assert "Traceback" not in log and " ERROR " not in log


def test_first_start_generates_and_prints_a_token_once(tmp_path):
    config = write_config(tmp_path, grace=1, delay=0, token=False)
    port = free_port()
    with kernel_serve(config, port) as (proc, base, out):
        token_file = tmp_path / "state" / "token"
        token = token_file.read_text().strip()
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        printed = out.read_text()
        assert printed.count(token) == 2  # the token, and inside the curl command
        assert f"curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{port}/-/plugins" in printed
        assert httpx.get(f"{base}/-/plugins", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    for log in tmp_path.glob("stderr-*.txt"):
        assert token not in log.read_text()  # the logs never carry it
    with kernel_serve(config, free_port()) as (proc, base, out):
        assert token_file.read_text().strip() == token
        assert token not in out.read_text()  # printed once, on the first start only
        assert httpx.get(f"{base}/-/plugins", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
