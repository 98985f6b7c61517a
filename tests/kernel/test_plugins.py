"""Plugin discovery, the allowlist, load failures, and one test per hook in kernel/hookspecs.py."""

from __future__ import annotations

import ast
import importlib.metadata as md
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict
from quart import Blueprint, jsonify

from kernel import ProviderKind, hookimpl, hookspecs
from kernel.app import create_app, get_kernel
from kernel.cli import build_cli
from kernel.config import settings_from_dict
from kernel.errors import ConfigError
from kernel.plugins import ENTRY_POINT_GROUP, PluginLoadError, installed_entry_points, load_plugins
from kernel.testing import AUTH_HEADERS, default_config, merge

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_HOOKS = [
    "register_commands", "register_migrations", "register_providers", "register_routes", "register_settings",
]


@pytest.fixture
def fake_module(tmp_path, monkeypatch):
    """Write a module into an importable folder; returns its (unique) module name."""
    folder = tmp_path / "fakeplugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    created: list[str] = []

    def make(name: str, source: str) -> str:
        module = f"kt_{name}_{tmp_path.name.replace('-', '_')}"
        (folder / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        created.append(module)
        return module

    yield make
    for module in created:
        sys.modules.pop(module, None)


def ep(name: str, value: str) -> md.EntryPoint:
    return md.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def settings_for(tmp_path, config=None):
    return settings_from_dict(merge(default_config(tmp_path / "state"), config or {}), tmp_path / "plugins.toml")


def with_echo(**extra: md.EntryPoint) -> dict[str, md.EntryPoint]:
    return {"echo": installed_entry_points()["echo"], **extra}


RAISES_ON_IMPORT = """
raise RuntimeError("this module must never be imported")
"""

# --------------------------------------------------------------------------- discovery


def test_installed_plugins_are_found_through_entry_points_only():
    found = installed_entry_points()
    named = {e.name: e for e in md.entry_points(group=ENTRY_POINT_GROUP)}
    assert set(found) == set(named)
    assert found["echo"].value == "plugins.echo.plugin"
    assert found["example"].value == "kernel_example_plugin.plugin"
    assert found["example"].dist.metadata["Name"] == "kernel-example-plugin"


def test_the_kernel_never_imports_a_plugin_by_name():
    # The kernel finds plugins via entry points; no kernel module imports one.
    offenders = []
    for path in sorted((REPO / "kernel").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n == "plugins" or n.startswith(("plugins.",
                                                                                                 "kernel_example"))]
    assert offenders == []


def test_records_describe_a_third_party_plugin(tmp_path):
    app = create_app(settings_for(tmp_path, {"plugins": {"example": {"enabled": True}}}))
    rec = get_kernel(app).plugins["example"]
    assert rec.source == "third-party"
    assert rec.distribution == "kernel-example-plugin"
    assert rec.version == "0.3.1"
    assert rec.entry_point == "kernel_example_plugin.plugin"
    assert rec.enabled is True
    assert rec.hooks == EXAMPLE_HOOKS
    assert rec.providers == ["reverse"]
    assert {"methods": "GET", "path": "/example/hello"} in rec.routes
    assert {"methods": "POST", "path": "/example/echo"} in rec.routes
    echo = get_kernel(app).plugins["echo"]
    assert (echo.source, echo.distribution, echo.hooks, echo.providers) == (
        "built-in", "agentkernel", ["register_providers"], ["echo"])


def test_an_installed_plugin_absent_from_plugins_toml_stays_off_and_unimported():
    # A fresh interpreter, so no other test has imported the example plugin yet.
    script = textwrap.dedent("""
        import sys, tempfile, pathlib
        from kernel.app import create_app, get_kernel
        from kernel.config import settings_from_dict
        from kernel.testing import default_config
        d = pathlib.Path(tempfile.mkdtemp())
        app = create_app(settings_from_dict(default_config(d / "state"), d / "plugins.toml"))
        rec = get_kernel(app).plugins["example"]
        print(rec.enabled, rec.hooks, "kernel_example_plugin" in sys.modules,
              any(m.startswith("kernel_example_plugin") for m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "[]", "False", "False"]


def test_a_disabled_plugin_is_never_imported(tmp_path, fake_module):
    module = fake_module("boom", RAISES_ON_IMPORT)
    eps = with_echo(boom=ep("boom", module))
    for config in ({}, {"plugins": {"boom": {"enabled": False, "anything": "${UNSET_VAR}"}}}):
        app = create_app(settings_for(tmp_path, config), entry_points=eps)
        rec = get_kernel(app).plugins["boom"]
        assert rec.enabled is False
        assert rec.hooks == []
        assert rec.source == "third-party"
        assert module not in sys.modules


def test_an_enabled_plugin_that_fails_to_import_stops_startup(tmp_path, fake_module):
    module = fake_module("boom", RAISES_ON_IMPORT)
    eps = with_echo(boom=ep("boom", module))
    with pytest.raises(PluginLoadError) as info:
        create_app(settings_for(tmp_path, {"plugins": {"boom": {"enabled": True}}}), entry_points=eps)
    message = str(info.value)
    assert "plugin 'boom'" in message
    assert f"entry point {module!r}" in message
    assert "failed to import" in message
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) == "this module must never be imported"


def test_an_entry_point_naming_a_missing_module_is_reported(tmp_path):
    eps = with_echo(ghost=ep("ghost", "no_such_module_for_kernel_tests.plugin"))
    with pytest.raises(PluginLoadError, match=r"plugin 'ghost' \(entry point 'no_such_module_for_kernel_tests"):
        create_app(settings_for(tmp_path, {"plugins": {"ghost": {"enabled": True}}}), entry_points=eps)


def test_a_plugin_that_fails_to_register_names_itself(tmp_path, fake_module):
    module = fake_module("badargs", """
        from kernel import hookimpl

        @hookimpl
        def register_routes(kernel, settings, surprise):
            return []
    """)
    eps = with_echo(badargs=ep("badargs", module))
    with pytest.raises(PluginLoadError) as info:
        create_app(settings_for(tmp_path, {"plugins": {"badargs": {"enabled": True}}}), entry_points=eps)
    assert f"plugin 'badargs' (entry point {module!r}) failed to register" in str(info.value)
    assert "surprise" in str(info.value.__cause__)


def test_a_misspelt_hookimpl_fails_at_startup(tmp_path, fake_module):
    module = fake_module("typo", """
        from kernel import hookimpl

        @hookimpl
        def register_route(kernel, settings):
            return []
    """)
    eps = with_echo(typo=ep("typo", module))
    with pytest.raises(PluginLoadError) as info:
        create_app(settings_for(tmp_path, {"plugins": {"typo": {"enabled": True}}}), entry_points=eps)
    message = str(info.value)
    assert "register_route" in message
    assert "typo" in message
    assert info.value.__cause__ is not None


def test_two_installed_plugins_with_one_name_are_an_error(monkeypatch):
    duplicates = [ep("twin", "pkg_a.plugin"), ep("twin", "pkg_b.plugin")]
    monkeypatch.setattr(md, "entry_points", lambda group: duplicates if group == ENTRY_POINT_GROUP else [])
    with pytest.raises(PluginLoadError, match="two installed plugins are both named 'twin'"):
        installed_entry_points()


def test_each_app_gets_its_own_plugin_manager(tmp_path):
    first = create_app(settings_for(tmp_path))
    second = create_app(settings_for(tmp_path, {"plugins": {"example": {"enabled": True}}}))
    assert get_kernel(first).pm is not get_kernel(second).pm
    assert get_kernel(first).pm.get_plugin("example") is None
    assert get_kernel(second).pm.get_plugin("example") is not None
    # Nothing is built at import time: the module holds no manager.
    import kernel.plugins as plugins_module

    assert not any(type(v).__name__ == "PluginManager" for v in vars(plugins_module).values())


# --------------------------------------------------------------------------- one test per hook

HOOKS_TESTED = {
    "register_settings": "test_register_settings_validates_the_plugins_table",
    "register_routes": "test_register_routes_serves_blueprints_with_the_plugins_settings",
    "register_providers": "test_register_providers_adds_a_kind_agents_can_use",
    "register_tools": "test_register_tools_adds_a_kind_the_agent_loop_runs",
    "register_migrations": "test_register_migrations_applies_each_version_once_before_startup",
    "register_commands": "test_register_commands_adds_subcommands_for_enabled_plugins_only",
    "startup": "test_startup_and_shutdown_are_awaited_in_order_and_reverse_order",
    "shutdown": "test_startup_and_shutdown_are_awaited_in_order_and_reverse_order",
    "transform_hook_payload": "test_transform_hook_payload_is_declared_and_chains",
    "authenticate_request": "test_authenticate_request_names_the_principal_of_a_request_without_a_bearer",
}


def test_every_hookspec_has_a_test():
    declared = {name for name, fn in vars(hookspecs).items()
                if inspect.isfunction(fn) and hasattr(fn, "kernel_spec")}
    assert declared == set(HOOKS_TESTED)
    for test_name in HOOKS_TESTED.values():
        assert callable(globals()[test_name])


def test_every_hookspec_is_documented_and_typed():
    for name in HOOKS_TESTED:
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and "called" in fn.__doc__.lower(), name  # says when it is called
        params = inspect.signature(fn).parameters
        assert set(fn.__annotations__) == {*params, "return"}, name  # every argument and the result typed


def test_register_settings_validates_the_plugins_table(tmp_path, running):
    settings = settings_for(tmp_path, {"plugins": {"example": {"enabled": True, "greeting": "ahoy"}}})
    kernel = get_kernel(create_app(settings))
    plugin_settings = kernel.plugin_settings("example")
    assert type(plugin_settings).__name__ == "ExampleSettings"
    assert plugin_settings.greeting == "ahoy"
    assert plugin_settings.max_body_bytes == 4096  # the model's default
    assert kernel.plugin_settings("echo") is None  # echo registers no settings
    bad = settings_for(tmp_path, {"plugins": {"example": {"enabled": True, "greeting": ""}}})
    with pytest.raises(ConfigError, match=r"\[plugins\.example\] greeting: String should have at least 1"):
        create_app(bad)


async def test_register_routes_serves_blueprints_with_the_plugins_settings(tmp_path, running):
    app = create_app(settings_for(tmp_path, {"plugins": {"example": {"enabled": True, "greeting": "ahoy"}}}))
    async with running(app) as (_, client):
        response = await client.get("/example/hello?name=Ann", headers=AUTH_HEADERS)
        assert response.status_code == 200
        assert (await response.get_json())["text"] == "ahoy Ann"


async def test_register_providers_adds_a_kind_agents_can_use(tmp_path, running):
    config = {
        "plugins": {"example": {"enabled": True}},
        "providers": {"loud": {"kind": "reverse", "upper": True, "chunk_size": 2}},
        "agents": {"mirror": {"provider": "loud"}, "plain": {"provider": "reverse"}},
    }
    app = create_app(settings_for(tmp_path, config))
    kernel = get_kernel(app)
    assert set(kernel.provider_kinds) == {"echo", "reverse"}
    async with running(app) as (kernel, client):
        response = await client.get("/example/hello?name=Bo", headers={**AUTH_HEADERS, "x-agent-id": "mirror"})
        assert (await response.get_json())["text"] == "OB OLLEH"
        response = await client.get("/example/hello?name=Bo", headers={**AUTH_HEADERS, "x-agent-id": "plain"})
        assert (await response.get_json())["text"] == "oB olleh"


async def test_register_migrations_applies_each_version_once_before_startup(tmp_path, running):
    from kernel import Migration, Schema

    seen_at_startup: list[int] = []

    async def seed(tx):
        await tx.execute("INSERT INTO notes_plugin_rows (body) VALUES (?)", (f"seeded on {tx.dialect}",))

    class Notes:
        @hookimpl
        def register_migrations(self):
            return [Schema("notes", (
                Migration(1, "rows", ("CREATE TABLE notes_plugin_rows (body TEXT NOT NULL)",)),
                Migration(2, "seed", (seed,)),
            ))]

        @hookimpl
        async def startup(self, kernel):
            # The tables exist before any startup hook runs.
            seen_at_startup.append(len(await kernel.store.fetchall("SELECT body FROM notes_plugin_rows")))

    config = {"plugins": {"example": {"enabled": True}}}
    greetings = 0
    for _ in range(2):  # a restart applies nothing twice
        app = create_app(settings_for(tmp_path, config), extra_plugins={"notes": Notes()})
        async with running(app) as (kernel, client):
            rows = await kernel.store.fetchall("SELECT body FROM notes_plugin_rows")
            assert [r["body"] for r in rows] == ["seeded on sqlite"]
            applied = await kernel.store.fetchall(
                "SELECT namespace, version FROM kernel_migrations ORDER BY namespace, version")
            assert [(r["namespace"], r["version"]) for r in applied] == [
                ("example", 1), ("kernel", 1), ("kernel", 2), ("kernel", 3), ("notes", 1), ("notes", 2)]
            # The example plugin's own table (declared the same way) counts its greetings.
            for _ in range(2):
                greetings += 1
                response = await client.get("/example/hello?name=Bo", headers=AUTH_HEADERS)
                assert (await response.get_json())["hits"] == greetings
    assert seen_at_startup == [1, 1]

    class Clash:
        @hookimpl
        def register_migrations(self):
            return [Schema("kernel", (Migration(1, "mine", ("SELECT 1",)),))]

    with pytest.raises(ConfigError, match="declares store schema 'kernel'"):
        create_app(settings_for(tmp_path), extra_plugins={"clash": Clash()})


async def test_register_tools_adds_a_kind_the_agent_loop_runs(tmp_path):
    from kernel import Message, TextPart, ToolInfo, ToolKind, ToolOutput, Turn

    class Upper:
        def __init__(self, name):
            self.name, self.timeout_seconds, self.calls = name, 5.0, []

        async def list_tools(self):
            schema = {"type": "object", "properties": {"text": {"type": "string"}}}
            return [ToolInfo("upper", "Upper-case text", schema)]

        async def call(self, name, arguments, context):
            self.calls.append((name, arguments, context.agent))
            return ToolOutput(arguments["text"].upper())

        async def aclose(self):
            pass

    class Tools:
        @hookimpl
        def register_tools(self):
            return [ToolKind(kind="upper", factory=lambda name, options, kernel: Upper(name))]

    config = {"tools": {"caps": {"kind": "upper"}}, "agents": {"main": {"provider": "echo", "tools": ["caps"]}}}
    app = create_app(settings_for(tmp_path, config), extra_plugins={"tools": Tools()})
    kernel = get_kernel(app)
    assert kernel.plugins["tools"].tools == ["upper"]
    turn = Turn(agent="main", input=[Message("user", [TextPart('/call caps__upper {"text": "hi"}')])])
    result = await kernel.runs.start(turn).wait()
    assert result.text == "HI" and kernel.tools.sets["caps"].calls == [("upper", {"text": "hi"}, "main")]
    assert result.tool_calls == []  # the server-side call is not the client's to answer


async def test_authenticate_request_names_the_principal_of_a_request_without_a_bearer(tmp_path, running):
    from quart import g
    from quart import websocket as quart_websocket

    from kernel import ApiError

    calls: list[tuple[str, bool]] = []
    queries: list[dict[str, str]] = []

    class HeaderAuth:
        @hookimpl
        def register_routes(self, kernel, settings):
            bp = Blueprint("who", __name__)

            @bp.route("/who", methods=["GET", "POST"])
            async def who():
                return jsonify({"principal": g.principal})

            async def who_socket():
                await quart_websocket.accept()
                await quart_websocket.send(g.principal)

            bp.add_websocket("/who", "who_socket", who_socket)
            return [bp]

        @hookimpl
        def authenticate_request(self, kernel, headers, method, websocket, query):
            calls.append((method, websocket))
            queries.append(dict(query))
            name = headers.get("x-test-user") or query.get("user")
            if name == "refuse":
                raise ApiError(403, "refused by the test plugin", code="refused")
            return name

    config = {"kernel": {"auth": {"keys": {"ci": {"secret": "ci-secret-0123456789"}}}}}
    app = create_app(settings_for(tmp_path, config), extra_plugins={"headerauth": HeaderAuth()})
    async with running(app) as (_, client):
        assert (await (await client.get("/who", headers={"x-test-user": "ci"})).get_json())["principal"] == "ci"
        assert (await (await client.post("/who", headers={"x-test-user": "ci"})).get_json())["principal"] == "ci"
        assert calls == [("GET", False), ("POST", False)]
        # A name that is neither the main principal nor a configured key lets nobody in.
        assert (await client.get("/who", headers={"x-test-user": "mallory"})).status_code == 401
        refused = await client.get("/who", headers={"x-test-user": "refuse"})
        assert refused.status_code == 403 and (await refused.get_json())["error"]["code"] == "refused"
        # A request with a bearer secret is judged on it alone: a wrong one is never rescued.
        calls.clear()
        wrong = await client.get("/who", headers={"Authorization": "Bearer nope-0123456789", "x-test-user": "ci"})
        assert wrong.status_code == 401 and calls == []
        right = await client.get("/who", headers={**AUTH_HEADERS, "x-test-user": "ci"})
        assert (await right.get_json())["principal"] == "default" and calls == []
        # Public routes never ask.
        assert (await client.get("/-/health")).status_code == 200 and calls == []
        # An HTTP query never reaches the hook (secrets go in headers); an upgrade's does.
        queries.clear()
        assert (await client.get("/who?user=ci")).status_code == 401 and queries == [{}]
        async with client.websocket("/who?user=ci") as socket:
            assert await socket.receive() == "ci"
        assert calls[-1] == ("GET", True) and queries[-1] == {"user": "ci"}


def test_two_plugins_registering_one_provider_kind_is_an_error(tmp_path):
    class Clash:
        @hookimpl
        def register_providers(self):
            return [ProviderKind(kind="echo", factory=lambda name, options, kernel: None)]

    with pytest.raises(ConfigError, match="provider kind 'echo' is registered by two plugins"):
        create_app(settings_for(tmp_path), extra_plugins={"clash": Clash()})


def test_register_commands_adds_subcommands_for_enabled_plugins_only(tmp_path):
    on = tmp_path / "on.toml"
    on.write_text('[agents.main]\nprovider = "echo"\n[plugins.echo]\nenabled = true\n'
                  '[plugins.example]\nenabled = true\n', encoding="utf-8")
    off = tmp_path / "off.toml"
    off.write_text(on.read_text().replace("[plugins.example]\nenabled = true", "[plugins.example]\nenabled = false"))
    runner = CliRunner()
    args = ["--config", str(on), "example-hello", "Zoe"]
    result = runner.invoke(build_cli(args), ["example-hello", "Zoe", "--reverse"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["!eoZ ,olleh", "(kernel-example-plugin 0.3.1)"]
    assert "example-hello" not in build_cli(["--config", str(off)]).commands
    result = runner.invoke(build_cli(["--config", str(off)]), ["example-hello"])
    assert result.exit_code != 0
    assert "No such command 'example-hello'" in result.output


async def test_startup_and_shutdown_are_awaited_in_order_and_reverse_order(tmp_path, running):
    calls: list[str] = []

    class Recorder:
        def __init__(self, name: str, asynchronous: bool) -> None:
            self.name, self.asynchronous = name, asynchronous

        @hookimpl
        def startup(self, kernel):
            if not self.asynchronous:
                calls.append(f"startup {self.name}")
                return None

            async def later() -> None:
                # The store is open by the time plugins start.
                await kernel.store.fetchone("SELECT 1")
                calls.append(f"startup {self.name} (awaited)")

            return later()

        @hookimpl
        def shutdown(self, kernel):
            async def later() -> None:
                calls.append(f"shutdown {self.name} (awaited)")

            return later() if self.asynchronous else calls.append(f"shutdown {self.name}")

    plugins = {"alpha": Recorder("alpha", True), "beta": Recorder("beta", False), "gamma": Recorder("gamma", True)}
    app = create_app(settings_for(tmp_path), extra_plugins=plugins)
    assert calls == []  # building the app starts nothing
    async with running(app):
        assert calls == ["startup alpha (awaited)", "startup beta", "startup gamma (awaited)"]
    assert calls[3:] == ["shutdown gamma (awaited)", "shutdown beta", "shutdown alpha (awaited)"]


async def test_a_failing_startup_hook_stops_the_server_naming_the_plugin(tmp_path, running):
    class Broken:
        @hookimpl
        async def startup(self, kernel):
            raise OSError("disk on fire")

    app = create_app(settings_for(tmp_path), extra_plugins={"broken": Broken()})
    # The ASGI lifespan reports the kernel's error; the server does not start serving.
    with pytest.raises(Exception, match="plugin 'broken' failed to start: disk on fire"):
        async with running(app):
            raise AssertionError("the app must not serve after a failed startup")


def test_transform_hook_payload_is_declared_and_chains(tmp_path):
    spec = hookspecs.transform_hook_payload
    assert list(inspect.signature(spec).parameters) == ["hook_name", "payload", "headers"]

    class Tagger:
        @hookimpl
        def transform_hook_payload(self, hook_name, payload, headers):
            return {**payload, "tagged_by": hook_name}

    loaded = load_plugins(settings_for(tmp_path), entry_points=with_echo(), extra={"tagger": Tagger()})
    caller = loaded.pm.hook.transform_hook_payload
    assert caller.spec is not None and caller.spec.argnames == ("hook_name", "payload", "headers")
    assert caller(hook_name="gh", payload={"a": 1}, headers={}) == [{"a": 1, "tagged_by": "gh"}]
    assert loaded.records["tagger"].hooks == ["transform_hook_payload"]


# --------------------------------------------------------------------------- in-process plugins (testing)


async def test_an_in_process_plugin_can_add_routes_and_settings(tmp_path, running):
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        word: str = "pong"

    class Ping:
        @hookimpl
        def register_settings(self):
            return Options

        @hookimpl
        def register_routes(self, kernel, settings):
            bp = Blueprint("ping", __name__)

            @bp.get("/ping")
            async def ping():
                return jsonify({"word": settings.word})

            return [bp]

        @hookimpl
        def register_commands(self, cli: click.Group) -> None:
            raise AssertionError("the app never builds the CLI")

    app = create_app(settings_for(tmp_path, {"plugins": {"ping": {"word": "pang"}}}), extra_plugins={"ping": Ping()},
                     entry_points=with_echo())
    rec = get_kernel(app).plugins["ping"]
    assert rec.source == "in-process" and rec.routes == [{"methods": "GET", "path": "/ping"}]
    async with running(app) as (_, client):
        response = await client.get("/ping", headers=AUTH_HEADERS)
        assert await response.get_json() == {"word": "pang"}


def test_registration_order_is_built_ins_then_third_party_then_in_process(tmp_path):
    class Aardvark:
        @hookimpl
        def register_providers(self):
            return []

    loaded = load_plugins(settings_for(tmp_path, {"plugins": {"example": {"enabled": True}}}),
                          extra={"aardvark": Aardvark()})
    from kernel.plugins import per_plugin

    assert [name for name, _ in per_plugin(loaded.pm, "register_providers")] == ["echo", "example", "aardvark"]


def test_tryfirst_and_trylast_are_respected_by_the_kernels_ordering(tmp_path):
    class Late:
        @hookimpl(trylast=True)
        def startup(self, kernel):
            return None

    class Early:
        @hookimpl(tryfirst=True)
        def startup(self, kernel):
            return None

    class Plain:
        @hookimpl
        def startup(self, kernel):
            return None

    from kernel.plugins import per_plugin

    loaded = load_plugins(settings_for(tmp_path), extra={"a_late": Late(), "b_plain": Plain(), "c_early": Early()})
    assert [name for name, _ in per_plugin(loaded.pm, "startup")] == ["c_early", "b_plain", "a_late"]
