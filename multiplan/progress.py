"""The progress protocol shared by every stage: ``progress(stage, done, total, item)``.

Libraries draw no bars (house style): a stage calls the callable it was given as
each layer, rule or tile starts, and the command line decides how to show it.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int, str], None]
"""``progress(stage, done, total, item)``, called as each item of a stage starts."""


def no_progress(stage: str, done: int, total: int, item: str) -> None:
    """Do nothing: the default ``progress`` of every stage.

    Examples
    --------
    >>> no_progress("reading", 0, 3, "tugui") is None
    True
    """
    return None
