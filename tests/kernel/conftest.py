"""Fixtures shared by the kernel tests (the ``make_app``/``live_server`` ones come from kernel.testing)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from quart import Quart
from quart.testing import QuartClient

from kernel.app import get_kernel
from kernel.runtime import Kernel


@asynccontextmanager
async def _running(app: Quart) -> AsyncIterator[tuple[Kernel, QuartClient]]:
    # test_app() runs the before_serving/after_serving lifecycle (store open, startup hooks).
    async with app.test_app() as test_app:
        yield get_kernel(app), test_app.test_client()


@pytest.fixture
def running() -> Callable[[Quart], AbstractAsyncContextManager[tuple[Kernel, QuartClient]]]:
    """``async with running(app) as (kernel, client):`` with the app started and stopped."""
    return _running


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write plugins.toml text into tmp_path and return its path."""

    def write(text: str, name: str = "plugins.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
