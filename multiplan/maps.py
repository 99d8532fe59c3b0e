"""The shared map: a folium element, written folium's way, that also saves as one offline file.

:func:`build_map` returns a :class:`OneMap` (a ``folium.Map``) holding a
:class:`MultiplanLayers` element: a ``MacroElement`` whose template hands the
map's data (:mod:`multiplan.mapdata`) to our drawing script. The element adds
Leaflet's script and style sheet (from the installed ``xstatic-leaflet``) and our
own (``multiplan/static/``) to the page header, inlined, so the same object
renders in Jupyter (``_repr_html_``) and saves as one HTML file that opens by
double-click with no server and no internet. Base-map tiles are optional.

Safety: no attribute ever reaches ``innerHTML``. The page builds popups and lists
with ``textContent``, and the embedded JSON escapes ``<``, ``>``, ``&``, U+2028
and U+2029.
"""

from __future__ import annotations

import base64
import html
import importlib.resources
import logging
import os
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import folium
import numpy as np
import pandas as pd
from branca.element import Element, Figure, MacroElement
from jinja2 import Template

from multiplan.errors import InputError
from multiplan.layers import ensure_layers
from multiplan.mapdata import (
    TILES,
    Tiles,
    build_map_data,
    safe_json,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from multiplan.io import Writer
    from multiplan.labels import Lang
    from multiplan.layers import Layer, Layers
    from multiplan.rules import Rule
    from multiplan.specs import Project
    from multiplan.yields import YieldResult

logger = logging.getLogger(__name__)

__all__ = [
    "TILES",
    "MultiplanLayers",
    "OneMap",
    "RawText",
    "Tiles",
    "build_map",
    "map_html",
]


@cache
def _asset(name: str) -> str:
    """Return a file of ``multiplan/static`` as text."""
    return (
        importlib.resources.files("multiplan")
        .joinpath("static", name)
        .read_text("utf-8")
    )


@cache
def _leaflet_assets() -> tuple[str, str]:
    """Return Leaflet's script and style sheet, images inlined as data URIs."""
    import xstatic.pkg.leaflet as xl

    base = Path(xl.BASE_DIR)
    js = (base / "leaflet.js").read_text(encoding="utf-8")
    css = (base / "leaflet.css").read_text(encoding="utf-8")

    def data_uri(match: re.Match[str]) -> str:
        path = base / match.group(1)
        if not path.is_file():
            return match.group(0)
        return f"url(data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')})"

    return js, re.sub(r"url\((images/[^)]+\.png)\)", data_uri, css)


def _script(code: str) -> str:
    return "<script>" + code.replace("</script", "<\\/script") + "</script>"


class OneMap(folium.Map):
    """A ``folium.Map`` that loads nothing from the network: Leaflet comes inlined.

    folium's own Map links Leaflet, jQuery and Bootstrap from CDNs; this one
    declares no links (``default_js``/``default_css`` are empty, as
    ``JSCSSMixin`` reads them) and gets Leaflet from :class:`MultiplanLayers`.
    """

    default_js: list[tuple[str, str]] = []  # noqa: RUF012 - folium's own class attribute
    default_css: list[tuple[str, str]] = []  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            location=None, tiles=None, control_scale=False, prefer_canvas=True, **kwargs
        )
        self._name = "OneMap"
        self._id = "multiplan"  # a stable name: the same inputs give the same file


