"""The pieces' sort keys rank texts in Python's order of ``str`` (SPEC §6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import example, given
from hypothesis import strategies as st

from multiplan.areas import factorize_runs
from multiplan.pieces import (
    _distinct_rank,
    _text_rank,
    ranked_order,
    sort_order,
    sorted_parts,
)

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


_keys = st.one_of(
    st.none(),
    st.sampled_from(["AB", "AZ", "土地"]),
    st.integers(0, 3),
    st.tuples(st.sampled_from(["u1", "u2"]), st.sampled_from(["AB", "AZ"])),
)


@given(st.lists(st.tuples(_keys, st.integers(1, 4)), max_size=30))
@example([(pd.NA, 2), ("a", 1), (pd.NA, 1)])  # neither equal nor not: no runs
@example([(1, 2), (1.0, 1), (True, 1), ("1", 1)])  # 1 == 1.0 == True, not "1"
def test_factorize_runs_gives_the_codes_of_pandas(runs):
    # keys in runs of equal neighbours, as sorted pieces hold them
    values = np.empty(sum(n for _, n in runs), dtype=object)
    values[:] = [k for k, n in runs for _ in range(n)]
    codes, first = factorize_runs(values)
    want, _ = pd.factorize(values, use_na_sentinel=False)
    assert codes.tolist() == want.tolist()
    assert first.tolist() == [want.tolist().index(c) for c in range(len(first))]


_COLUMNS = [
    "rule_id",
    "a_layer",
    "a_id",
    "b_layer",
    "b_id",
    "unit",
    "level1",
    "area_m2",
]


@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["AB", "AZ", "土地"]),
                st.one_of(st.none(), st.sampled_from(["a", "b"])),
                st.one_of(st.none(), st.text(max_size=2), st.integers(-2, 12)),
                st.one_of(st.none(), st.text(max_size=2)),
                st.floats(0, 4, allow_nan=False),
                st.integers(0, 3),
            ),
            max_size=8,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_sorted_parts_equal_the_whole_concatenated_and_sorted(tiles):
    """A column at a time gives what one concatenation and one reordering gave."""
    frames, corners = [], []
    for rows in tiles:
        frames.append(
            pd.DataFrame(
                {
                    "rule_id": pd.Series([r[0] for r in rows], dtype=object),
                    "a_layer": pd.Series([r[1] for r in rows], dtype=object),
                    "a_id": pd.Series([r[2] for r in rows], dtype=object),
                    "b_layer": pd.Series(["b"] * len(rows), dtype=object),
                    "b_id": pd.Series([r[3] for r in rows], dtype=object),
                    "unit": pd.Series([None] * len(rows), dtype=object),
                    "level1": pd.Series([r[3] for r in rows], dtype=object),
                    "area_m2": pd.Series([r[4] for r in rows], dtype=float),
                }
            )
        )
        corners.append(
            np.array([[r[5], -r[5]] for r in rows], dtype=float).reshape(-1, 2)
        )
    corner = np.concatenate(corners)
    whole = pd.concat(frames, ignore_index=True)
    expected_order = sort_order(whole, corner, _COLUMNS)
    expected = whole.iloc[expected_order].reset_index(drop=True)
    parts = [{c: f[c].copy(deep=True) for c in f.columns} for f in frames]
    got, order = sorted_parts(parts, corner, _COLUMNS)
    assert parts == []  # every part let go of
    assert order.tolist() == expected_order.tolist()
    pd.testing.assert_frame_equal(got, expected)
    assert got.dtypes.tolist() == expected.dtypes.tolist()


@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(-1, 2), min_size=4, max_size=4),
            st.integers(0, 2),
            st.integers(0, 1),
        ),
        max_size=40,
    ),
    st.lists(st.sampled_from([0, 2**20, 2**30]), min_size=4, max_size=4),
)
@example([([0, 0, 0, 0], 0, 0)] * 3, [0, 0, 0, 0])  # every key tied: by position
def test_ranks_packed_sort_as_every_key_in_turn(rows, spans):
    """One pass over packed ranks gives the order of a sort by each rank, area, corner.

    ``spans`` makes some ranks large, so that they need more than one 64-bit key.
    """
    ranks = [
        np.array([r[0][k] if r[0][k] < 0 else r[0][k] + spans[k] for r in rows])
        for k in range(4)
    ]
    for k in range(4):  # the largest rank of a column, as a column of ranks has
        ranks[k] = np.r_[ranks[k], spans[k]]
    area = np.r_[np.array([r[1] for r in rows], dtype=float), 0.0]
    corner = np.array([[r[2], -r[2]] for r in rows] + [[0, 0]], dtype=float)
    want = np.lexsort((corner[:, 1], corner[:, 0], area, *reversed(ranks)))
    assert ranked_order(ranks, area, corner).tolist() == want.tolist()


_cells = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.just(pd.NA),
    st.sampled_from(["AB", "AZ", "土地", "10", "9", "1"]),
    st.integers(-2, 12),
    st.sampled_from([1.0, 2.5, True, False]),  # 1 == 1.0 == True, not as texts
)


@given(
    st.lists(
        st.tuples(
            st.lists(_cells, min_size=3, max_size=3),
            st.sampled_from([1.0, 2.0]),
            st.integers(0, 1),
        ),
        max_size=30,
    )
)
@example(
    [([1, None, "a"], 1.0, 0), ([True, None, "a"], 1.0, 0), ([1.0, None, "a"], 1.0, 0)]
)  # equal as Python objects, in one run, but "1" < "1.0" < "True" as texts
def test_sort_order_is_python_sorting_the_texts_nulls_first(rows):
    """SPEC §6: keys compared as text, nulls first; ties by area, corner, then position."""
    names = ["rule_id", "a_layer", "a_id", "b_layer", "b_id", "unit", "area_m2"]
    frame = pd.DataFrame(
        {
            "rule_id": pd.Series([r[0][0] for r in rows], dtype=object),
            "a_layer": pd.Series(["a"] * len(rows), dtype=object),
            "a_id": pd.Series([r[0][1] for r in rows], dtype=object),
            "b_layer": pd.Series(["b"] * len(rows), dtype=object),
            "b_id": pd.Series([r[0][2] for r in rows], dtype=object),
            "unit": pd.Series([None] * len(rows), dtype=object),
            "area_m2": pd.Series([r[1] for r in rows], dtype=float),
        }
    )
    corner = np.array([[r[2], 0.0] for r in rows], dtype=float).reshape(-1, 2)

    def text(v: object) -> tuple[int, str]:
        return (0, "") if v is None or v is pd.NA or v != v else (1, str(v))

    want = sorted(
        range(len(rows)),
        key=lambda i: (
            *(text(rows[i][0][k]) for k in range(3)),
            rows[i][1],
            rows[i][2],
            i,
        ),
    )
    assert sort_order(frame, corner, names).tolist() == want
