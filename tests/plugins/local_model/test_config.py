"""[providers.X] kind = "local_model": options, the model file, errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from quart.testing.app import LifespanError

from kernel import Message, TextPart, Turn
from kernel.errors import ConfigError
from plugins.local_model.model_file import BUNDLED_FILE, bundled_model_path
from plugins.local_model.options import default_threads
from plugins.local_model.provider import LocalModelProvider


def local_app(make_app: Any, **options: Any) -> Any:
    return make_app({
        "plugins": {"local_model": {"enabled": True}},
        "providers": {"local": {"kind": "local_model", **options}},
        "agents": {"main": {"provider": "local"}},
    })


def test_defaults_use_the_bundled_model_and_every_core(make_app: Any) -> None:
    provider = local_app(make_app).extensions["kernel"].providers["local"]
    assert isinstance(provider, LocalModelProvider)
    assert provider.model_path == bundled_model_path() and provider.model_path.name == BUNDLED_FILE
    assert provider.engine.config.n_threads == default_threads()
    assert provider.engine.config.n_ctx == 2048
    assert provider.options.load == "startup" and provider.options.max_queue == 8
    assert not provider.loaded  # building the app never loads; start() or first use does
    assert provider.accepts_images is False


def test_an_agent_may_name_the_kind_directly(make_app: Any) -> None:
    app = make_app({"plugins": {"local_model": {"enabled": True}}, "agents": {"main": {"provider": "local_model"}}})
    assert isinstance(app.extensions["kernel"].providers["local_model"], LocalModelProvider)


def test_unknown_option_names_the_table_and_the_valid_keys(make_app: Any) -> None:
    with pytest.raises(ConfigError) as info:
        local_app(make_app, n_gpu_layers=10)
    message = str(info.value)
    assert "[providers.local] unknown key 'n_gpu_layers'" in message
    assert "model_path" in message and "max_queue" in message


@pytest.mark.parametrize(("key", "value"), [("load", "eventually"), ("n_ctx", 10), ("max_queue", -1),
                                            ("n_threads", 0), ("repeat_penalty", 0.5)])
def test_invalid_values_name_the_key(make_app: Any, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"\[providers\.local\] {key}:"):
        local_app(make_app, **{key: value})


def test_missing_model_file_is_a_config_error(make_app: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[providers\.local\] model_path: no such file: .*nope\.gguf"):
        local_app(make_app, model_path="models/nope.gguf")


def test_relative_model_path_is_read_next_to_plugins_toml(make_app: Any, tmp_path: Path) -> None:
    # make_app places plugins.toml in tmp_path.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.gguf").symlink_to(bundled_model_path())
    provider = local_app(make_app, model_path="models/mine.gguf").extensions["kernel"].providers["local"]
    assert provider.model_path == tmp_path / "models" / "mine.gguf"


async def test_a_file_that_is_not_a_model_fails_runs_with_a_clear_500(make_app: Any, tmp_path: Path) -> None:
    (tmp_path / "broken.gguf").write_bytes(b"this is not a GGUF file")
    app = local_app(make_app, model_path="broken.gguf", load="first_use")
    async with app.test_app():
        kernel = app.extensions["kernel"]
        run = kernel.runs.start(Turn(agent="main", input=[Message("user", [TextPart("hi")])]))
        result = await run.wait()
        assert result.status == "failed"
        assert result.error.status == 500 and result.error.code == "model_load_failed"
        assert "broken.gguf" in result.error.message and "'local'" in result.error.message
        assert not kernel.providers["local"].gate.busy  # nothing is left holding the model


async def test_a_failed_load_gives_back_the_queue_place_it_was_admitted_with(make_app: Any, tmp_path: Path) -> None:
    """With max_queue = 0 there is one place; a run whose load failed must not keep it
    (the next request would get 429 "busy" instead of the real error for 30 s)."""
    (tmp_path / "broken.gguf").write_bytes(b"this is not a GGUF file")
    app = local_app(make_app, model_path="broken.gguf", load="first_use", max_queue=0)
    async with app.test_app():
        kernel = app.extensions["kernel"]
        for _ in range(3):
            run = kernel.runs.start(Turn(agent="main", input=[Message("user", [TextPart("hi")])]))
            result = await run.wait()
            assert result.error is not None and result.error.code == "model_load_failed"
        assert kernel.providers["local"].gate.occupancy() == 0


async def test_a_file_that_is_not_a_model_stops_startup_when_loading_at_startup(make_app: Any,
                                                                                 tmp_path: Path) -> None:
    (tmp_path / "broken.gguf").write_bytes(b"this is not a GGUF file")
    app = local_app(make_app, model_path="broken.gguf")
    with pytest.raises(LifespanError, match=r"could not load .*broken\.gguf"):
        async with app.test_app():
            pass
    # The failed start closed what it had opened (an open store thread would keep the
    # process alive after the error).
    with pytest.raises(RuntimeError, match="store is not open"):
        await app.extensions["kernel"].store.fetchall("SELECT 1")
