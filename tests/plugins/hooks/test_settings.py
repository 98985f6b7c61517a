"""[plugins.hooks] validation: the plugin refuses to start without a token, errors name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kernel.app import create_app
from kernel.config import load_settings
from kernel.errors import ConfigError
from plugins.hooks.settings import HooksSettings

DOCS = Path(__file__).resolve().parents[3] / "docs" / "hooks.md"


def config_error(make_app, options: dict) -> str:
    with pytest.raises(ConfigError) as info:
        make_app({"plugins": {"hooks": {"enabled": True, **options}}})
    return str(info.value)


def test_refuses_to_start_without_a_token(make_app, tmp_path):
    msg = config_error(make_app, {})
    assert msg.startswith(f"{tmp_path / 'plugins.toml'}: [plugins.hooks] token: ")
    assert "required when the hooks plugin is enabled" in msg and "${HOOKS_TOKEN}" in msg
    assert "[plugins.hooks] token: " in config_error(make_app, {"token": "   "})
    assert "too short" in config_error(make_app, {"token": "short"})


def test_disabled_plugin_needs_no_token(make_app):
    app = make_app({"plugins": {"hooks": {"enabled": False}}})
    assert "hooks" not in app.extensions


def test_token_from_the_environment(tmp_path, monkeypatch):
    config = tmp_path / "plugins.toml"
    config.write_text(
        f'[kernel]\nstate_dir = "{tmp_path / "state"}"\n[kernel.auth]\ntoken = "gateway-token-0123456789"\n'
        '[agents.main]\nprovider = "echo"\n[plugins.echo]\nenabled = true\n'
        '[plugins.hooks]\nenabled = true\ntoken = "${HOOKS_TOKEN}"\n'
    )
    with pytest.raises(ConfigError, match=r"\[plugins.hooks\].*\$\{HOOKS_TOKEN\}, which is not set"):
        load_settings(config, env={})
    app = create_app(load_settings(config, env={"HOOKS_TOKEN": "from-the-env-0123456789"}))
    assert app.extensions["hooks"].settings.token == "from-the-env-0123456789"


@pytest.mark.parametrize(("options", "where", "text"), [
    ({"tokn": "x"}, "[plugins.hooks]", "unknown key 'tokn'; valid keys: base_path"),
    ({"base_path": "hooks"}, "[plugins.hooks] base_path", "must look like '/hooks'"),
    ({"presets": ["gitlab"]}, "[plugins.hooks.presets] 0", "'github'"),
    ({"max_body_bytes": 0}, "[plugins.hooks] max_body_bytes", "greater than 0"),
    ({"mappings": [{"path": "wake", "message": "m"}]}, "[plugins.hooks.mappings.0] path", "built-in"),
    ({"mappings": [{"path": "a/b", "message": "m"}]}, "[plugins.hooks.mappings.0] path", "one path segment"),
    ({"mappings": [{"path": "a"}]}, "[plugins.hooks.mappings.0] message", "required"),
    ({"mappings": [{"path": "a", "message": "{{payloads.x}}"}]}, "[plugins.hooks.mappings.0] message",
     "must start with one of payload, headers, query, path, now, summary"),
    ({"mappings": [{"path": "a", "message": "{{payload.a..b}}"}]}, "[plugins.hooks.mappings.0] message",
     "use .field or [index]"),
    ({"mappings": [{"path": "a", "message": "m", "name": "{{now.x}}"}]}, "[plugins.hooks.mappings.0] name",
     "now has no fields"),
    ({"mappings": [{"path": "a", "message": "m", "match": {"kind": "x"}}]}, "[plugins.hooks.mappings.0] match",
     "match key 'kind'"),
    ({"mappings": [{"path": "a", "message": "m", "match": {"now": "x"}}]}, "[plugins.hooks.mappings.0] match",
     "must name a field"),
    ({"mappings": [{"path": "a", "message": "m", "wake_mode": "later"}]}, "[plugins.hooks.mappings.0] wake_mode",
     "must be one of now, next-heartbeat"),
    ({"mappings": [{"path": "a", "message": "m", "action": "run"}]}, "[plugins.hooks.mappings.0] action",
     "'wake' or 'agent'"),
    ({"mappings": [{"path": "a", "message": "m", "agent": "ghost"}]}, "[plugins.hooks.mappings.0] agent",
     "'ghost' (mapping 'a') is not a configured agent; known agents: main"),
])
def test_config_errors_name_the_key(make_app, options, where, text):
    msg = config_error(make_app, {"token": "t" * 20, **options})
    assert where in msg and text in msg, msg


def test_presets_become_mappings_after_configured_ones():
    s = HooksSettings(token="t" * 20, presets=["github"], mappings=[{"path": "github", "message": "mine"}])
    paths = [(m.path, m.preset, m.message) for m in s.all_mappings()]
    assert paths == [("github", None, "mine"), ("github", "github", None)]


def test_the_documented_example_config_loads(tmp_path):
    text = DOCS.read_text(encoding="utf-8")
    example = re.search(r"```toml\n(\[plugins\.hooks\].*?)```", text, re.DOTALL).group(1)
    config = tmp_path / "plugins.toml"
    config.write_text(
        f'[kernel]\nstate_dir = "{tmp_path / "state"}"\n[kernel.auth]\ntoken = "gateway-token-0123456789"\n'
        '[agents.main]\nprovider = "echo"\n[plugins.echo]\nenabled = true\n' + example
    )
    app = create_app(load_settings(config, env={"HOOKS_TOKEN": "documented-token-0123456789"}))
    settings = app.extensions["hooks"].settings
    assert [m.path for m in settings.all_mappings()] == ["alerts", "alerts", "github"]
    assert settings.rate_limit_per_minute == 60 and settings.max_body_bytes == 256 * 1024
