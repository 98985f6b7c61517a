"""``kernel serve`` as a supervisor sees it: a busy port fails fast, bursts fit the listen
queue, and a WebSocket upgrade on an HTTP-only path is answered with a 4xx."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets.sync.client as ws_client
from websockets.exceptions import InvalidStatus

from kernel.testing import TEST_TOKEN, free_port, serve_process

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "plugins.toml"
    path.write_text(
        f'[kernel]\nstate_dir = "state"\n{extra}[kernel.auth]\ntoken = "{TEST_TOKEN}"\n'
        "[plugins.echo]\nenabled = true\n[plugins.chat_completions]\nenabled = true\n",
        encoding="utf-8",
    )
    return path


def test_busy_port_exits_at_once_with_one_line_and_no_traceback(tmp_path):
    config = write_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        kernel_cmd = Path(sys.executable).parent / "kernel"
        started = time.monotonic()
        done = subprocess.run([str(kernel_cmd), "serve", "--config", str(config), "--port", str(port)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    assert time.monotonic() - started < 30
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"Error: port {port} is in use"
    assert "serving on" not in done.stderr  # nothing claims it is serving


def _listen_backlog(port: int) -> int:
    # For a listening socket, ss prints the backlog as Send-Q (the third column).
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[2])


def test_listen_backlog_comes_from_the_config(tmp_path):
    config = write_config(tmp_path, "backlog = 1500\n")
    with serve_process(config, free_port()) as served:
        port = int(served.base.rsplit(":", 1)[1])
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert _listen_backlog(port) == min(1500, somaxconn)


@pytest.mark.parametrize("path", ["/-/health", "/v1/chat/completions", "/no/such/route"])
@pytest.mark.parametrize("authenticated", [True, False])
def test_websocket_upgrade_on_http_only_path_is_a_4xx(tmp_path, path, authenticated):
    config = write_config(tmp_path)
    with serve_process(config, free_port()) as served:
        url = served.base.replace("http://", "ws://") + path
        with pytest.raises(InvalidStatus) as refused:
            ws_client.connect(url, additional_headers=AUTH if authenticated else {}, open_timeout=10).close()
        status = refused.value.response.status_code
        assert 400 <= status < 500, status
        assert "Not within a request context" not in served.stderr.read_text()
        assert "unhandled error" not in served.stderr.read_text()


def test_openai_sdk_gets_the_413_for_a_body_four_times_the_limit(tmp_path):
    import openai

    limit = 5 * 1024 * 1024
    config = write_config(tmp_path)
    config.write_text(config.read_text() + f"[plugins.openresponses]\nenabled = true\nmax_body_bytes = {limit}\n"
                      '[agents.main]\nprovider = "e"\n[providers.e]\nkind = "echo"\n',
                      encoding="utf-8")
    with serve_process(config, free_port()) as served:
        client = openai.OpenAI(base_url=f"{served.base}/v1", api_key=TEST_TOKEN, max_retries=0, timeout=60)
        with pytest.raises(openai.APIStatusError) as refused:
            client.responses.create(model="main", input="x" * (4 * limit))
        assert refused.value.status_code == 413
        assert refused.value.body["code"] == "request_too_large"
        # The connection pool is still usable after the drained answer.
        assert client.responses.create(model="main", input="hi").status == "completed"


BAD_SCHEMA = {"type": "object", "properties": ["not", "a", "map"]}


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/responses", {"model": "main", "input": "hi", "tools": [
        {"type": "function", "name": "f", "parameters": BAD_SCHEMA}]}, "tools[0].parameters"),
    ("/v1/responses", {"model": "main", "input": "hi", "text": {"format": {
        "type": "json_schema", "name": "out", "schema": BAD_SCHEMA}}}, "text.format.schema"),
    ("/v1/chat/completions", {"model": "main", "messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": BAD_SCHEMA}}]},
     "tools[0].function.parameters"),
    ("/v1/chat/completions", {"model": "main", "messages": [{"role": "user", "content": "hi"}],
                              "response_format": {"type": "json_schema",
                                                  "json_schema": {"name": "out", "schema": BAD_SCHEMA}}},
     "response_format.json_schema.schema"),
])
def test_a_schema_that_is_not_json_schema_is_a_400_naming_the_field(tmp_path, path, body, param):
    import httpx

    config = write_config(tmp_path)
    config.write_text(config.read_text() + "[plugins.openresponses]\nenabled = true\n"
                      '[agents.main]\nprovider = "e"\n[providers.e]\nkind = "echo"\n', encoding="utf-8")
    with serve_process(config, free_port()) as served:
        answer = httpx.post(served.base + path, json=body, headers=AUTH, timeout=30)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == param
        assert "properties" in error["message"]
        # A valid schema (booleans and all) still goes through to the echo provider.
        good = {"type": "object", "properties": {"a": True, "b": {"type": "string"}}}
        fixed = json.loads(json.dumps(body).replace(json.dumps(BAD_SCHEMA), json.dumps(good)))
        assert httpx.post(served.base + path, json=fixed, headers=AUTH, timeout=30).status_code == 200
