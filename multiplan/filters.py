"""Declarative attribute filters (``where``) for layers and rule selectors.

A filter is data, never code: a TOML table ``{ field = "status", in = [...] }``
with exactly one operator, or a list of such tables that must all hold. Nothing
is ever evaluated (no ``eval``, no ``DataFrame.query``, no SQL).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from multiplan.errors import InputError

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

Operator = Literal["in", "not_in", "eq", "ne", "lt", "le", "gt", "ge"]
OPERATORS: tuple[Operator, ...] = ("in", "not_in", "eq", "ne", "lt", "le", "gt", "ge")
Scalar = str | int | float | bool


@dataclass(frozen=True)
class Condition:
    """One test on one attribute: ``field <op> value``."""

    field: str
    op: Operator
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True)
class Where:
    """Conditions that must all hold. An empty ``Where`` matches every row."""

    conditions: tuple[Condition, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        """Return the attribute names the filter reads."""
        return tuple(dict.fromkeys(c.field for c in self.conditions))


def parse_where(
    value: Any,
    *,
    path: str | Path,
    key: str,
    error: type[InputError] = InputError,
) -> Where:
    """Parse a ``where`` value from TOML into a :class:`Where`.

    Parameters
    ----------
    value
        A table ``{field = ..., <op> = ...}`` or a list of such tables.
    path, key
        Where the value came from, for error messages.
    error
        The :class:`InputError` subclass to raise.

    Raises
    ------
    InputError
        On an unknown operator, a missing field or a value of the wrong type.

    Examples
    --------
    >>> parse_where({"field": "status", "in": ["planned"]}, path="p.toml", key="where")
    Where(conditions=(Condition(field='status', op='in', value=('planned',)),))
    """
    tables = value if isinstance(value, list) else [value]
    conditions = []
    for i, table in enumerate(tables):
        k = key if not isinstance(value, list) else f"{key}[{i}]"
        if not isinstance(table, Mapping):
            raise error(
                'a filter must be a table such as { field = "status", in = ["planned"] }',
                path=path,
                key=k,
            )
        unknown = set(table) - {"field", *OPERATORS}
        if unknown:
            raise error(
                f"unknown filter key {sorted(unknown)[0]!r}",
                path=path,
                key=k,
                hint=f"Valid keys are 'field' and one of {', '.join(OPERATORS)}",
            )
        field = table.get("field")
        if not isinstance(field, str) or not field:
            raise error(
                "a filter needs a 'field' naming an attribute", path=path, key=k
            )
        ops = [op for op in OPERATORS if op in table]
        if len(ops) != 1:
            raise error(
                f"a filter needs exactly one operator, found {len(ops)}",
                path=path,
                key=k,
                hint=f"Use one of {', '.join(OPERATORS)}; list several tables to combine them",
            )
        op = ops[0]
        raw = table[op]
        if op in ("in", "not_in"):
            if (
                not isinstance(raw, list)
                or not raw
                or not all(_is_scalar(v) for v in raw)
            ):
                raise error(
                    f"'{op}' needs a non-empty list of strings or numbers",
                    path=path,
                    key=f"{k}.{op}",
                )
            conditions.append(Condition(field, op, tuple(raw)))
        else:
            if not _is_scalar(raw):
                raise error(
                    f"'{op}' needs one string or number", path=path, key=f"{k}.{op}"
                )
            if op in ("lt", "le", "gt", "ge") and isinstance(raw, bool):
                raise error(
                    f"'{op}' needs a number or a string", path=path, key=f"{k}.{op}"
                )
            conditions.append(Condition(field, op, raw))
    return Where(tuple(conditions))


def _is_scalar(v: object) -> bool:
    return isinstance(v, str | int | float | bool) and not (
        isinstance(v, float) and math.isnan(v)
    )


class FilterError(InputError):
    """A filter that cannot mean anything on the data (a number compared with text)."""


def where_mask(
    frame: pd.DataFrame,
    where: Where,
    *,
    path: str | Path | None = None,
    key: str | None = None,
) -> np.ndarray:
    """Return a boolean array: which rows of ``frame`` satisfy ``where``.

    A null attribute satisfies no condition. Comparisons (``lt``, ``le``, ``gt``,
    ``ge``) compare numbers when the field is numeric, or when every value of a
    text field reads as a number (logged at INFO); text with text only when the
    filter gives text. ``in``/``eq``/``ne`` compare text with text on a text
    field, and numbers on a numeric field.

    Raises
    ------
    FilterError
        For a comparison that cannot mean anything: a number against a text field
        that holds other text, or text that is no number against a numeric field.
        ``path`` and ``key`` say where the filter came from.

    Examples
    --------
    >>> df = pd.DataFrame({"s": ["a", "b", None], "n": [1, 5, 9], "t": ["950", "1000", "20"]})
    >>> w = Where((Condition("s", "in", ("a", "b")), Condition("n", "gt", 2)))
    >>> where_mask(df, w).tolist()
    [False, True, False]
    >>> where_mask(df, Where((Condition("t", "ge", 1000),))).tolist()  # numbers held as text
    [False, True, False]
    """
    mask = np.ones(len(frame), dtype=bool)
    for cond in where.conditions:
        mask &= _condition_mask(frame[cond.field], cond, path=path, key=key)
    return mask


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _as_number(v: object) -> float | None:
    if _is_number(v):
        return float(v)  # type: ignore[arg-type]
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def _condition_mask(
    col: pd.Series, cond: Condition, *, path: str | Path | None, key: str | None
) -> np.ndarray:
    notnull = col.notna().to_numpy()
    values = cond.value if isinstance(cond.value, tuple) else (cond.value,)
    numeric_col = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(
        col
    )
    ordering = cond.op in ("lt", "le", "gt", "ge")

    def fail(message: str) -> FilterError:
        return FilterError(
            message,
            path=path,
            key=key,
            hint="Compare numbers with numeric fields, text with text fields",
        )

    left: np.ndarray
    if numeric_col:
        numbers = [_as_number(v) for v in values]
        if any(n is None for n in numbers):
            bad = values[numbers.index(None)]
            raise fail(
                f"field {cond.field!r} holds numbers ({col.dtype}) but the filter gives the text {bad!r}"
            )
        left = col.to_numpy(dtype=float, na_value=np.nan)
        right: list[Any] = [float(n) for n in numbers if n is not None]
    elif ordering:
        text = col.dropna().astype(str)
        parsed = pd.to_numeric(text, errors="coerce")
        all_numbers = len(text) > 0 and bool(parsed.notna().all())
        if all_numbers and _as_number(values[0]) is not None:
            logger.info(
                "field %r holds numbers as text; %s compares them as numbers",
                cond.field,
                cond.op,
            )
            left = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
            right = [_as_number(values[0])]
        elif isinstance(values[0], str):
            left = np.array(
                [_text(v) if v is not None else "" for v in col], dtype=object
            )
            right = [values[0]]
        else:
            sample = next(
                (v for v in text if pd.isna(pd.to_numeric(v, errors="coerce"))), ""
            )
            raise fail(
                f"field {cond.field!r} holds text (e.g. {sample!r}), which cannot be compared "
                f"with {cond.op} {values[0]!r}"
            )
    else:
        if any(_is_number(v) for v in values):
            logger.info(
                "field %r holds text; the filter's numbers %s are compared as text",
                cond.field,
                [v for v in values if _is_number(v)],
            )
        left = np.array([_text(v) for v in col], dtype=object)
        right = [_text(v) for v in values]
    if cond.op in ("in", "not_in"):
        hit = np.isin(left, np.array(right, dtype=left.dtype))
        result = hit if cond.op == "in" else ~hit
    else:
        r = right[0]
        safe = left if left.dtype != object else np.where(notnull, left, "")
        with np.errstate(invalid="ignore"):
            result = {
                "eq": lambda: safe == r,
                "ne": lambda: safe != r,
                "lt": lambda: safe < r,
                "le": lambda: safe <= r,
                "gt": lambda: safe > r,
                "ge": lambda: safe >= r,
            }[cond.op]()
    return np.asarray(result, dtype=bool) & notnull


def _text(v: object) -> str:
    """Text form of a value: integral floats lose their ``.0`` so 1.0 matches "1"."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
