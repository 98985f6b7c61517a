"""plugins.toml -> settings: errors name the file, the table and the key, and list what is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.app import create_app
from kernel.config import load_settings, settings_from_dict
from kernel.errors import ConfigError
from kernel.testing import TEST_TOKEN

BASE = f"""
[kernel]
state_dir = "state"

[kernel.auth]
token = "{TEST_TOKEN}"

[agents.main]
provider = "echo"

[plugins.echo]
enabled = true
"""


def config_error(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env or {})
    return str(info.value)


def app_error(path: Path, env: dict[str, str] | None = None) -> str:
    """Errors that need the plugins (plugin, provider and agent tables) surface in create_app."""
    settings = load_settings(path, env=env or {})
    with pytest.raises(ConfigError) as info:
        create_app(settings)
    return str(info.value)


def test_a_valid_file_loads_with_defaults_and_state_dir_beside_it(write_config):
    path = write_config(BASE)
    settings = load_settings(path, env={})
    assert settings.kernel.host == "127.0.0.1"
    assert settings.kernel.port == 18789
    assert settings.kernel.default_agent == "main"
    assert settings.agents["main"].provider == "echo"
    assert settings.enabled_plugins() == {"echo"}
    # Relative state dirs are taken from plugins.toml's folder, not the working directory.
    assert settings.state_dir == (path.parent / "state").resolve()


def test_the_shipped_plugins_toml_parses():
    settings = load_settings(Path(__file__).resolve().parents[2] / "plugins.toml", env={})
    assert settings.kernel.port == 18789
    assert "main" in settings.agents
    # The endpoint plugins are enabled explicitly (absent means off).
    assert {"openresponses", "chat_completions"} <= settings.enabled_plugins()


def test_unknown_top_level_table_names_file_and_lists_valid_tables(write_config):
    path = write_config(BASE + "\n[plugin.echo]\nenabled = true\n")
    message = config_error(path)
    assert str(path) in message
    assert "[plugin]" in message
    assert "valid tables: agents, kernel, plugins, providers" in message


@pytest.mark.parametrize(
    ("section", "bad_key", "table", "some_valid"),
    [
        ("[kernel]", "hots", "[kernel]", ["host", "port", "state_dir", "default_agent"]),
        ("[kernel.auth]", "tokn", "[kernel.auth]", ["mode", "token", "password", "keys"]),
        ("[agents.main]", "provder", "[agents.main]", ["provider", "model", "instructions"]),
        ("[kernel.auth.keys.ci]", "secrit", "[kernel.auth.keys.ci]", ["secret"]),
    ],
)
def test_unknown_key_names_file_table_key_and_lists_valid_keys(write_config, section, bad_key, table, some_valid):
    line = f'{section}\n{bad_key} = "x"'
    text = BASE.replace(section, line, 1) if f"{section}\n" in BASE else BASE + f"\n{line}\n"
    path = write_config(text)
    message = config_error(path)
    lines = [line for line in message.splitlines() if "unknown key" in line]
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}: {table} unknown key {bad_key!r}; valid keys: ")
    listed = lines[0].split("valid keys: ", 1)[1].split(", ")
    for key in some_valid:
        assert key in listed


def test_a_bad_value_names_the_key_and_the_constraint(write_config):
    path = write_config(BASE.replace('state_dir = "state"', 'state_dir = "state"\nport = 70000'))
    message = config_error(path)
    assert f"{path}: [kernel] port:" in message
    assert "65535" in message


def test_a_plugin_table_that_is_not_a_table(write_config):
    path = write_config(BASE + '\n[plugins]\nexample = "yes"\n')
    assert f"{path}: [plugins.example] must be a table" in config_error(path)


def test_malformed_toml_reports_line_and_column(write_config):
    path = write_config('[kernel]\nhost = "127.0.0.1"\nport = = 1\n')
    message = config_error(path)
    assert str(path) in message
    assert "invalid TOML" in message
    assert "line 3" in message and "column 8" in message


def test_missing_file_says_how_to_fix_it(tmp_path):
    message = config_error(tmp_path / "nope.toml")
    assert "nope.toml: file not found" in message
    assert "--config" in message


def test_env_references_expand_everywhere_they_are_used(write_config):
    path = write_config(BASE.replace(f'token = "{TEST_TOKEN}"', 'token = "${GW_TOKEN}"') + (
        '\n[providers.slow]\nkind = "echo"\nmode = "${ECHO_MODE}"\n'
        '\n[agents.other]\nprovider = "slow"\ninstructions = "call me ${NAME}, not ${NAME}!"\n'
    ))
    env = {"GW_TOKEN": "from-the-environment", "ECHO_MODE": "transcript", "NAME": "Ishmael"}
    settings = load_settings(path, env=env)
    assert settings.kernel.auth.token == "from-the-environment"
    assert settings.providers["slow"]["mode"] == "transcript"
    assert settings.agents["other"].instructions == "call me Ishmael, not Ishmael!"


def test_a_missing_env_variable_is_named_with_its_table_and_key(write_config):
    path = write_config(BASE.replace(f'token = "{TEST_TOKEN}"', 'token = "${GW_TOKEN_UNSET}"'))
    message = config_error(path, env={"OTHER": "x"})
    assert "${GW_TOKEN_UNSET}" in message
    assert f"{path}: [kernel.auth] token" in message
    assert "not set" in message


def test_a_disabled_plugins_missing_env_variable_is_not_an_error(write_config):
    text = BASE + '\n[plugins.example]\nenabled = false\ngreeting = "${EXAMPLE_GREETING}"\n'
    path = write_config(text)
    settings = load_settings(path, env={})
    assert "example" not in settings.enabled_plugins()
    create_app(settings)  # nothing validates or expands a disabled plugin's options

    enabled = write_config(text.replace("enabled = false", "enabled = true"), name="enabled.toml")
    message = config_error(enabled, env={})
    assert "${EXAMPLE_GREETING}" in message
    assert "[plugins.example] greeting" in message
    settings = load_settings(enabled, env={"EXAMPLE_GREETING": "ahoy"})
    assert create_app(settings).extensions["kernel"].plugin_settings("example").greeting == "ahoy"


def test_unknown_plugin_name_lists_installed_plugins(write_config):
    path = write_config(BASE + "\n[plugins.exampel]\nenabled = true\n")
    message = app_error(path)
    assert f"{path}: [plugins.exampel] names a plugin that is not installed" in message
    installed = message.split("installed plugins: ", 1)[1].split(", ")
    assert "echo" in installed and "example" in installed


def test_enabled_must_be_a_boolean(write_config):
    path = write_config(BASE.replace("[plugins.echo]\nenabled = true", '[plugins.echo]\nenabled = "yes"'))
    assert f"{path}: [plugins.echo] enabled must be true or false" in app_error(path)


def test_unknown_key_in_a_plugin_table_lists_the_plugins_options(write_config):
    path = write_config(BASE + '\n[plugins.example]\nenabled = true\ngreting = "hi"\n')
    message = app_error(path)
    assert message == f"{path}: [plugins.example] unknown key 'greting'; valid keys: agent, greeting, max_body_bytes"


def test_options_for_a_plugin_without_settings_are_an_error(write_config):
    path = write_config(BASE.replace("[plugins.echo]\nenabled = true", "[plugins.echo]\nenabled = true\nspeed = 3"))
    message = app_error(path)
    assert f"{path}: [plugins.echo] unknown key 'speed'" in message
    assert "takes no options besides 'enabled'" in message


def test_a_bad_plugin_option_value_names_plugin_table_and_key(write_config):
    path = write_config(BASE + "\n[plugins.example]\nenabled = true\nmax_body_bytes = -5\n")
    message = app_error(path)
    assert f"{path}: [plugins.example] max_body_bytes:" in message
    assert "greater than 0" in message


def test_agent_naming_an_unknown_provider_lists_what_is_available(write_config):
    path = write_config(BASE.replace('provider = "echo"', 'provider = "gpt"'))
    message = app_error(path)
    assert f"{path}: [agents.main] provider = 'gpt'" in message
    assert message.endswith("available: echo")


def test_provider_of_an_unknown_kind_lists_enabled_kinds(write_config):
    # `reverse` is installed (the example plugin) but not enabled, so it is not offered.
    path = write_config(BASE + '\n[providers.rev]\nkind = "reverse"\n')
    message = app_error(path)
    assert f"{path}: [providers.rev] kind = 'reverse' is not a provider kind of any enabled plugin" in message
    assert message.endswith("available kinds: echo")


def test_unknown_provider_option_lists_the_kinds_options(write_config):
    path = write_config(BASE + '\n[providers.e]\nkind = "echo"\nmood = "sunny"\n')
    message = app_error(path)
    assert message.startswith(f"{path}: [providers.e] unknown key 'mood'; valid keys: ")
    assert "delay_seconds" in message and "mode" in message


def test_default_agent_must_exist(write_config):
    path = write_config(BASE.replace('state_dir = "state"', 'state_dir = "state"\ndefault_agent = "boss"'))
    message = config_error(path)
    assert f"{path}: [kernel] default_agent = 'boss' is not a configured agent; known agents: main" in message


def test_named_api_keys_need_a_real_secret(write_config):
    path = write_config(BASE + '\n[kernel.auth.keys.ci]\nsecret = "short"\n')
    message = config_error(path)
    assert f"{path}: [kernel.auth.keys.ci] secret:" in message
    assert "8 characters" in message


def test_settings_from_dict_uses_the_same_checks(tmp_path):
    with pytest.raises(ConfigError, match=r"\[kernel\] unknown key 'bind'"):
        settings_from_dict({"kernel": {"bind": "0.0.0.0"}}, tmp_path / "x.toml", env={})


def test_agent_options_are_validated_by_name_and_range(write_config):
    typo = config_error(write_config(BASE + '\n[agents.main.options]\ntemprature = 0.5\n'))
    assert "temprature" in typo and "[agents.main" in typo and "temperature" in typo
    too_hot = config_error(write_config(BASE + '\n[agents.main.options]\ntemperature = 5\n'))
    assert "temperature" in too_hot and "2" in too_hot
    effort = config_error(write_config(BASE + '\n[agents.main.options]\nreasoning_effort = "extreme"\n'))
    assert "reasoning_effort" in effort
