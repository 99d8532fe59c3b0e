"""The pieces of a check as one frame: SPEC §6's columns, in SPEC §6's order."""

from __future__ import annotations

from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from multiplan.schema import PIECE_COLUMNS, SORT_COLUMNS

if TYPE_CHECKING:
    from collections.abc import Sequence


def concat_pieces(
    frames: Sequence[pd.DataFrame], crs: str, columns: Sequence[str] = PIECE_COLUMNS
) -> gpd.GeoDataFrame:
    """Return the pieces of many rules (or tiles) as one GeoDataFrame of ``columns``."""
    cols = [*columns, "geometry"]
    frames = [f for f in frames if len(f)]
    df = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({c: pd.Series([], dtype=object) for c in cols})
    )
    for c in columns:
        if c in ("area_m2", "area_mu"):
            df[c] = df[c].astype(float)
        else:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return gpd.GeoDataFrame(
        df[list(columns)],
        geometry=gpd.array.from_shapely(
            np.asarray(df["geometry"], dtype=object), crs=crs
        ),
        crs=crs,
    )


def sort_pieces(
    frame: gpd.GeoDataFrame, columns: Sequence[str] = PIECE_COLUMNS
) -> gpd.GeoDataFrame:
    """Sort pieces by SPEC §6's keys compared as text, nulls first.

    With levels of units, the level columns (``columns`` between ``unit`` and
    ``area_m2``) follow as keys: a unit split between two units above it gives
    a piece in each.
    """
    if not len(frame):
        return frame
    keys = pd.DataFrame(index=frame.index)
    names = []
    extra = list(columns[columns.index("unit") + 1 : columns.index("area_m2")])
    for c in [*SORT_COLUMNS, *extra]:
        col = frame[c]
        keys[f"{c}.set"] = col.notna().to_numpy()
        keys[f"{c}.text"] = [
            ("" if v is None else str(v)) for v in col.to_numpy(dtype=object)
        ]
        names += [f"{c}.set", f"{c}.text"]
    # ties (parts of one pair's piece) by area, then position: the same whatever
    # order the tiles produced them in
    keys["area"] = frame["area_m2"].to_numpy(dtype=float)
    bounds = shapely.bounds(np.asarray(frame.geometry.array, dtype=object))
    keys["x"], keys["y"] = bounds[:, 0], bounds[:, 1]
    order = keys.sort_values([*names, "area", "x", "y"], kind="stable").index
    return frame.loc[order].reset_index(drop=True)