class RawText(Element):
    """Text put into the page as it is, never compiled as a Jinja template.

    branca's ``Element(text)`` compiles its text as a template, so an attribute
    holding ``{{ … }}`` would run as template code, and the 7 MB of the demo
    map's data were parsed as one at every render (0.6 s).
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def render(self, **kwargs: Any) -> str:
        """Return the text."""
        return self.text


class MultiplanLayers(MacroElement):
    """The map's content: our data and drawing script, as a folium element.

    Parameters
    ----------
    data
        What :func:`multiplan.mapdata.build_map_data` returns.
    title
        The page title.
    """

    _template = Template(
        "{% macro script(this, kwargs) %}"
        "multiplanDraw({{ this._parent.get_name() }}, {{ this.data_json }});"
        "{% endmacro %}"
    )

    def __init__(self, data: Mapping[str, Any], *, title: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._name = "MultiplanLayers"
        self._id = "layers"
        self.data_json = safe_json(data)
        self.title = title

    def render(self, **kwargs: Any) -> Any:
        """Add the inlined scripts and styles to the page header, then render as usual."""
        figure = self.get_root()
        assert isinstance(figure, Figure), "MultiplanLayers must be added to a map"
        leaflet_js, leaflet_css = _leaflet_assets()
        figure.header.add_child(
            RawText(f"<title>{html.escape(self.title)}</title>"), name="multiplan_title"
        )
        figure.header.add_child(
            RawText(f"<style>{leaflet_css}</style>"), name="leaflet_css"
        )
        figure.header.add_child(
            RawText(f"<style>{_asset('multiplan.css')}</style>"), name="multiplan_css"
        )
        figure.header.add_child(RawText(_script(leaflet_js)), name="leaflet")
        figure.header.add_child(
            RawText(_script(_asset("multiplan.js"))), name="multiplan_js"
        )
        # MacroElement.render would compile the script, the data in it, as a template
        script = self._template.module.script
        figure.script.add_child(RawText(script(self, kwargs)), name=self.get_name())
        for child in self._children.values():
            child.render(**kwargs)


def build_map(
    project: Project,
    layers: Layers | Mapping[str, Layer],
    pieces: pd.DataFrame,
    rules: Sequence[Rule],
    *,
    lang: Lang = "zh",
    tiles: Tiles = "none",
    yields: YieldResult | None = None,
    units: pd.DataFrame | None = None,
) -> OneMap:
    """Build the shared map (SPEC §7) as a folium Map; save it with :func:`map_html`.

    Every vector layer of the project is drawn: those given, and the others
    read now (one that cannot be read is left out with a warning). With a
    management grid and ``units`` (units.csv), the grid is drawn as a
    choropleth of land in conflict per cell.

    Raises
    ------
    InputError
        For ``tiles="tianditu"`` without a key in ``TIANDITU_KEY``.
    """
    data = build_map_data(
        project,
        display_layers(project, layers),
        pieces,
        rules,
        lang=lang,
        tiles=tiles,
        yields=yields,
        units=units,
    )
    m = OneMap()
    _add_tiles(m, tiles)
    m.add_child(MultiplanLayers(data, title=project.title))
    return m


def _add_tiles(m: folium.Map, tiles: Tiles) -> None:
    if tiles == "none":
        return
    if tiles == "osm":
        folium.TileLayer(
            "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
            attr="© OpenStreetMap contributors",
            name="OpenStreetMap",
            max_zoom=19,
        ).add_to(m)
    elif tiles == "tianditu":
        key = check_tiles(tiles)
        for name, lyr in (("vec", "矢量底图"), ("cva", "矢量注记")):
            url = (
                f"https://t{{s}}.tianditu.gov.cn/{name}_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER={name}"
                f"&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={{z}}&TILEROW={{y}}&TILECOL={{x}}&tk={key}"
            )
            folium.TileLayer(
                url,
                attr="天地图 Tianditu",
                name=f"天地图{lyr}",
                subdomains="01234567",
                max_zoom=18,
                overlay=name == "cva",
            ).add_to(m)
    elif tiles == "gaode":
        folium.TileLayer(
            "https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}",
            attr="高德地图 (GCJ-02; data shifted to match)",
            name="高德地图",
            subdomains="1234",
            max_zoom=18,
        ).add_to(m)


def check_tiles(tiles: str) -> str:
    """Check that a base map can be used; return the Tianditu key (or "").

    Raises
    ------
    InputError
        For an unknown name, or Tianditu without ``TIANDITU_KEY``.
    """
    if tiles not in TILES:
        raise InputError(
            f"unknown base map {tiles!r}",
            key="--tiles",
            hint=f"Valid values are: {', '.join(TILES)}",
        )
    if tiles != "tianditu":
        return ""
    key = os.environ.get("TIANDITU_KEY", "").strip()
    if not key:
        raise InputError(
            "Tianditu tiles need a key",
            key="--tiles tianditu",
            hint="Set the environment variable TIANDITU_KEY (free at console.tianditu.gov.cn), or use --tiles none",
        )
    return key


def map_html(m: folium.Map) -> str:
    """Render a map as one HTML document, every script and style inlined."""
    text: str = m.get_root().render()
    return text


def map_writer(m: folium.Map) -> Writer:
    """Return a writer of the map as one offline HTML file."""

    def write(path: Path) -> None:
        path.write_text(map_html(m), encoding="utf-8")

    return write


# --------------------------------------------------------------------------- helpers for check and map


def display_layers(
    project: Project, layers: Layers | Mapping[str, Layer]
) -> dict[str, Layer]:
    """Return the layers to draw: those given plus every other vector layer of the project.

    A layer that no rule needs and that cannot be read is left out of the map
    with a warning, so that it cannot stop the check.
    """
    from multiplan.layers import Layers, read_layer

    given = layers.layers() if isinstance(layers, Layers) else dict(layers)
    out: dict[str, Layer] = {}
    for name, spec in project.layers.items():
        if name in given:
            out[name] = given[name]
        elif spec.kind == "vector" or spec.classes:
            try:
                out[name] = read_layer(spec, project)
            except InputError as exc:
                logger.warning("layer %s is left out of the map: %s", name, exc)
    for name, layer in given.items():
        out.setdefault(name, layer)
    return out


def read_conflicts(path: Path) -> pd.DataFrame:
    """Read a conflicts.gpkg written by ``multiplan check`` (nulls as ``None``)."""
    import pyogrio

    frame = pyogrio.read_dataframe(path, layer="conflicts")
    for c in frame.columns:
        if c != frame.geometry.name and not pd.api.types.is_numeric_dtype(frame[c]):
            frame[c] = pd.Series(
                [
                    None if v is None or (isinstance(v, float) and np.isnan(v)) else v
                    for v in frame[c]
                ],
                dtype=object,
                index=frame.index,
            )
    result: pd.DataFrame = frame
    return result


def redraw_map(
    project: Project,
    out: Path,
    *,
    lang: Lang = "zh",
    tiles: Tiles = "none",
) -> folium.Map:
    """Return the map of an earlier ``multiplan check`` from the outputs in ``out``.

    The land-yield layer is drawn again when the project has ``[yield]``.

    Raises
    ------
    InputError
        When the output folder holds no conflicts.gpkg.
    """
    from multiplan.rules import read_rules
    from multiplan.yields import land_yield

    check_tiles(tiles)
    gpkg = out / "conflicts.gpkg"
    if not gpkg.is_file():
        raise InputError(
            "no conflicts.gpkg to draw",
            path=gpkg,
            key="--out",
            hint="Run `multiplan check` first, or give --out the folder it wrote",
        )
    pieces = read_conflicts(gpkg)
    units = (
        pd.read_csv(
            out / "units.csv",
            encoding="utf-8-sig",
            dtype={"unit": "object", "level": "object"},
        )
        if (out / "units.csv").is_file()
        else None
    )
    if units is not None:
        units["unit"] = pd.Series(
            [None if pd.isna(u) else str(u) for u in units["unit"]], dtype=object
        )
    layers = ensure_layers(project, [])
    yields = land_yield(project) if project.yield_ is not None else None
    return build_map(
        project,
        layers,
        pieces,
        read_rules(project),
        lang=lang,
        tiles=tiles,
        yields=yields,
        units=units,
    )
