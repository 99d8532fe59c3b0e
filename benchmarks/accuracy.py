"""Accuracy: every rule's pieces against an independent computation.

    python benchmarks/accuracy.py [--scale 0.05]

For the Xinbei demo and a generated district, each rule is computed a second
way, sharing nothing with multiplan's engine but the selection of features:

* intersect: ``geopandas.overlay(A, buffer(B), how="intersection")``;
* difference: a brute-force loop, per A feature ``a − union_all(B it meets)``;
* then ``geopandas.overlay(…, boundary, "intersection")`` for the clip and
  ``geopandas.overlay(…, units, "identity")`` for the unit split, once per level
  of units; pieces under ``min_area`` dropped.

Pieces are matched on (rule, a_id, b_id, unit at every level). The script prints, per rule, the
pieces of each method, the worst relative difference of matched pieces and of
the rule's union area, and every unmatched piece over the tolerance (1e-6
relative or 0.01 m², SPEC §6). A reference piece whose pair only touches
(DE-9IM: interiors do not meet) is a false overlap of the reference (shapely
issue 1871) and is listed as such. Exit code 1 if anything else disagrees.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from synthetic import make_district, write_project  # noqa: E402

import multiplan  # noqa: E402
from multiplan.layers import CLASS_COL, unit_names  # noqa: E402
from multiplan.rules import select  # noqa: E402

TOL_REL, TOL_ABS = 1e-6, 0.01


def _frame(frame, idx, id_name):
    f = frame.iloc[idx]
    return gpd.GeoDataFrame(
        {id_name: np.asarray(f.index, dtype=object)},
        geometry=f.geometry.values,
        crs=f.crs,
    )


def independent(result) -> pd.DataFrame:
    """Recompute every rule's pieces without multiplan's overlay engine."""
    project, layers = result.project, result.layers
    taxonomy = project.taxonomy
    boundary = layers[project.boundary][["geometry"]] if project.boundary else None
    levels = _level_columns(result)
    units = [
        gpd.GeoDataFrame(
            {col: unit_names(project, layers, name)},
            geometry=layers[name].geometry.values,
            crs=layers[name].crs,
        )
        for name, col in zip(project.units, levels, strict=True)
    ]
    out = []
    for rule in result.rules:
        la, lb = layers[rule.a.layer], layers[rule.b.layer]
        ia = np.flatnonzero(select(la, rule.a, taxonomy, class_col=CLASS_COL))
        ib = np.flatnonzero(select(lb, rule.b, taxonomy, class_col=CLASS_COL))
        a = _frame(la, ia, "a_id")
        b = _frame(lb, ib, "b_id")
        if rule.distance > 0:
            b = b.set_geometry(
                b.geometry.buffer(rule.distance)
            )  # GeoSeries.buffer: 16 segments
        same = rule.a.layer == rule.b.layer
        if rule.relation == "intersect":
            if len(a) and len(b):
                p = gpd.overlay(a, b, how="intersection", keep_geom_type=True)
            else:
                p = gpd.GeoDataFrame({"a_id": [], "b_id": []}, geometry=[], crs=a.crs)
            if same and len(p):
                p = p[p["a_id"] != p["b_id"]]
                a_set, b_set = set(a["a_id"]), set(b["b_id"])
                mirrored = p["a_id"].isin(b_set) & p["b_id"].isin(a_set)
                p = p[~mirrored | (p["a_id"].astype(str) < p["b_id"].astype(str))]
        else:
            tree = b.sindex
            geoms = []
            for aid, g in zip(a["a_id"], a.geometry, strict=True):
                hits = tree.query(g, predicate="intersects")
                others = [
                    b.geometry.iloc[k]
                    for k in hits
                    if not (same and b["b_id"].iloc[k] == aid)
                ]
                geoms.append(g.difference(shapely.union_all(others)) if others else g)
            p = gpd.GeoDataFrame(
                {"a_id": a["a_id"].to_numpy(), "b_id": None}, geometry=geoms, crs=a.crs
            )
            p = p[~p.geometry.is_empty]
            p = p.set_geometry(p.geometry.apply(_polygonal))
            p = p[p.geometry.area > 0]
        if boundary is not None and len(p):
            p = gpd.overlay(p, boundary, how="intersection", keep_geom_type=True)
        for level in units:  # split at the borders of every level
            if len(p):
                p = gpd.overlay(p, level, how="identity", keep_geom_type=True)
        for col in levels:
            if col not in p.columns:
                p[col] = None
            p[col] = p[col].astype(object).where(p[col].notna(), None)
        # one piece per (a, b, units): overlay may split a piece into several rows
        p = (
            p.dissolve(by=["a_id", "b_id", *levels], dropna=False, as_index=False)
            if len(p)
            else p
        )
        p["area"] = p.geometry.area
        p = p[p["area"] >= rule.min_area]
        p["rule_id"] = rule.id
        out.append(
            pd.DataFrame(
                {
                    "rule_id": p["rule_id"],
                    "a_id": p["a_id"].astype(object),
                    "b_id": p["b_id"].astype(object),
                    **{col: p[col] for col in levels},
                    "area": p["area"],
                    "geometry": p.geometry.values,
                }
            )
        )
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _polygonal(g):
    if g.geom_type in ("Polygon", "MultiPolygon"):
        return g
    parts = [
        p for p in shapely.get_parts(g) if p.geom_type in ("Polygon", "MultiPolygon")
    ]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _level_columns(result) -> list[str]:
    """Return the pieces' unit columns: ``unit``, or one per level with several."""
    names = list(result.project.units)
    return names if len(names) > 1 else ["unit"] if names else []


