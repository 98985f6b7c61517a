"""No silently ignored field: every create-request field has one documented treatment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from openai.types.responses.response_create_params import ResponseCreateParamsBase
from testsupport.spec import spec

from kernel import ApiError
from plugins.openresponses.fields import FIELDS, INCLUDE_VALUES, check_fields
from plugins.openresponses.request import parse_create_body

DOC = Path(__file__).resolve().parents[3] / "docs" / "openresponses.md"
ROW = re.compile(r"^\| `([a-z_]+)` \| (honoured|passed|refused) \|", re.MULTILINE)


def documented() -> dict[str, str]:
    section = DOC.read_text(encoding="utf-8").split("### Every request field", 1)[1].split("\n### ", 1)[0]
    return dict(ROW.findall(section))


def test_every_published_create_field_has_a_treatment():
    published = set(spec()["components"]["schemas"]["CreateResponseBody"]["properties"])
    assert published, "the spec lists CreateResponseBody fields"
    missing = published - set(FIELDS)
    assert not missing, f"CreateResponseBody fields with no treatment: {sorted(missing)}"


def test_every_openai_sdk_create_parameter_has_a_treatment():
    sdk = set(ResponseCreateParamsBase.__annotations__)
    missing = sdk - set(FIELDS)
    assert not missing, f"openai SDK create parameters with no treatment: {sorted(missing)}"


def test_docs_table_matches_the_code():
    assert documented() == FIELDS


@pytest.mark.parametrize("name", sorted(n for n, t in FIELDS.items() if t == "refused"))
def test_refused_fields_are_400s_naming_them(name):
    value = 5 if name == "top_logprobs" else {"id": "conv_1"}
    with pytest.raises(ApiError) as info:
        parse_create_body({"input": "x", name: value})
    assert info.value.status == 400 and info.value.param == name


def test_include_values_are_validated():
    for value in sorted(INCLUDE_VALUES):
        parse_create_body({"input": "x", "include": [value]})
    with pytest.raises(ApiError) as info:
        parse_create_body({"input": "x", "include": ["reasoning.encrypted_content", "bogus.value"]})
    assert info.value.param == "include[1]" and "bogus.value" in info.value.message
    with pytest.raises(ApiError) as info:
        parse_create_body({"input": "x", "include": ["message.output_text.logprobs"]})
    assert info.value.param == "include[0]" and "logprobs" in info.value.message


def test_passed_fields_reach_the_turn():
    parsed = parse_create_body({"input": "x", "text": {"verbosity": "high"}, "service_tier": "flex",
                                "prompt_cache_key": "k", "prompt_cache_retention": "24h", "safety_identifier": "s",
                                "truncation": "auto"})
    assert parsed.limits.verbosity == "high"
    assert parsed.limits.hints == {"service_tier": "flex", "prompt_cache_key": "k", "prompt_cache_retention": "24h",
                                   "safety_identifier": "s", "truncation": "auto"}


def test_client_metadata_is_validated():
    assert check_fields({"client_metadata": {"x-codex-installation-id": "abc"}}) == []
    with pytest.raises(ApiError) as info:
        check_fields({"client_metadata": {"k": 1}})
    assert info.value.param == "client_metadata.k"


def test_hosted_tools_reject_policy_names_the_tool():
    tools = [{"type": "function", "name": "f"}, {"type": "web_search"}]
    assert parse_create_body({"input": "x", "tools": tools}).parsed_tools.omitted == ["web_search"]
    with pytest.raises(ApiError) as info:
        parse_create_body({"input": "x", "tools": tools}, hosted_tools="reject")
    assert info.value.param == "tools[1].type" and "web_search" in info.value.message
