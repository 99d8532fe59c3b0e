"""The pieces' sort keys rank texts in Python's order of ``str`` (SPEC §6)."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from multiplan.pieces import _distinct_rank, _text_rank

_texts = st.lists(st.text(max_size=6), unique=True, max_size=40)


@given(_texts)
@example(["\x00b", "\x00\x000", "0", ""])  # NUL: numpy's strings order it otherwise
@example(["b", "\udcff", "a"])  # a lone surrogate: numpy's strings cannot hold it
@example(["土地", "城规", "Z", "a", "😀", "\uffff"])
def test_distinct_texts_rank_as_python_sorts_them(texts):
    ranks = _distinct_rank(np.array(texts, dtype=object))
    assert [texts[i] for i in np.argsort(ranks)] == sorted(texts)


@given(st.lists(st.one_of(st.none(), st.text(max_size=3)), max_size=60))
def test_text_rank_orders_values_as_their_texts_nulls_first(values):
    ranks = _text_rank(np.array(values, dtype=object))
    for v, r in zip(values, ranks.tolist(), strict=True):
        if v is None:
            assert r == -1
        else:
            assert r == sorted({x for x in values if x is not None}).index(v)
