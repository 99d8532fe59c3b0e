"""multiplan: put a district's plans on one map (一张图, 多规合一) and find their conflicts.

The public API is re-exported here; heavy modules (folium, maps) are never
imported eagerly so that ``multiplan --help`` stays fast.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

from multiplan.errors import (  # noqa: E402
    CrosswalkError,
    InputError,
    LayerError,
    ManifestError,
    MultiplanError,
    RulePackError,
)
from multiplan.layers import Layer, load_layer, load_layers  # noqa: E402
from multiplan.project import LayerSpec, Project, load_project  # noqa: E402
from multiplan.rules import Rule, Selector, load_rules  # noqa: E402

__all__ = [
    "CrosswalkError",
    "InputError",
    "Layer",
    "LayerError",
    "LayerSpec",
    "ManifestError",
    "MultiplanError",
    "Project",
    "Rule",
    "RulePackError",
    "Selector",
    "__version__",
    "load_layer",
    "load_layers",
    "load_project",
    "load_rules",
]
