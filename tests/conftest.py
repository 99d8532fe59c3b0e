"""Fixtures that generate test data: manifests, layers in many formats, a geometry zoo."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyogrio
import pytest
import shapely
from helpers import X0, Y0, box, file_hashes, squares, toml_dumps, zoo
from hypothesis import settings

from multiplan.project import read_project

# the same examples on every run, so that CI is repeatable; explore with
# HYPOTHESIS_PROFILE=explore pytest
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


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


@pytest.fixture
def make(tmp_path):
    """Build a project: layers from (name → GeoDataFrame or spec) and rules."""

    def build(
        rules,
        *,
        layers=None,
        boundary=True,
        units=True,
        area="planar",
        extra_layers=None,
    ):
        gdfs = {
            "plan": gpd.GeoDataFrame(
                {
                    "code": ["R21", "R21", "M3", "E2", "R21", "R21"],
                    "pid": ["p1", "p2", "p3", "p4", "p5", "p6"],
                },
                geometry=[
                    box(0, 0, 100, 100),  # p1: half in the zone
                    box(50, 0, 150, 100),  # p2: overlaps p1 (same layer)
                    box(300, 0, 400, 100),  # p3: class-3 industry
                    box(0, 200, 100, 300),  # p4: farmland
                    box(480, 400, 520, 440),  # p5: straddles the unit border at x=500
                    box(1100, 0, 1200, 100),  # p6: outside the boundary
                ],
                crs="EPSG:4549",
            ),
            "zone": gpd.GeoDataFrame(
                {"zid": ["z1", "z2"]},
                geometry=[
                    box(50, -50, 250, 150),
                    box(60, -50, 260, 150),
                ],  # two overlapping zones
                crs="EPSG:4549",
            ),
            "care": gpd.GeoDataFrame(
                {"name": ["敬老院"]},
                geometry=[shapely.Point(X0 + 0, Y0 + 0)],
                crs="EPSG:4549",
            ),
            "district": gpd.GeoDataFrame(
                {"n": [1]}, geometry=[box(0, -100, 1000, 1000)], crs="EPSG:4549"
            ),
            "towns": gpd.GeoDataFrame(
                {"name": ["西区", "东区"]},
                geometry=[
                    box(0, -100, 500, 1000),
                    box(500, -100, 950, 1000),
                ],  # x 950–1000 is in no unit
                crs="EPSG:4549",
            ),
        }
        gdfs.update(layers or {})
        specs = {
            "plan": {
                "path": "plan.gpkg",
                "class_field": "code",
                "classification": "gb50137",
                "id_field": "pid",
            },
            "zone": {"path": "zone.gpkg", "class": "eco_redline", "id_field": "zid"},
            "care": {"path": "care.gpkg", "class": "080701"},
            "district": {"path": "district.gpkg"},
            "towns": {"path": "towns.gpkg"},
        }
        specs.update(extra_layers or {})
        for name, g in gdfs.items():
            g.to_file(tmp_path / f"{name}.gpkg", layer=name)
        pack = tmp_path / "pack.toml"
        pack.write_text(toml_dumps({"rule": rules}), encoding="utf-8")
        proj = {
            "name": "t",
            "crs": "EPSG:4549",
            "rules": [str(pack)],
            "out": str(tmp_path / "out"),
            "area": area,
        }
        if boundary:
            proj["boundary"] = "district"
        if units:
            proj["units"] = "towns"
        manifest = tmp_path / "project.toml"
        manifest.write_text(
            toml_dumps({"project": proj, "layers": specs}), encoding="utf-8"
        )
        return read_project(manifest)

    return build
