"""The version of multiplan, in one place (``setup.cfg`` and ``run.json`` read it)."""

from __future__ import annotations

__version__ = "0.1.0"
