"""[providers.NAME] kind = "openai_upstream" tables: validation errors that name the key."""

from __future__ import annotations

import pytest

from kernel.app import create_app, get_kernel
from kernel.config import settings_from_dict
from kernel.errors import ConfigError
from kernel.testing import default_config, merge

from .conftest import upstream_config


def test_plugin_registers_the_kind_and_each_table_is_an_instance(tmp_path):
    config = upstream_config("http://127.0.0.1:9/v1")
    config["providers"]["openai"] = {"kind": "openai_upstream", "base_url": "https://api.openai.com/v1/",
                                     "api_key": "${UPSTREAM_TEST_KEY}", "max_tokens_field": "max_completion_tokens"}
    settings = settings_from_dict(merge(default_config(tmp_path / "state"), config), tmp_path / "plugins.toml",
                                  env={"UPSTREAM_TEST_KEY": "sk-from-env"})
    kernel = get_kernel(create_app(settings))
    assert kernel.plugins["openai_upstream"].providers == ["openai_upstream"]
    up, openai = kernel.providers["up"], kernel.providers["openai"]
    assert up.url == "http://127.0.0.1:9/v1/chat/completions"
    assert openai.url == "https://api.openai.com/v1/chat/completions"  # trailing slash trimmed
    assert openai.options.api_key.get_secret_value() == "sk-from-env"
    assert openai.label == "provider 'openai' (api.openai.com)"
    assert openai.accepts_images is True


@pytest.mark.parametrize(("options", "expected"), [
    ({"base_url": "ftp://example.com"}, "[providers.up] base_url: Value error, must be an http(s) URL"),
    ({"base_url": "http://127.0.0.1:9/v1", "max_retries": -1}, "[providers.up] max_retries:"),
    ({"base_url": "http://127.0.0.1:9/v1", "timeout": 5}, "[providers.up] unknown key 'timeout'; valid keys:"),
    ({"base_url": "http://127.0.0.1:9/v1", "headers": {"X Title": "a"}},
     "[providers.up] headers: Value error, 'X Title' is not a valid HTTP header name"),
    ({"base_url": "http://127.0.0.1:9/v1", "headers": {"X-Title": "a\r\nX-Evil: 1"}},
     "[providers.up] headers: Value error, the value of header 'X-Title' contains a line break"),
    ({"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-one\nsk-two"},
     "[providers.up] api_key: Value error, must be a non-empty key without control characters"),
])
def test_invalid_tables_name_the_key(make_app, options, expected):
    config = upstream_config("http://127.0.0.1:9/v1")
    config["providers"]["up"] = {"kind": "openai_upstream", **options}
    with pytest.raises(ConfigError) as info:
        make_app(config)
    assert expected in str(info.value)
    assert "sk-two" not in str(info.value)  # a rejected key is never echoed


def test_base_url_is_required(make_app):
    config = upstream_config("http://127.0.0.1:9/v1")
    del config["providers"]["up"]["base_url"]
    with pytest.raises(ConfigError, match=r"\[providers.up\] base_url: Field required"):
        make_app(config)


def test_api_key_read_with_a_trailing_newline_is_trimmed(make_app):
    config = upstream_config("http://127.0.0.1:9/v1", api_key="sk-from-a-file\n")
    provider = get_kernel(make_app(config)).providers["up"]
    assert provider.options.api_key.get_secret_value() == "sk-from-a-file"
