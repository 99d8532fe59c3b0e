"""conflicts.gpkg written ahead, by a child process, while the check summarises."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyogrio
import pytest
import shapely
from pyproj import CRS

from multiplan.gpkgproc import write_apart
from multiplan.piecestore import MemoryGeometries, conflicts_layer, write_pieces_gpkg
from multiplan.writeahead import WriteAhead, copy_on_write, same_frames

CRS_ = CRS.from_epsg(4549)


def _pieces(n: int = 300) -> tuple[pd.DataFrame, MemoryGeometries]:
    attrs = pd.DataFrame(
        {"rule_id": ["R"] * n, "a_id": [str(i) for i in range(n)], "area_m2": 1.0}
    )
    geoms = np.array([shapely.box(i, 0, i + 1, 1) for i in range(n)], dtype=object)
    return attrs, MemoryGeometries(geoms)


def test_placed_file_is_the_file_written_in_place(tmp_path):
    attrs, geoms = _pieces()
    options = conflicts_layer(CRS_)
    write_pieces_gpkg(tmp_path / "direct.gpkg", attrs, geoms, **options)
    ahead = WriteAhead(attrs, geoms, **options)
    ahead.place(tmp_path / "ahead.gpkg", attributes=attrs, geometries=geoms, **options)
    assert not ahead._failed  # written by the child process, and moved into place
    assert (tmp_path / "ahead.gpkg").read_bytes() == (
        tmp_path / "direct.gpkg"
    ).read_bytes()
    # placed once: a second place writes the file anew, the same bytes
    ahead.place(tmp_path / "again.gpkg", attributes=attrs, geometries=geoms, **options)
    assert (tmp_path / "again.gpkg").read_bytes() == (
        tmp_path / "direct.gpkg"
    ).read_bytes()
    folder = ahead.folder
    ahead.close()
    assert folder is not None
    assert not folder.exists()


def test_changed_pieces_are_written_as_they_are_now(tmp_path):
    attrs, geoms = _pieces()
    options = conflicts_layer(CRS_)
    ahead = WriteAhead(attrs, geoms, **options)
    attrs.loc[0, "rule_id"] = "CHANGED"  # a notebook edits the result before writing
    assert ahead._attributes.loc[0, "rule_id"] == "R"  # the change is not shared
    ahead.place(tmp_path / "out.gpkg", attributes=attrs, geometries=geoms, **options)
    write_pieces_gpkg(tmp_path / "direct.gpkg", attrs, geoms, **options)
    assert (tmp_path / "out.gpkg").read_bytes() == (
        tmp_path / "direct.gpkg"
    ).read_bytes()
    other = MemoryGeometries(geoms.geoms.copy())
    other.geoms[1] = shapely.box(0, 0, 9, 9)
    ahead2 = WriteAhead(attrs, geoms, **options)
    ahead2.place(tmp_path / "g.gpkg", attributes=attrs, geometries=other, **options)
    write_pieces_gpkg(tmp_path / "g_direct.gpkg", attrs, other, **options)
    assert (tmp_path / "g.gpkg").read_bytes() == (
        tmp_path / "g_direct.gpkg"
    ).read_bytes()


def test_a_write_ahead_shares_the_attributes_only_under_copy_on_write(tmp_path):
    """A big check's attributes are not held twice while conflicts.gpkg is written."""
    attrs, geoms = _pieces()
    ahead = WriteAhead(attrs, geoms, **conflicts_layer(CRS_))
    shared = np.shares_memory(
        ahead._attributes["area_m2"].to_numpy(), attrs["area_m2"].to_numpy()
    )
    assert shared == copy_on_write()
    ahead.close()


def test_same_frames_sees_a_change_made_after_a_shallow_copy():
    attrs, _ = _pieces(50)
    attrs["unit"] = pd.Series([None] * 50, dtype=object)
    ahead_copy = attrs.copy(deep=not copy_on_write())
    assert same_frames(attrs, ahead_copy)
    attrs.loc[49, "a_id"] = "changed"  # copy-on-write copies the column first
    assert not same_frames(attrs, ahead_copy)
    assert ahead_copy.loc[49, "a_id"] == "49"
    again = attrs.copy(deep=False)
    again["area_m2"] = again["area_m2"] + 0.0  # a new column, equal values
    assert same_frames(attrs, again)
    again.loc[0, "area_m2"] = 2.0
    assert not same_frames(attrs, again)
    assert not same_frames(attrs, attrs[["a_id", "rule_id", "area_m2", "unit"]])


def test_a_failed_write_ahead_falls_back_to_writing_in_place(tmp_path, monkeypatch):
    import multiplan.writeahead as wa

    attrs, geoms = _pieces()
    options = conflicts_layer(CRS_)
    real = wa.write_pieces_gpkg
    calls = []

    def failing(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(wa, "write_pieces_gpkg", failing)
    ahead = WriteAhead(attrs, geoms, **options)
    ahead.place(tmp_path / "out.gpkg", attributes=attrs, geometries=geoms, **options)
    assert len(calls) == 2
    assert calls[1] == tmp_path / "out.gpkg"
    real(tmp_path / "direct.gpkg", attrs, geoms, **options)
    assert (tmp_path / "out.gpkg").read_bytes() == (
        tmp_path / "direct.gpkg"
    ).read_bytes()


def test_a_write_ahead_without_its_child_process_writes_in_place(tmp_path, monkeypatch):
    attrs, geoms = _pieces()
    options = conflicts_layer(CRS_)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    ahead = WriteAhead(attrs, geoms, **options)
    ahead.place(tmp_path / "out.gpkg", attributes=attrs, geometries=geoms, **options)
    assert ahead._failed  # the child could not start ...
    write_pieces_gpkg(tmp_path / "direct.gpkg", attrs, geoms, **options)
    assert (tmp_path / "out.gpkg").read_bytes() == (
        tmp_path / "direct.gpkg"
    ).read_bytes()  # ... and the file is the same


def test_the_child_process_says_why_it_failed(tmp_path):
    schema = pa.schema([pa.field("geometry", pa.binary())])
    batch = pa.record_batch([pa.array([shapely.box(0, 0, 1, 1).wkb])], schema=schema)
    options = {"layer": "x", "driver": "GPKG", "geometry_name": "geometry"}
    options.update(geometry_type="Polygon", crs="EPSG:4549")
    with pytest.raises(RuntimeError, match="unable to open"):
        write_apart(
            tmp_path / "missing" / "x.gpkg",
            schema,
            [batch],
            options,
            log=tmp_path / "x.log",
        )
    write_apart(tmp_path / "x.gpkg", schema, [batch], options, log=tmp_path / "y.log")
    assert pyogrio.read_info(tmp_path / "x.gpkg", layer="x")["features"] == 1
