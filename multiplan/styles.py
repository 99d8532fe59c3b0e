"""Styles that make a GeoPackage open styled in QGIS: the ``layer_styles`` table and its QML.

QGIS keeps a layer's default style in a table ``layer_styles`` of the GeoPackage
itself (its own convention, also used by PostGIS). A planner who drags
``conflicts.gpkg`` into QGIS sees the conflicts by severity, ``onemap.gpkg`` by
用地用海 class and ``differences.gpkg`` by difference class, with no styling work.
"""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multiplan.colours import (
    CHANGE_COLOURS,
    CLASS_COLOURS,
    DIFF_COLOURS,
    SEVERITY_COLOURS,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

STYLE_TIME = "2000-01-01T00:00:00Z"
"""The ``update_time`` written with every style, so that the same data give the same bytes."""


@dataclass(frozen=True)
class LayerStyle:
    """A rule-based fill style: one (filter expression, label, colour) per rule."""

    name: str
    rules: tuple[tuple[str, str, str], ...]
    opacity: float = 0.75

    def qml(self) -> str:
        """Return the style as a QGIS QML document.

        Examples
        --------
        >>> "RuleRenderer" in CONFLICT_STYLE.qml()
        True
        """
        root = ET.Element("qgis", version="3.28", styleCategories="Symbology")
        renderer = ET.SubElement(
            root,
            "renderer-v2",
            type="RuleRenderer",
            symbollevels="0",
            forceraster="0",
            enableorderby="0",
        )
        rules = ET.SubElement(renderer, "rules", key="root")
        symbols = ET.SubElement(renderer, "symbols")
        for k, (expr, text, colour) in enumerate(self.rules):
            ET.SubElement(
                rules, "rule", key=f"r{k}", filter=expr, label=text, symbol=str(k)
            )
            symbol = ET.SubElement(
                symbols,
                "symbol",
                type="fill",
                name=str(k),
                alpha=f"{self.opacity:g}",
                clip_to_extent="1",
                force_rhr="0",
            )
            layer = ET.SubElement(
                symbol,
                "layer",
                {"class": "SimpleFill", "enabled": "1", "pass": "0", "locked": "0"},
            )
            options = ET.SubElement(layer, "Option", type="Map")
            for key, value in (
                ("color", _rgba(colour)),
                ("outline_color", _rgba(colour, darker=True)),
                ("outline_style", "solid"),
                ("outline_width", "0.26"),
                ("outline_width_unit", "MM"),
                ("style", "solid"),
            ):
                ET.SubElement(options, "Option", type="QString", name=key, value=value)
        ET.SubElement(root, "layerOpacity").text = "1"
        return (
            "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            + ET.tostring(root, encoding="unicode")
        )


def _rgba(colour: str, *, darker: bool = False) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    if darker:
        r, g, b = (int(v * 0.6) for v in (r, g, b))
    return f"{r},{g},{b},255"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


CONFLICT_STYLE = LayerStyle(
    "multiplan: conflicts by severity",
    tuple(
        (f'"severity" = {_quote(s)}', label, SEVERITY_COLOURS[s])
        for s, label in (
            ("high", "高 high"),
            ("medium", "中 medium"),
            ("low", "低 low"),
        )
    ),
)
ONEMAP_STYLE = LayerStyle(
    "multiplan: one map by 用地用海 class",
    (
        *tuple(
            (f'left("class", 2) = {_quote(code)}', code, colour)
            for code, colour in sorted(CLASS_COLOURS.items())
        ),
        ('"class" IS NULL OR regexp_match("class", \'^[a-z]\')', "zone", "#cccccc"),
    ),
    opacity=0.8,
)
DIFFERENCE_STYLE = LayerStyle(
    "multiplan: difference patches",
    (
        ("\"diff_class\" = '02'", "02 仅第一规划为建设用地", DIFF_COLOURS["02"]),
        ("\"diff_class\" = '03'", "03 仅第二规划为建设用地", DIFF_COLOURS["03"]),
    ),
)


CHANGES_STYLE = LayerStyle(
    "multiplan: plan editions compared",
    tuple(
        (f'"change" = {_quote(c)}', text, CHANGE_COLOURS[c])
        for c, text in (
            ("added", "新增 added"),
            ("removed", "减少 removed"),
            ("reclassified", "地类变化 reclassified"),
            ("same", "未变 same"),
        )
    ),
)


def add_styles(path: Path, layers: Sequence[tuple[str, str, LayerStyle]]) -> None:
    """Store default styles in a GeoPackage's ``layer_styles`` table, as QGIS does.

    Parameters
    ----------
    path
        The GeoPackage.
    layers
        ``(table name, geometry column, style)`` for each layer to style.
    """
    con = sqlite3.connect(path)
    try:
        con.execute(
            """CREATE TABLE IF NOT EXISTS layer_styles (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256),
                f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
                useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
                update_time DATETIME DEFAULT CURRENT_TIMESTAMP)"""
        )
        con.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles', '', ?)",
            (STYLE_TIME,),
        )
        for table, geometry, style in layers:
            con.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                "VALUES ('', '', ?, ?, ?, ?, '', 1, ?, 'multiplan', '', ?)",
                (table, geometry, style.name, style.qml(), style.name, STYLE_TIME),
            )
        con.commit()
    finally:
        con.close()
