"""Fixtures that generate test data: manifests, layers in many formats, a geometry zoo."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyogrio
import pytest
from helpers import file_hashes, squares, toml_dumps, zoo


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[..., Path]:
    """Write a manifest into tmp_path; ``project`` keys default to a valid minimum."""

    def write(
        layers: Mapping[str, Any], filename: str = "project.toml", **project: Any
    ) -> Path:
        proj = {"name": "test", "crs": "EPSG:4549", **project}
        path = tmp_path / filename
        path.write_text(
            toml_dumps({"project": proj, "layers": layers}), encoding="utf-8"
        )
        return path

    return write


@pytest.fixture
def parcels(tmp_path: Path) -> Path:
    """A small GeoPackage of classed parcels in EPSG:4549 (field DLBM, GB/T 21010)."""
    gdf = gpd.GeoDataFrame(
        {
            "BSM": ["a1", "a2", "a3", "a4"],
            "DLBM": ["0101", "0701", "05H1", "0201K"],
            "DLMC": ["水田", "城镇住宅用地", "商业服务业设施用地", "可调整果园"],
            "status": ["approved", "approved", "draft", "planned"],
            "width": [10.0, 20.0, 30.0, 40.0],
        },
        geometry=squares(4),
        crs="EPSG:4549",
    )
    path = tmp_path / "parcels.gpkg"
    gdf.to_file(path, layer="parcels")
    return path


@pytest.fixture
def zoo_file(tmp_path: Path) -> Path:
    """The zoo as a GeoPackage in EPSG:4549 (kind field names the case)."""
    z = zoo()
    gdf = gpd.GeoDataFrame(
        {"kind": list(z)}, geometry=list(z.values()), crs="EPSG:4549"
    )
    path = tmp_path / "zoo.gpkg"
    pyogrio.write_dataframe(gdf, path, layer="zoo", geometry_type="Unknown")
    return path


@pytest.fixture
def hashes() -> Callable[[Path], dict[str, str]]:
    return file_hashes
