"""multiplan: put a district's plans on one map (一张图, 多规合一) and find their conflicts.

Everything a command does is a function, frames in and frames out::

    import multiplan
    project = multiplan.read_project("layers/xinbei/project.toml")
    layers = multiplan.read_layers(project)
    result = multiplan.check(project, layers=layers)
    result.summary            # one row per rule, areas of unions in m² and 亩
    result.write("outputs/xinbei")
    result.explore()          # a folium.Map that renders in Jupyter

The API is imported lazily, so ``import multiplan`` (and ``multiplan --help``)
does not load geopandas, GDAL or folium until a function needs them.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from multiplan.errors import (
    CrosswalkError,
    InputError,
    LayerError,
    ManifestError,
    MultiplanError,
    OutputError,
    RulePackError,
)
from multiplan.version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from multiplan.editions import DiffResult, diff
    from multiplan.layers import Layers, read_layers
    from multiplan.onemap import FuseResult, fuse
    from multiplan.overlay import conflicts
    from multiplan.project import read_project
    from multiplan.rulecheck import CheckResult, check
    from multiplan.rules import Rule, Selector, read_rules
    from multiplan.site import SiteResult, screen_site
    from multiplan.specs import LayerSpec, Project
    from multiplan.yields import YieldResult, land_yield

#: Where each public name lives; a module is imported on first use.
_API = {
    "read_project": "multiplan.project",
    "read_layers": "multiplan.layers",
    "Layers": "multiplan.layers",
    "read_rules": "multiplan.rules",
    "Rule": "multiplan.rules",
    "Selector": "multiplan.rules",
    "check": "multiplan.rulecheck",
    "CheckResult": "multiplan.rulecheck",
    "conflicts": "multiplan.overlay",
    "diff": "multiplan.editions",
    "DiffResult": "multiplan.editions",
    "fuse": "multiplan.onemap",
    "FuseResult": "multiplan.onemap",
    "screen_site": "multiplan.site",
    "SiteResult": "multiplan.site",
    "land_yield": "multiplan.yields",
    "YieldResult": "multiplan.yields",
    "Project": "multiplan.specs",
    "LayerSpec": "multiplan.specs",
}

__all__ = [
    "CheckResult",
    "CrosswalkError",
    "DiffResult",
    "FuseResult",
    "InputError",
    "LayerError",
    "LayerSpec",
    "Layers",
    "ManifestError",
    "MultiplanError",
    "OutputError",
    "Project",
    "Rule",
    "RulePackError",
    "Selector",
    "SiteResult",
    "YieldResult",
    "__version__",
    "check",
    "conflicts",
    "diff",
    "fuse",
    "land_yield",
    "read_layers",
    "read_project",
    "read_rules",
    "screen_site",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'multiplan' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