def _norm(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def _key(rule_id, a_id, b_id, *units):
    return (rule_id, _norm(a_id), _norm(b_id), *map(_norm, units))


def _keys(frame: pd.DataFrame, levels: list[str]) -> list[tuple]:
    cols = [frame[c] for c in ("rule_id", "a_id", "b_id", *levels)]
    return [_key(*t) for t in zip(*cols, strict=True)]


def compare(name: str, result, ref: pd.DataFrame) -> bool:
    levels = _level_columns(result)
    pieces = result.pieces
    ours = dict(
        zip(
            _keys(pieces, levels),
            zip(pieces["area_m2"], pieces.geometry.values, strict=True),
            strict=True,
        )
    )
    theirs = dict(
        zip(
            _keys(ref, levels),
            zip(ref["area"], ref["geometry"], strict=True),
            strict=True,
        )
    )
    layers = result.layers
    ok = True
    print(f"\n{name}")
    print(
        f"{'rule':<10}{'pieces':>9}{'ref':>9}{'worst piece rel.diff':>22}{'union m²':>16}{'ref union m²':>16}{'rel.diff':>11}  unmatched"
    )
    worst_all = 0.0
    for rule in result.rules:
        keys = {k for k in ours | theirs if k[0] == rule.id}
        worst = 0.0
        unmatched = []
        for k in keys:
            a = ours.get(k, (0.0, None))[0]
            b = theirs.get(k, (0.0, None))[0]
            diff = abs(a - b)
            if diff > max(TOL_ABS, TOL_REL * max(a, b)):
                unmatched.append((k, a, b))
            elif a and b:
                worst = max(worst, diff / max(a, b))
        false_ref = []
        for k, a, b in list(unmatched):
            if a == 0 and _touch_only(rule, k, layers):
                false_ref.append((k, b))
                unmatched.remove((k, a, b))
        mine = pieces[pieces["rule_id"] == rule.id]
        ref_rule = ref[ref["rule_id"] == rule.id]
        u_ours = shapely.union_all(mine.geometry.values).area if len(mine) else 0.0
        false_keys = {fk for fk, _ in false_ref}
        kept_ref = ref_rule[[k not in false_keys for k in _keys(ref_rule, levels)]]
        u_ref = (
            shapely.union_all(kept_ref["geometry"].values).area
            if len(kept_ref)
            else 0.0
        )
        u_rel = abs(u_ours - u_ref) / max(u_ref, 1e-12) if u_ref else abs(u_ours)
        worst_all = max(
            worst_all, worst, u_rel if abs(u_ours - u_ref) > TOL_ABS else 0.0
        )
        note = f"{len(unmatched)}" + (
            f" (+{len(false_ref)} false overlaps of the reference)" if false_ref else ""
        )
        print(
            f"{rule.id:<10}{len(mine):>9,}{len(ref_rule):>9,}{worst:>22.2e}{u_ours:>16,.2f}{u_ref:>16,.2f}{u_rel:>11.1e}  {note}"
        )
        for k, a, b in unmatched[:5]:
            print(f"    unmatched {k}: ours {a:.4f} m², reference {b:.4f} m²")
        for k, b in false_ref[:3]:
            print(
                f"    reference false overlap {k}: {b:.4f} m² from a pair whose interiors do not meet"
            )
        if unmatched or (u_ref and abs(u_ours - u_ref) > max(TOL_ABS, TOL_REL * u_ref)):
            ok = False
    print(
        f"worst relative difference over matched pieces and union areas: {worst_all:.2e}  ->  {'OK' if ok else 'DISAGREES'}"
    )
    return ok


def _touch_only(rule, key, layers) -> bool:
    a_id, b_id = key[1], key[2]
    if b_id is None:
        return False
    ga = layers[rule.a.layer].geometry.loc[a_id]
    gb = layers[rule.b.layer].geometry.loc[b_id]
    if rule.distance > 0:
        gb = gb.buffer(rule.distance)
    return not shapely.relate_pattern(ga, gb, "T********")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--scale",
        type=float,
        default=0.05,
        help="size of the generated district (1 = 100 000 parcels)",
    )
    args = ap.parse_args()
    ok = True
    t = time.perf_counter()
    demo = multiplan.check(
        multiplan.read_project(HERE.parent / "layers" / "xinbei" / "project.toml")
    )
    t1 = time.perf_counter()
    ref = independent(demo)
    t2 = time.perf_counter()
    ok &= compare(
        f"Xinbei demo (multiplan {t1 - t:.1f} s, reference {t2 - t1:.1f} s)", demo, ref
    )
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_project(Path(tmp), make_district(args.scale))
        t = time.perf_counter()
        gen = multiplan.check(multiplan.read_project(manifest))
        t1 = time.perf_counter()
        ref = independent(gen)
        t2 = time.perf_counter()
        n = sum(len(v) for v in gen.layers.values())
        ok &= compare(
            f"generated district, scale {args.scale} ({n:,} features; multiplan {t1 - t:.1f} s, reference {t2 - t1:.1f} s)",
            gen,
            ref,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
