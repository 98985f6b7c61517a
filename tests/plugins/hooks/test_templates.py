"""The template renderer: lookups only, missing values empty, credentials never visible."""

from __future__ import annotations

import pytest

from plugins.hooks.templates import (
    Expression,
    TemplateContext,
    TemplateError,
    check_template,
    parse_expression,
    render,
    safe_headers,
)

PAYLOAD = {
    "repo": {"name": "app", "owner": {"login": "alice"}},
    "items": [{"id": 1, "tags": ["a", "b"]}, {"id": 2.5, "ok": True, "none": None}],
    "dotted.key": "no",
    "text": "{{payload.repo.name}}",
}


def ctx(**kw) -> TemplateContext:
    base = {"payload": PAYLOAD, "headers": {"X-GitHub-Event": "push", "Authorization": "Bearer s3cret",
                                            "Cookie": "sid=1", "X-Hook-Token": "tok"},
            "query": {"env": "prod"}, "path": "gh", "now": "2026-01-01T00:00:00+00:00", "summary": "sum"}
    return TemplateContext(**{**base, **kw})


def test_parse_expression_steps():
    assert parse_expression(" payload.items[1].ok ") == Expression("payload", ("items", 1, "ok"))
    assert parse_expression("payload.items.0.tags[1]") == Expression("payload", ("items", "0", "tags", 1))
    assert parse_expression("headers.x-github-event") == Expression("headers", ("x-github-event",))
    assert parse_expression("payload") == Expression("payload")
    assert parse_expression("now") == Expression("now")


@pytest.mark.parametrize("bad", ["", "payloads.x", "PAYLOAD.x", "payload..x", "payload.x[a]", "payload x",
                                 "headers", "query", "now.x", "path[0]", "__class__"])
def test_parse_expression_rejects(bad):
    with pytest.raises(TemplateError):
        parse_expression(bad)


@pytest.mark.parametrize(("template", "expected"), [
    ("{{payload.repo.owner.login}}", "alice"),
    ("{{ payload.items[0].tags[1] }}", "b"),
    ("{{payload.items.1.id}}", "2.5"),
    ("{{payload.items[1].ok}}/{{payload.items[1].none}}", "true/"),
    ("{{payload.items[0].tags}}", '["a","b"]'),
    ("{{payload.repo}}", '{"name":"app","owner":{"login":"alice"}}'),
    ("{{payload.items[7].id}}|{{payload.missing.deeper}}|{{payload.repo.name.x}}|{{payload.items.x}}", "|||"),
    ("{{headers.x-github-event}} {{headers.X-GITHUB-EVENT}}", "push push"),
    ("[{{headers.authorization}}][{{headers.cookie}}][{{headers.x-hook-token}}]", "[][][]"),
    ("{{query.env}}{{query.nope}}", "prod"),
    ("{{path}} {{now}} {{summary}}", "gh 2026-01-01T00:00:00+00:00 sum"),
    ("{{payload.text}}", "{{payload.repo.name}}"),  # values are never rendered again
    ("{{bogus}} and {{payload.dotted.key}}", " and "),
    ("{{payload.repo.__class__}}{{payload.x()}}", ""),  # names are only ever dict keys
    ("no placeholders {single}", "no placeholders {single}"),
])
def test_render(template, expected):
    assert render(template, ctx()) == expected


def test_render_without_payload():
    assert render("[{{payload.a}}][{{payload}}]", ctx(payload=None)) == "[][]"


def test_check_template_names_the_bad_placeholder():
    check_template("ok {{payload.a}} {{now}}")
    with pytest.raises(TemplateError, match=r"\{\{payload\.a\.\}\}"):
        check_template("{{payload.a.}}")


def test_safe_headers_drops_credentials_and_lowercases():
    out = safe_headers({"Authorization": "x", "Proxy-Authorization": "y", "Cookie": "z", "X-Hook-Token": "t",
                        "X-GitHub-Event": "push"})
    assert out == {"x-github-event": "push"}
