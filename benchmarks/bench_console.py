"""Benchmark: what each console page costs a browser, and (``--screenshots``) the docs' pictures.

A real gateway (echo agents, a temporary state directory, loopback only) is served and
headless Chromium (Debian's /usr/bin/chromium) opens each page signed in as the main
token. Printed side by side per page: bytes transferred (HTML, every asset and the
page's own API calls, until the network is idle), request count, and milliseconds to
DOMContentLoaded and to ``load``. The overview must stay under 100 KB (the console
issue's target); the script exits 1 if it does not.

Usage::

    .venv/bin/python benchmarks/bench_console.py [--screenshots docs/console]

With ``--screenshots DIR`` it first makes some history (streamed answers, a tool
call over the playground's WebSocket, a background run) and saves one PNG per page
into DIR. The observability plugin is enabled, so the usage page draws its charts
from the real ledger of these runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from kernel.testing import TEST_TOKEN, build_app, default_config, merge, serve_in_thread

OVERVIEW_LIMIT = 100_000
CONFIG: dict[str, Any] = {
    "kernel": {"auth": {"keys": {"ci": {"secret": "ci-secret-0123456789"}}}},
    "plugins": {"openresponses": {"enabled": True}, "console": {"enabled": True},
                "chat_completions": {"enabled": True}, "observability": {"enabled": True}},
    "providers": {"slow": {"kind": "echo", "delay_seconds": 0.4}},
    "agents": {"main": {"provider": "echo", "description": "streams your words back"},
               "slow": {"provider": "slow", "description": "echo, one word every 0.4 s"}},
}
PAGES = ["/console/", "/console/playground", "/console/responses", "/console/runs", "/console/usage"]
WEATHER_TOOL = ('[{"type": "function", "name": "get_weather", "description": "Current weather", "parameters": '
                '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]')


def history(base: str) -> None:
    """A few stored responses from two keys, so the pages have something to show."""
    with httpx.Client(base_url=base, timeout=30) as http:
        for secret, text in ((TEST_TOKEN, "Summarise the release notes in one line"),
                             ("ci-secret-0123456789", "nightly build passed: 412 tests"),
                             (TEST_TOKEN, "<script>alert('shown as text')</script>")):
            http.post("/v1/responses", headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "main", "input": text, "stream": True}).raise_for_status()


def wait_for_ledger(base: str) -> None:
    """Until the observability plugin's usage ledger (written in batches, about once a second) has both keys."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = httpx.get(f"{base}/-/usage?group_by=day", headers={"Authorization": f"Bearer {TEST_TOKEN}"},
                         timeout=30).json()["data"]
        if len({row["principal"] for row in rows}) >= 2:
            return
        time.sleep(0.2)
    raise RuntimeError("the usage ledger recorded nothing within 15 s")


def sign_in(page: Any, base: str) -> None:
    page.goto(f"{base}/console/login")
    page.fill("#secret", TEST_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console/")


def measure(context: Any, base: str) -> list[tuple[str, int, int, float, float]]:
    """Per page: bytes and requests until the network is idle (the page's own API calls included), timings."""
    rows = []
    for path in PAGES:
        page = context.new_page()
        responses: list[Any] = []
        page.on("response", lambda r, responses=responses: responses.append(r) if r.ok else None)
        page.goto(f"{base}{path}", wait_until="networkidle")
        timing = page.evaluate("() => { const t = performance.getEntriesByType('navigation')[0]; "
                               "return [t.domContentLoadedEventEnd, t.loadEventEnd]; }")
        sizes = [len(r.body()) for r in responses]
        rows.append((path, sum(sizes), len(sizes), timing[0], timing[1]))
        page.close()
    return rows


def screenshots(context: Any, base: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page = context.new_page()
    shot = lambda name: page.screenshot(path=str(folder / f"{name}.png"), full_page=True)  # noqa: E731
    page.goto(f"{base}/console/")
    page.wait_for_load_state("load")
    shot("overview")
    page.goto(f"{base}/console/playground")
    page.click("#pg-options summary")
    page.fill("#pg-tools", WEATHER_TOOL)
    page.select_option("#pg-tool-choice", "required")
    page.fill("#pg-message", "Lisbon")
    page.click("#pg-send")
    page.wait_for_selector(".tool-card")
    page.wait_for_function("() => document.getElementById('pg-status').textContent === 'completed'")
    page.fill(".tool-output", '{"temperature_c": 19, "sky": "clear"}')
    page.click(".tool-card button")
    page.wait_for_function("() => document.getElementById('pg-status').textContent === 'completed' && "
                           "document.querySelectorAll('.answer').length === 2")
    page.select_option("#pg-tool-choice", "")
    page.fill("#pg-tools", "")
    page.fill("#pg-message", "Thanks! Streamed word by word, with every event in the timeline.")
    page.click("#pg-send")
    page.wait_for_function("() => document.querySelectorAll('.answer').length === 3 && "
                           "document.getElementById('pg-status').textContent === 'completed'")
    shot("playground")
    page.goto(f"{base}/console/responses")
    page.wait_for_selector("#rs-table tbody tr")
    shot("responses")
    page.click("#rs-table tbody tr a")
    page.wait_for_selector("#rd-timeline tbody tr")
    shot("response")
    with httpx.Client(base_url=base, timeout=30) as http:
        for secret in (TEST_TOKEN, "ci-secret-0123456789"):
            http.post("/v1/responses", headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "slow", "input": " ".join(["word"] * 60), "background": True})
    page.goto(f"{base}/console/runs")
    page.wait_for_function("() => document.querySelectorAll('#lr-table tbody tr').length === 2")
    time.sleep(1.5)
    shot("runs")
    wait_for_ledger(base)
    page.goto(f"{base}/console/usage")
    page.wait_for_function("() => document.querySelectorAll('#us-charts .uplot').length === 2")
    shot("usage")
    page.context.clear_cookies()
    page.goto(f"{base}/console/login")
    shot("login")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshots", type=Path, help="save one PNG per page into this folder")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        app = build_app(merge(default_config(Path(tmp) / "state"), CONFIG), Path(tmp) / "plugins.toml")
        with serve_in_thread(app) as base, sync_playwright() as pw:
            history(base)
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            sign_in(context.new_page(), base)
            if args.screenshots:
                screenshots(context, base, args.screenshots)
                sign_in(context.new_page(), base)
            rows = measure(context, base)
            browser.close()
    print(f"{'page':<22}{'bytes':>9}{'requests':>10}{'DOMContentLoaded ms':>22}{'load ms':>10}")
    for path, size, count, dcl, load in rows:
        print(f"{path:<22}{size:>9}{count:>10}{dcl:>22.1f}{load:>10.1f}")
    overview = rows[0][1]
    print(f"overview: {overview} bytes of a {OVERVIEW_LIMIT} byte budget")
    return 0 if overview < OVERVIEW_LIMIT else 1


if __name__ == "__main__":
    threading.current_thread().name = "bench-console"
    sys.exit(main())
