"""The exception and warning classes of multiplan.

Every error a user can fix is an :class:`InputError`. Its ``str()`` is one line
of the form ``file F, key K: what is wrong. How to fix it.`` so that the command
line can print it as it is and exit with code 2.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from multiplan.dburl import is_database

if TYPE_CHECKING:
    from collections.abc import Sequence
    from os import PathLike


class MultiplanError(Exception):
    """The root of every exception multiplan raises on purpose."""


class InputError(MultiplanError, ValueError):
    """Bad input the user can fix: a manifest, rule pack, crosswalk or layer.

    Parameters
    ----------
    message
        What is wrong, as one sentence.
    path
        The file that holds the problem.
    key
        The manifest or rule-pack key, e.g. ``layers.tugui.crs``.
    layer
        The layer's name in the manifest.
    feature
        The feature id (or row number) that has the problem.
    hint
        How to fix it, as one sentence.

    Examples
    --------
    >>> str(InputError("no such file", path="p.toml", key="layers.a.path",
    ...                hint="Check the path."))
    'file p.toml, key layers.a.path: no such file. Check the path.'
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        key: str | None = None,
        layer: str | None = None,
        feature: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message.rstrip(".")
        self.path = None if path is None else str(path)
        self.key = key
        self.layer = layer
        self.feature = feature
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            kind = "database" if is_database(self.path) else "file"
            where.append(f"{kind} {self.path}")
        if self.layer is not None:
            where.append(f"layer {self.layer}")
        if self.key is not None:
            where.append(f"key {self.key}")
        if self.feature is not None:
            where.append(f"feature {self.feature}")
        text = f"{', '.join(where)}: {self.message}." if where else f"{self.message}."
        if self.hint:
            text += " " + self.hint.rstrip(".") + "."
        return " ".join(text.split("\n"))


class ManifestError(InputError):
    """A project manifest (TOML) is invalid."""


class RulePackError(InputError):
    """A rule pack (TOML) is invalid."""


class CrosswalkError(InputError):
    """A classification crosswalk (CSV) is missing or invalid."""


class LayerError(InputError):
    """A layer's data cannot be read as the manifest describes it."""


class OutputError(InputError):
    """The output folder cannot take the outputs: busy, read-only, full, not a folder.

    The previous outputs are left untouched when this is raised.
    """


class MultiplanWarning(UserWarning):
    """A data problem that does not stop the run."""


def valid_keys_hint(word: str, allowed: Sequence[str]) -> str:
    """Return a hint for an unknown key: the closest valid key, then all of them.

    Examples
    --------
    >>> valid_keys_hint("clas_field", ["class_field", "class", "path"])
    "Did you mean 'class_field'? Valid keys are: class_field, class, path"
    """
    close = difflib.get_close_matches(
        str(word).lower(), list(allowed), n=1, cutoff=0.75
    )
    guess = f"Did you mean {close[0]!r}? " if close else ""
    return f"{guess}Valid keys are: {', '.join(allowed)}"
