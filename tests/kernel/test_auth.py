"""Gateway auth: bearer secrets, named keys, the generated token, password mode, safe binds."""

from __future__ import annotations

import os
import stat

import httpx
import pytest

from kernel.app import create_app, get_kernel
from kernel.auth import bearer_token, constant_time_equals, is_loopback_host
from kernel.config import settings_from_dict
from kernel.serve import UnsafeBindError, announce_token, check_bind
from kernel.testing import AUTH_HEADERS, TEST_TOKEN, default_config, merge

EXAMPLE = {"plugins": {"example": {"enabled": True}}}


def assert_401(response_status: int, headers, body) -> None:
    assert response_status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in body["error"]["message"]


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer ", "Bearer wrong-token", f"Basic {TEST_TOKEN}", f"bearer {TEST_TOKEN}x",
    f"Bearer {TEST_TOKEN[:-1]}", f"{TEST_TOKEN}",
])
async def test_a_failed_check_is_401_with_www_authenticate_and_an_openai_body(make_app, running, authorization):
    app = make_app(EXAMPLE)
    headers = {} if authorization is None else {"Authorization": authorization}
    async with running(app) as (_, client):
        for path in ("/-/plugins", "/example/hello"):
            response = await client.get(path, headers=headers)
            assert_401(response.status_code, response.headers, await response.get_json())


async def test_the_scheme_is_case_insensitive_and_the_right_token_passes(make_app, running):
    async with running(make_app(EXAMPLE)) as (_, client):
        for scheme in ("Bearer", "bearer", "BEARER"):
            response = await client.get("/example/hello", headers={"Authorization": f"{scheme} {TEST_TOKEN}"})
            assert response.status_code == 200
            assert (await response.get_json())["principal"] == "default"


def test_non_ascii_and_very_long_secrets_are_rejected_without_crashing(make_app, live_server):
    app = make_app(EXAMPLE)
    with live_server(app) as base, httpx.Client(base_url=base) as client:
        for secret in ("pässwörd-🔑".encode(), b"x" * 8000, b"\xff\xfe\x80 not utf-8"):
            response = client.get("/example/hello", headers={"Authorization": b"Bearer " + secret})
            assert_401(response.status_code, response.headers, response.json())
        # The server is still fine afterwards.
        assert client.get("/example/hello", headers=AUTH_HEADERS).status_code == 200


async def test_a_megabyte_secret_in_process_is_just_wrong(make_app, running):
    async with running(make_app(EXAMPLE)) as (_, client):
        response = await client.get("/example/hello", headers={"Authorization": "Bearer " + "é" * 1_000_000})
        assert_401(response.status_code, response.headers, await response.get_json())


def test_a_non_ascii_configured_secret_works_over_the_wire(make_app, live_server):
    secret = "clé-secrète-ünïcode-🔑"
    app = make_app({**EXAMPLE, "kernel": {"auth": {"token": secret}}})
    with live_server(app) as base, httpx.Client(base_url=base) as client:
        ok = client.get("/example/hello", headers={"Authorization": b"Bearer " + secret.encode()})
        assert ok.status_code == 200, ok.text
        near = client.get("/example/hello", headers={"Authorization": b"Bearer " + secret[:-1].encode() + b"!"})
        assert near.status_code == 401


async def test_named_keys_give_their_principal(make_app, running):
    app = make_app({**EXAMPLE, "kernel": {"auth": {"keys": {"ci": {"secret": "ci-secret-0123"},
                                                              "ops": {"secret": "ops-secret-4567"}}}}})
    async with running(app) as (kernel, client):
        for secret, principal in ((TEST_TOKEN, "default"), ("ci-secret-0123", "ci"), ("ops-secret-4567", "ops")):
            response = await client.get("/example/hello", headers={"Authorization": f"Bearer {secret}"})
            assert response.status_code == 200
            assert (await response.get_json())["principal"] == principal
            assert kernel.auth.principal_for(secret) == principal
        assert kernel.auth.principal_for("ci-secret-012") is None
        assert kernel.auth.principal_for(None) is None


def token_free_config(tmp_path):
    config = default_config(tmp_path / "state")
    del config["kernel"]["auth"]
    return config


