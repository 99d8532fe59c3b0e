import pandas as pd
import pytest

from multiplan.errors import InputError
from multiplan.filters import parse_where, where_mask


def mask(df, where):
    return where_mask(df, parse_where(where, path="p.toml", key="where")).tolist()


@pytest.fixture
def df():
    return pd.DataFrame(
        {
            "status": ["planned", "approved", "draft", None],
            "far": [1.5, 2.0, 3.5, None],
            "code": [101, 701, 1001, 102],
        }
    )


def test_in_and_not_in(df):
    assert mask(df, {"field": "status", "in": ["planned", "approved"]}) == [
        True,
        True,
        False,
        False,
    ]
    # a null satisfies no condition, not even not_in
    assert mask(df, {"field": "status", "not_in": ["draft"]}) == [
        True,
        True,
        False,
        False,
    ]


def test_comparisons_are_numeric_when_both_sides_are(df):
    assert mask(df, {"field": "far", "gt": 1.9}) == [False, True, True, False]
    assert mask(df, {"field": "far", "le": 2}) == [True, True, False, False]
    assert mask(df, {"field": "code", "ge": 701}) == [False, True, True, False]


def test_text_and_number_compare_as_text(df):
    assert mask(df, {"field": "code", "in": ["701", "102"]}) == [
        False,
        True,
        False,
        True,
    ]


def test_list_of_conditions_must_all_hold(df):
    where = [{"field": "status", "ne": "draft"}, {"field": "far", "lt": 1.8}]
    assert mask(df, where) == [True, False, False, False]


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ({"field": "a", "like": "x"}, "unknown filter key 'like'"),
        ({"in": ["x"]}, "needs a 'field'"),
        ({"field": "a", "in": ["x"], "eq": "y"}, "exactly one operator"),
        ({"field": "a", "in": []}, "non-empty list"),
        ({"field": "a", "gt": [1]}, "one string or number"),
        ("status == 'x'", "must be a table"),
    ],
)
def test_bad_filters_are_input_errors(where, words):
    with pytest.raises(InputError, match=r"file p\.toml") as info:
        parse_where(where, path="p.toml", key="layers.a.where")
    assert words in str(info.value)


def test_no_expression_is_ever_evaluated(df):
    # a value that would run code if evaluated is only ever compared as text
    hostile = "__import__('os').system('echo pwned')"
    assert mask(df, {"field": "status", "eq": hostile}) == [False] * 4
