"""The frozen values a manifest becomes: :class:`Project`, :class:`LayerSpec` and its sections.

Nothing here reads a file or validates anything: :func:`multiplan.read_project`
builds these values after checking every key, so that every command works on a
manifest that is valid as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from multiplan.classify import Taxonomy, load_taxonomy
from multiplan.dburl import is_database, mask, masked_repr
from multiplan.filters import Where

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyproj import CRS

AreaMode = Literal["planar", "ellipsoidal"]
LayerKind = Literal["vector", "raster"]


@dataclass(frozen=True)
class RasterClass:
    """One class of a classified raster: values in ``[from_value, below)`` or ``== value``."""

    cls: str
    from_value: float | None = None
    below: float | None = None
    value: float | None = None

    def describe(self) -> str:
        """Return the value range as text, e.g. ``25 ≤ v < 40``.

        Examples
        --------
        >>> RasterClass("noise_70", from_value=70, below=75).describe()
        '70 ≤ v < 75'
        """
        if self.value is not None:
            return f"v = {self.value:g}"
        lo = "" if self.from_value is None else f"{self.from_value:g} ≤ "
        hi = "" if self.below is None else f" < {self.below:g}"
        return f"{lo}v{hi}"


@dataclass(frozen=True)
class LayerSpec:
    """One layer as the manifest describes it (nothing read yet)."""

    name: str
    path: Path | str
    kind: LayerKind = "vector"
    title: str | None = None
    layer: str | None = None
    class_field: str | None = None
    classification: str | None = None
    crosswalk_path: Path | None = None
    cls: str | None = None
    id_field: str | None = None
    encoding: str | None = None
    crs: str | None = None
    where: Where = field(default_factory=Where)
    buffer: float | None = None
    width_field: str | None = None
    classes: tuple[RasterClass, ...] = ()
    band: int = 1
    transformation: str | None = None

    @property
    def label(self) -> str:
        """Return the title if there is one, else the name."""
        return self.title or self.name

    def __repr__(self) -> str:
        return masked_repr(self)

    @property
    def source(self) -> str:
        """Return the source path as text to show: a database password masked."""
        return mask(str(self.path))

    @property
    def is_database(self) -> bool:
        """Return whether the layer is a PostGIS table (``postgresql://`` path)."""
        return is_database(self.path)


# --------------------------------------------------------------------------- [yield]


@dataclass(frozen=True)
class Indicator:
    """numerator / denominator per parcel (denominator default: the parcel's area in 亩)."""

    id: str
    title: str
    numerator: str
    denominator: str | None = None
    unit: str = ""


@dataclass(frozen=True)
class Grading:
    """Grades by thresholds (``thresholds``) or by rank (``top``: cumulative shares)."""

    by: str
    thresholds: Mapping[str, float] | None = None
    top: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Scenario:
    """A land-revenue scenario: area (given, or measured from a layer) × net revenue − cost."""

    id: str
    title: str
    net_revenue_per_mu: float
    cost: float
    area_mu: float | None = None
    layer: str | None = None


@dataclass(frozen=True)
class Revenue:
    """Where land value comes from: a 元/亩 table by class, or a land-value raster."""

    table: Path | None = None
    raster: str | None = None
    unit: str = "yuan_per_m2"


@dataclass(frozen=True)
class YieldSpec:
    """The validated ``[yield]`` table of a manifest (SPEC §8)."""

    parcels: str | None
    table: Path | None = None
    join: str | None = None
    indicators: tuple[Indicator, ...] = ()
    score: Mapping[str, float] = field(default_factory=dict)
    grading: Grading | None = None
    revenue: Revenue | None = None
    scenarios: tuple[Scenario, ...] = ()
    park_field: str | None = None
    exempt_ids: tuple[str, ...] = ()
    exempt_where: Where | None = None
    encoding: str = "utf-8-sig"


# --------------------------------------------------------------------------- [fusion] and [site]


@dataclass(frozen=True)
class FusionSpec:
    """The validated ``[fusion]`` table: fused layers, priority, two plans to compare."""

    layers: tuple[str, ...]
    priority: tuple[str, ...]
    compare: tuple[str, str] | None = None


@dataclass(frozen=True)
class SiteSpec:
    """The validated ``[site]`` table: what a proposed site may not touch."""

    forbid: tuple[str, ...] = ()


# --------------------------------------------------------------------------- the project


@dataclass(frozen=True)
class Project:
    """A validated project manifest: every section checked, every path resolved.

    ``units`` lists the layers of admin units from the largest level down (one
    layer in most projects); ``grid`` adds square management cells of that size
    in metres as the last level (SPEC §14).
    """

    path: Path
    name: str
    title: str
    crs: str
    area: AreaMode
    layers: Mapping[str, LayerSpec]
    working_crs: CRS = field(repr=False, compare=False)
    search_dirs: tuple[Path, ...] = ()
    rules: tuple[Path, ...] = ()
    boundary: str | None = None
    units: tuple[str, ...] = ()
    unit_name_field: str = "name"
    grid: float | None = None
    out: Path = Path("outputs")
    db: str | None = None
    yield_: YieldSpec | None = None
    fusion: FusionSpec = field(default_factory=lambda: FusionSpec((), ()))
    site: SiteSpec = field(default_factory=SiteSpec)

    def __repr__(self) -> str:
        return masked_repr(self)

    @property
    def unit_layer(self) -> str | None:
        """Return the layer of the smallest level of units, or ``None``."""
        return self.units[-1] if self.units else None

    @property
    def taxonomy(self) -> Taxonomy:
        """Return the common taxonomy found beside the project's rule packs."""
        return load_taxonomy(self.search_dirs)
