"""The ``kernel`` command, driven with click's CliRunner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from kernel.cli import build_cli
from kernel.config import load_settings
from kernel.plugins import installed_entry_points
from kernel.testing import TEST_TOKEN, free_port

CONFIG = f"""\
# The gateway config used by the CLI tests.
[kernel]
state_dir = "state"   # beside this file

[kernel.auth]
token = "{TEST_TOKEN}"

[agents.main]
provider = "echo"     # deterministic

[plugins.echo]
enabled = true        # provider kind "echo"

# The third-party example plugin (its own distribution).
[plugins.example]
enabled = true        # GET /example/hello
greeting = "hi"       # its own option
"""


@pytest.fixture
def config(write_config):
    return write_config(CONFIG)


def invoke(config_path, *args: str):
    argv = [*args, "--config", str(config_path)]
    return CliRunner().invoke(build_cli(argv), argv, catch_exceptions=False)


def test_plugins_list_table(config):
    result = invoke(config, "plugins", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    headers = [line for line in lines if not line.startswith(" ")]
    assert [line.split()[0] for line in headers] == sorted(installed_entry_points())
    assert "example 0.3.1 (third-party: kernel-example-plugin) enabled" in headers
    assert "echo 0.1.0 (built-in: agentkernel) enabled" in headers
    example = lines[lines.index("example 0.3.1 (third-party: kernel-example-plugin) enabled") + 1:]
    assert example[0] == ("  hooks: register_commands, register_migrations, register_providers, register_routes, "
                          "register_settings")
    assert example[1] == "  providers: reverse"
    assert "  route: GET /example/hello" in example and "  route: POST /example/echo" in example
    disabled = [line for line in headers if line.endswith(" disabled")]
    assert disabled and all(line.split()[0] not in ("echo", "example") for line in disabled)


def test_plugins_list_json(config):
    result = invoke(config, "plugins", "list", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [p["name"] for p in data] == sorted(installed_entry_points())
    example = next(p for p in data if p["name"] == "example")
    assert example == {
        "name": "example",
        "version": "0.3.1",
        "source": "third-party",
        "distribution": "kernel-example-plugin",
        "entry_point": "kernel_example_plugin.plugin",
        "enabled": True,
        "hooks": ["register_commands", "register_migrations", "register_providers", "register_routes",
                  "register_settings"],
        "routes": example["routes"],
        "providers": ["reverse"],
        "tools": [],
    }
    assert {"methods": "GET", "path": "/example/hello"} in example["routes"]
    assert all(p["source"] == "built-in" for p in data if p["distribution"] == "agentkernel")


def test_plugins_enable_and_disable_keep_comments_and_layout(config):
    result = invoke(config, "plugins", "disable", "example")
    assert result.exit_code == 0, result.output
    assert "example: disabled" in result.output
    assert config.read_text() == CONFIG.replace(
        "enabled = true        # GET /example/hello", "enabled = false        # GET /example/hello")
    assert "example" not in load_settings(config, env={}).enabled_plugins()

    result = invoke(config, "plugins", "enable", "example")
    assert result.exit_code == 0, result.output
    assert config.read_text() == CONFIG.replace(
        "enabled = true        # GET /example/hello", "enabled = true        # GET /example/hello")


def test_enabling_a_plugin_without_a_table_appends_one(config):
    before = config.read_text()
    result = invoke(config, "plugins", "enable", "hooks")
    assert result.exit_code == 0, result.output
    after = config.read_text()
    assert after.startswith(before)  # nothing above is touched
    assert after[len(before):].strip() == "[plugins.hooks]\nenabled = true"
    assert "hooks" in load_settings(config, env={}).enabled_plugins()


def test_enabling_in_a_file_without_plugins_tables(write_config):
    path = write_config('# only agents here\n[agents.main]\nprovider = "echo"\n', name="bare.toml")
    result = invoke(path, "plugins", "enable", "echo")
    assert result.exit_code == 0, result.output
    assert path.read_text().startswith('# only agents here\n[agents.main]\nprovider = "echo"\n')
    assert load_settings(path, env={}).enabled_plugins() == {"echo"}


def test_enabling_an_unknown_plugin_fails_listing_installed(config):
    before = config.read_text()
    result = invoke(config, "plugins", "enable", "exampel")
    assert result.exit_code == 1
    assert "no installed plugin is named 'exampel'" in result.output
    assert "example" in result.output.split("installed:", 1)[1]
    assert config.read_text() == before


def test_routes(config):
    result = invoke(config, "routes")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert ["GET", "/-/health", "kernel"] in rows
    assert ["GET", "/-/plugins", "kernel"] in rows
    assert ["GET", "/example/hello", "example"] in rows
    assert ["POST", "/example/echo", "example"] in rows
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)


def test_config_check_ok(config):
    result = invoke(config, "config", "check")
    assert result.exit_code == 0
    assert result.output.strip() == f"{config}: OK"


@pytest.mark.parametrize(("edit", "needle"), [
    (("greeting = \"hi\"", "greting = \"hi\""), "[plugins.example] unknown key 'greting'; valid keys: agent, greeting"),
    (("[kernel]", "[kernel]\nport = \"many\""), "[kernel] port: Input should be a valid integer"),
    (("provider = \"echo\"", "provider = \"nope\""), "[agents.main] provider = 'nope'"),
    (("[plugins.echo]", "[plugins.ecko]"), "[plugins.ecko] names a plugin that is not installed"),
    (("token = ", "token = = "), "invalid TOML"),
    (("greeting = \"hi\"", "greeting = \"${KERNEL_TEST_SURELY_UNSET}\""), "${KERNEL_TEST_SURELY_UNSET}"),
])
def test_config_check_fails_with_the_error(write_config, edit, needle):
    path = write_config(CONFIG.replace(*edit), name="broken.toml")
    result = invoke(path, "config", "check")
    assert result.exit_code == 1
    assert f"Error: {path}: " in result.output
    assert needle in result.output


def test_config_check_reports_a_broken_plugin_with_its_cause(write_config, tmp_path, monkeypatch):
    import importlib.metadata as md

    from kernel.plugins import ENTRY_POINT_GROUP

    (tmp_path / "kt_cli_broken.py").write_text("import no_such_dependency_for_tests\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = md.EntryPoint(name="broken", value="kt_cli_broken", group=ENTRY_POINT_GROUP)
    real = md.entry_points
    monkeypatch.setattr(md, "entry_points", lambda group: [*real(group=group), fake] if group == ENTRY_POINT_GROUP
                        else real(group=group))
    path = write_config(CONFIG + "\n[plugins.broken]\nenabled = true\n", name="with-broken.toml")
    result = invoke(path, "config", "check")
    assert result.exit_code == 1
    assert "plugin 'broken' (entry point 'kt_cli_broken') failed to import" in result.output
    assert "caused by: ModuleNotFoundError" in result.output


def invoke_global(config_path, *args: str):
    """``kernel --config PATH ARGS...``: the config given once, before the subcommand."""
    argv = ["--config", str(config_path), *args]
    return CliRunner().invoke(build_cli(argv), argv, catch_exceptions=False)


def test_plugin_commands_appear_only_when_enabled(config):
    result = invoke_global(config, "--help")
    assert result.exit_code == 0, result.output
    assert "example-hello" in result.output
    result = invoke_global(config, "example-hello", "Ivy")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "hello, Ivy!"
    invoke(config, "plugins", "disable", "example")
    assert "example-hello" not in invoke_global(config, "--help").output


def test_a_config_given_before_the_subcommand_applies_to_it(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "..")  # no plugins.toml in the working directory
    result = invoke_global(config, "config", "check")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{config}: OK"
    assert ["GET", "/example/hello", "example"] in [line.split() for line in invoke_global(config, "routes").output
                                                    .splitlines()]


def test_a_broken_config_hides_plugin_commands_but_builtins_report_it(write_config):
    path = write_config(CONFIG.replace("[agents.main]", "[agents.main]\nbogus = 1"), name="bad.toml")
    group = build_cli(["--config", str(path)])
    assert "example-hello" not in group.commands
    assert {"serve", "plugins", "routes", "config"} <= set(group.commands)
    result = CliRunner().invoke(group, ["config", "check", "--config", str(path)])
    assert result.exit_code == 1 and "unknown key 'bogus'" in result.output


def test_kernel_config_env_variable_selects_the_file(config, monkeypatch):
    monkeypatch.setenv("KERNEL_CONFIG", str(config))
    result = CliRunner().invoke(build_cli([]), ["config", "check"])
    assert result.exit_code == 0
    assert str(config) in result.output


def test_serve_refuses_an_unsafe_bind(write_config):
    path = write_config(CONFIG.replace(f'token = "{TEST_TOKEN}"', ""), name="open.toml")
    result = CliRunner().invoke(build_cli([]), ["serve", "--config", str(path), "--host", "0.0.0.0",
                                                "--port", str(free_port())])
    assert result.exit_code == 1
    assert "refusing to bind 0.0.0.0" in result.output
    assert "[kernel.auth]" in result.output