def test_the_generated_token_is_private_reused_and_announced_once(tmp_path, capsys):
    config = token_free_config(tmp_path)
    first = create_app(settings_from_dict(config, tmp_path / "plugins.toml"))
    auth = get_kernel(first).auth
    token_file = tmp_path / "state" / "token"
    assert auth.generated is True
    assert len(auth.main_secret) >= 32
    assert auth.main_secret.startswith("kt_")  # never "-...", which CLIs would read as a flag
    assert token_file.read_text(encoding="utf-8").strip() == auth.main_secret
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert auth.principal_for(auth.main_secret) == "default"

    announce_token(first, "127.0.0.1", 18789)
    out = capsys.readouterr().out
    assert auth.main_secret in out
    assert f"curl -H 'Authorization: Bearer {auth.main_secret}' http://127.0.0.1:18789/-/plugins" in out
    assert str(token_file) in out

    second = create_app(settings_from_dict(config, tmp_path / "plugins.toml"))
    assert get_kernel(second).auth.generated is False
    assert get_kernel(second).auth.main_secret == auth.main_secret
    announce_token(second, "127.0.0.1", 18789)
    assert capsys.readouterr().out == ""  # printed once, on the start that generated it


def test_two_state_dirs_get_different_tokens(tmp_path):
    tokens = set()
    for sub in ("a", "b"):
        config = token_free_config(tmp_path / sub)
        tokens.add(get_kernel(create_app(settings_from_dict(config, tmp_path / "plugins.toml"))).auth.main_secret)
    assert len(tokens) == 2


def test_a_configured_token_generates_nothing(tmp_path):
    app = create_app(settings_from_dict(default_config(tmp_path / "state"), tmp_path / "plugins.toml"))
    assert get_kernel(app).auth.generated is False
    assert not (tmp_path / "state" / "token").exists()


async def test_password_mode(make_app, running):
    app = make_app({**EXAMPLE, "kernel": {"auth": {"mode": "password", "password": "correct horse battery"}}})
    async with running(app) as (kernel, client):
        ok = await client.get("/example/hello", headers={"Authorization": "Bearer correct horse battery"})
        assert ok.status_code == 200
        assert (await ok.get_json())["principal"] == "default"
        # In password mode the token setting is not a secret that opens the gateway.
        wrong = await client.get("/example/hello", headers=AUTH_HEADERS)
        assert wrong.status_code == 401
        assert kernel.auth.has_configured_secret


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_binds_are_allowed_without_a_configured_secret(tmp_path, host):
    app = create_app(settings_from_dict(token_free_config(tmp_path), tmp_path / "plugins.toml"))
    assert is_loopback_host(host)
    check_bind(app, host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.4", "example.com", "10.0.0.1"])
def test_a_non_loopback_bind_without_a_configured_secret_is_refused(tmp_path, host):
    app = create_app(settings_from_dict(token_free_config(tmp_path), tmp_path / "plugins.toml"))
    assert not is_loopback_host(host)
    with pytest.raises(UnsafeBindError) as info:
        check_bind(app, host)
    assert f"refusing to bind {host}" in str(info.value)
    assert "[kernel.auth]" in str(info.value)


@pytest.mark.parametrize("auth", [{"token": "a-configured-token"}, {"mode": "password", "password": "pw-configured"}])
def test_a_non_loopback_bind_with_a_configured_secret_is_allowed(tmp_path, auth):
    config = merge(token_free_config(tmp_path), {"kernel": {"auth": auth}})
    check_bind(create_app(settings_from_dict(config, tmp_path / "plugins.toml")), "0.0.0.0")


def test_constant_time_equals_handles_any_input():
    assert constant_time_equals("s3cret", "s3cret")
    assert constant_time_equals(b"s3cret", "s3cret")
    assert not constant_time_equals("s3cret", "s3cret ")
    assert not constant_time_equals("", "s3cret")
    assert constant_time_equals("ünï🔑", "ünï🔑")
    assert not constant_time_equals("ünï🔑", "uni")
    assert not constant_time_equals(b"\xff\xfe", "s3cret")
    assert constant_time_equals("\udcff", "\udcff")  # lone surrogates (from bad headers) do not crash


def test_bearer_token_parsing():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc  ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer    ") is None
    assert bearer_token(None) is None
    # Header values arrive as latin-1 decoded bytes; UTF-8 secrets are recovered.
    assert bearer_token("Bearer " + "clé".encode().decode("latin-1")) == "clé"
    assert bearer_token("Bearer \xff\xfe") == "\xff\xfe"
