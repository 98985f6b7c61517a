"""The read views' shared query parsing: one 400 per mistake, naming the argument."""

from __future__ import annotations

import pytest

from kernel import ApiError
from plugins.openresponses.query import DEFAULT_PAGE, MAX_PAGE, PageQuery, bool_arg, choice_arg, page_query


def test_page_defaults_and_values():
    assert page_query({}) == PageQuery(limit=DEFAULT_PAGE, order="desc", after=None)
    assert page_query({"limit": "100", "order": "asc", "after": "msg_1"}) == PageQuery(100, "asc", "msg_1")
    assert page_query({"after": ""}).after is None


@pytest.mark.parametrize(("args", "param"), [
    ({"limit": "0"}, "limit"), ({"limit": str(MAX_PAGE + 1)}, "limit"), ({"limit": "ten"}, "limit"),
    ({"order": "newest"}, "order"),
])
def test_page_mistakes_are_400s_naming_the_argument(args, param):
    with pytest.raises(ApiError) as caught:
        page_query(args)
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, param, "invalid_value")
    assert repr(args[param]) in caught.value.message


def test_flags_and_choices():
    assert bool_arg({"stream": "TRUE"}, "stream") and not bool_arg({}, "stream")
    with pytest.raises(ApiError, match="expected true or false"):
        bool_arg({"stream": "yes"}, "stream")
    with pytest.raises(ApiError, match="expected one of a, b, c"):
        choice_arg({"status": "d"}, "status", ("a", "b", "c"), default="a")
