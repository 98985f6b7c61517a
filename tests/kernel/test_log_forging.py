"""A client cannot forge log lines: every record ``kernel serve`` writes is one line.

A real ``kernel serve`` subprocess with the access log on, and a third-party plugin
(a distribution on the subprocess's path, found through the ``kernel.plugins`` entry
point) that logs client text and raises with it. Line breaks of every kind (LF, CR, NEL,
U+2028 ...) are sent where a client controls logged text; each request must leave
exactly one access line, and no line may start with the forged timestamp.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from kernel.logfmt import OneLineFormatter, escape_control
from kernel.testing import TEST_TOKEN, serve_process

AUTH: dict[str, str | bytes] = {"Authorization": f"Bearer {TEST_TOKEN}"}
FORGED = '1999-01-01 00:00:00,000 INFO kernel.access: req_forged "POST /v1/responses" 200 1.0ms principal=admin'
BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]

PLUGIN = '''
import logging
from quart import Blueprint, request
from kernel import hookimpl

log = logging.getLogger("logdemo")

@hookimpl
def register_routes(kernel, settings):
    bp = Blueprint("logdemo", __name__)

    @bp.get("/logdemo")
    async def hello():
        name = request.args.get("name", "")
        log.warning("logdemo: hello %s", name)
        if name.startswith("boom"):
            raise RuntimeError(f"could not greet {name}")
        return {"name": name}

    return [bp]
'''


def third_party_plugin(site: Path) -> None:
    """A minimal installed distribution whose entry point is the plugin above."""
    (site / "logdemo.py").write_text(PLUGIN, encoding="utf-8")
    info = site / "logdemo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: logdemo\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[kernel.plugins]\nlogdemo = logdemo\n", encoding="utf-8")


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    site = tmp_path / "site"
    site.mkdir()
    third_party_plugin(site)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    config = tmp_path / "plugins.toml"
    config.write_text(
        f'[kernel]\nstate_dir = "state"\naccess_log = true\n[kernel.auth]\ntoken = "{TEST_TOKEN}"\n'
        '[agents.main]\nprovider = "echo"\n'
        "[plugins.echo]\nenabled = true\n[plugins.logdemo]\nenabled = true\n",
        encoding="utf-8",
    )
    with serve_process(config) as proc:
        yield proc


ACCESS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO kernel\.access: ")


def log_lines(stderr: Path, marker: str, count: int) -> list[str]:
    """The lines mentioning ``marker``, once ``count`` access lines for it were written."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in stderr.read_text(encoding="utf-8").splitlines() if marker in line]
        if len([line for line in lines if ACCESS.match(line)]) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_forged_paths_and_request_ids_leave_one_escaped_line_each(served) -> None:
    with httpx.Client(base_url=served.base, timeout=30) as client:
        for i, brk in enumerate(BREAKS):
            assert client.get(f"/nothing-{i}{quote(brk + FORGED)}", headers=AUTH).status_code == 404
        # Header values cannot carry LF, but obs-text bytes can (NEL is 0x85).
        bad_id = ("id\x85" + FORGED).encode("latin-1")
        assert client.get("/rid-probe", headers={**AUTH, "x-request-id": bad_id}).status_code == 404
        # A third-party plugin's own log line, and an exception whose message quotes client text.
        assert client.get("/logdemo", params={"name": "hi\n" + FORGED}, headers=AUTH).status_code == 200
        assert client.get("/logdemo", params={"name": "boom\u2028" + FORGED}, headers=AUTH).status_code == 500
    for i, brk in enumerate(BREAKS):
        # Exactly one line for the request: its access line, with the break escaped.
        [line] = log_lines(served.stderr, f"/nothing-{i}", 1)
        assert ACCESS.match(line)
        assert f'"GET /nothing-{i}{escape_control(brk)}{FORGED}" 404' in line
    [line] = log_lines(served.stderr, "/rid-probe", 1)
    assert ACCESS.match(line) and FORGED not in line  # the id with a control byte was replaced
    assert len([line for line in log_lines(served.stderr, '"GET /logdemo"', 2) if ACCESS.match(line)]) == 2
    text = served.stderr.read_text(encoding="utf-8")
    # Nothing a client sent starts a line of its own, whatever splits the lines.
    assert not [line for line in text.splitlines() if line.startswith(("1999-01-01", "req_forged"))]
    assert f"logdemo: hello hi\\x0a{FORGED}" in text
    assert f"RuntimeError: could not greet boom\\u2028{FORGED}" in text


def test_the_formatter_escapes_any_loggers_messages_and_exception_text() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(OneLineFormatter("%(name)s: %(message)s"))
    logger = logging.getLogger("some.third_party.plugin")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise KeyError("inner\nforged")
        except KeyError as exc:
            raise ValueError("outer\r\nforged") from exc
    except ValueError:
        logger.exception("model %r path %s", "gpt\u2028x", "/a\nb")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert text.splitlines()[0] == "some.third_party.plugin: model 'gpt\\u2028x' path /a\\x0ab"
    assert "ValueError: outer\\x0d\\x0aforged" in text
    assert not any(line.startswith("forged") for line in text.splitlines())


def test_bidirectional_overrides_are_escaped_so_a_terminal_shows_the_text_as_sent() -> None:
    assert escape_control("ok \u202egnp.exe") == "ok \\u202egnp.exe"
    assert escape_control("\u2066x\u2069") == "\\u2066x\\u2069"
