"""No silent wrong figures: damaged and unusual inputs are refused or handled, never guessed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from click.testing import CliRunner
from helpers import DEMO, X0, Y0, box, file_hashes, run_check, squares

import multiplan
from multiplan.cli import main
from multiplan.errors import InputError, LayerError
from multiplan.outputs import OutputFolder

RULE = {
    "id": "R1",
    "title": "居住用地在红线内",
    "severity": "high",
    "a": {"layer": "plan", "class": ["07"]},
    "b": {"layer": "zone"},
}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for w in words:
        assert w in r.output, (w, r.output)


def parcels_shp(tmp_path, name="p", n=60, encoding="GBK", cpg=None):
    g = gpd.GeoDataFrame(
        {
            "DLBM": ["0701"] * n,
            "DLMC": ["城镇住宅用地"] * n,
            "far": [str(950 + i * 10) for i in range(n)],
        },
        geometry=[box(i * 20, 0, i * 20 + 15, 15) for i in range(n)],
        crs="EPSG:4549",
    )
    path = tmp_path / f"{name}.shp"
    g.to_file(path, encoding=encoding)
    if cpg is None:
        (tmp_path / f"{name}.cpg").unlink(missing_ok=True)
    else:
        (tmp_path / f"{name}.cpg").write_text(cpg, encoding="ascii")
    return path


# ------------------------------------------------------------------ silent data loss


def test_a_truncated_shp_is_refused_naming_the_rows(write_manifest, tmp_path, hashes):
    shp = parcels_shp(tmp_path, encoding="UTF-8", cpg="UTF-8")
    data = shp.read_bytes()
    shp.write_bytes(data[: len(data) // 3])  # a copy that stopped a third of the way
    (tmp_path / "pack.toml").write_text(
        '[[rule]]\nid = "S1"\na = { layer = "p" }\nb = { layer = "p" }\n',
        encoding="utf-8",
    )
    manifest = write_manifest(
        {"p": {"path": str(shp), "class_field": "DLBM"}},
        rules=[str(tmp_path / "pack.toml")],
    )
    before = hashes(tmp_path)
    for command in ("layers", "check"):
        r = invoke(command, manifest)
        one_line_error(r, "the .shp is truncated", "rows (", "row ")
        assert "have no readable geometry" in r.output
    assert not (tmp_path / "outputs").exists()
    assert hashes(tmp_path) == before


@pytest.mark.parametrize(
    ("written", "cpg", "words"),
    [
        (
            "GBK",
            "LATIN1",
            "declares iso8859-1 but the text reads as GBK/GB18030 ('城镇住宅用地')",
        ),
        ("GBK", "1252", "declares cp1252 but the text reads as GBK/GB18030"),
        ("GBK", "UTF-8", "declares utf-8 but the text is not utf-8"),
        ("UTF-8", "GBK", "declares gbk but the text reads as UTF-8"),
    ],
)
def test_a_lying_cpg_is_refused(write_manifest, tmp_path, written, cpg, words):
    shp = parcels_shp(tmp_path, encoding=written, cpg=cpg)
    manifest = write_manifest({"p": {"path": str(shp), "class_field": "DLBM"}})
    r = invoke("layers", manifest)
    one_line_error(r, words, "key layers.p.encoding", "field DLMC")


def test_the_right_encoding_in_the_manifest_overrides_a_lying_cpg(
    write_manifest, tmp_path
):
    shp = parcels_shp(tmp_path, encoding="GBK", cpg="LATIN1")
    manifest = write_manifest(
        {"p": {"path": str(shp), "class_field": "DLBM", "encoding": "GBK"}}
    )
    project = multiplan.read_project(manifest)
    frame = multiplan.read_layers(project)["p"]
    assert set(frame["DLMC"]) == {"城镇住宅用地"}
    # and a where on the Chinese value keeps every feature
    text = (
        manifest.read_text(encoding="utf-8")
        + 'where = { field = "DLMC", eq = "城镇住宅用地" }\n'
    )
    manifest.write_text(text, encoding="utf-8")
    assert len(multiplan.read_layers(multiplan.read_project(manifest))["p"]) == 60


def _gpkg_with_wkb(path, wkbs, ids):
    """A GeoPackage whose geometries are raw WKB (so that GEOS' own checks are bypassed)."""
    with np.errstate(invalid="ignore"):
        geoms = shapely.from_wkb(wkbs)
    frame = gpd.GeoDataFrame(
        {"pid": ids, "code": ["R21"] * len(ids)}, geometry=list(geoms), crs="EPSG:4549"
    )
    pyogrio.write_dataframe(frame, path, layer="plan", geometry_type="Polygon")


def _polygon_wkb(rings):
    out = struct.pack("<BII", 1, 3, len(rings))
    for ring in rings:
        out += struct.pack("<I", len(ring)) + b"".join(
            struct.pack("<dd", *c) for c in ring
        )
    return out


def test_a_nan_vertex_is_refused_naming_the_feature(write_manifest, tmp_path):
    good = [(X0, Y0), (X0 + 10, Y0), (X0 + 10, Y0 + 10), (X0, Y0)]
    bad = [(X0, Y0), (X0 + 10, Y0), (X0 + 10, float("nan")), (X0, Y0)]
    _gpkg_with_wkb(
        tmp_path / "nan.gpkg",
        [_polygon_wkb([good]), _polygon_wkb([bad])],
        ["ok", "P-NAN"],
    )
    manifest = write_manifest({"plan": {"path": "nan.gpkg", "id_field": "pid"}})
    r = invoke("layers", manifest)
    one_line_error(r, "feature P-NAN", "not a number")


def test_an_empty_ring_is_cleaned_and_counted_not_a_crash(write_manifest, tmp_path):
    shell = [(X0, Y0), (X0 + 100, Y0), (X0 + 100, Y0 + 100), (X0, Y0 + 100), (X0, Y0)]
    empty_hole = struct.pack("<BII", 1, 3, 2) + struct.pack("<I", 5)
    empty_hole += b"".join(struct.pack("<dd", *c) for c in shell) + struct.pack("<I", 0)
    _gpkg_with_wkb(
        tmp_path / "plan.gpkg", [empty_hole, _polygon_wkb([shell])], ["p1", "p2"]
    )
    gpd.GeoDataFrame(
        {"zid": ["z"]}, geometry=[box(50, 50, 150, 150)], crs=4549
    ).to_file(tmp_path / "zone.gpkg")
    manifest = write_manifest(
        {
            "plan": {
                "path": "plan.gpkg",
                "id_field": "pid",
                "class_field": "code",
                "classification": "gb50137",
            },
            "zone": {"path": "zone.gpkg", "class": "eco_redline"},
        },
        rules=[str(tmp_path / "pack.toml")],
    )
    (tmp_path / "pack.toml").write_text(
        '[[rule]]\nid = "R1"\nseverity = "high"\na = { layer = "plan", class = ["07"] }\nb = { layer = "zone" }\n',
        encoding="utf-8",
    )
    r = invoke("layers", manifest, "--format", "json")
    assert r.exit_code == 0, r.output
    plan = next(d for d in json.loads(r.output) if d["name"] == "plan")
    assert plan["cleaned_rings"] == 1
    # the prepared predicates that crashed on it now run; both parcels give the same piece
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run(
        [
            shutil.which("multiplan") or "multiplan",
            "check",
            str(manifest),
            "--no-map",
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    pieces = gpd.read_file(
        tmp_path / "outputs" / "test" / "conflicts.gpkg", layer="conflicts"
    )
    assert sorted(pieces["a_id"]) == ["p1", "p2"]
    assert pieces["area_m2"].tolist() == pytest.approx([2500.0, 2500.0])


def test_a_native_crash_is_one_line_and_exit_3():
    proc = subprocess.run(
        [shutil.which("multiplan") or "multiplan", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "MULTIPLAN_TEST_SEGFAULT": "1"},
        check=False,
    )
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        "multiplan: internal error: the process crashed with a segmentation fault in native code; "
        "rerun with --debug to see where"
    ]


_LEAVE = """
import atexit, sys, threading, time
from pathlib import Path
from multiplan import supervise
atexit.register(lambda: Path(sys.argv[1]).write_text("exit handlers ran"))
if sys.argv[2] == "thread":  # a thread still at work: the ordinary way out waits for it
    def late():
        time.sleep(0.3)
        Path(sys.argv[1]).with_suffix(".thread").write_text("done")
    threading.Thread(target=late).start()
print("the last line, unflushed", end="")
supervise._leave(int(sys.argv[3]))
"""


@pytest.mark.parametrize("thread", ["none", "thread"])
@pytest.mark.parametrize("code", [0, 4])
def test_the_supervised_child_leaves_with_its_code_its_output_and_its_exit_handlers(
    tmp_path, thread, code
):
    """The child ends without tearing the interpreter down, but loses nothing on the way.

    Its exit code, its buffered output and its exit handlers (which remove
    scratch folders) all survive; a thread still running is waited for.
    """
    mark = tmp_path / "atexit.txt"
    proc = subprocess.run(
        [sys.executable, "-c", _LEAVE, str(mark), thread, str(code)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "the last line, unflushed"
    assert mark.read_text() == "exit handlers ran"
    if thread == "thread":
        assert mark.with_suffix(".thread").read_text() == "done"


def test_ctrl_c_is_exit_130_not_the_exit_1_of_conflicts_found(tmp_path):
    """An interrupted check says so, leaves no output folder and exits 130."""
    out = tmp_path / "out"
    with subprocess.Popen(
        [shutil.which("multiplan") or "multiplan", "-v", "check", str(DEMO),
         "--out", str(out), "--no-map"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    ) as proc:  # fmt: skip
        assert proc.stderr is not None
        for line in proc.stderr:  # the check has started reading its layers
            if line.startswith("INFO: layer"):
                break
        proc.send_signal(signal.SIGINT)  # to the supervisor, which passes it on
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == 130, rest
    assert "Aborted!" in rest
    assert "Traceback" not in rest
    assert not out.exists()


def test_gdal_warnings_become_a_counted_decision(write_manifest, tmp_path):
    # GDAL warns when a GeoJSON member it cannot map is dropped; the warning is kept
    (tmp_path / "w.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"n": 1},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [
                                [
                                    [119.9, 31.8],
                                    [119.91, 31.8],
                                    [119.91, 31.81],
                                    [119.9, 31.8],
                                ]
                            ],
                        },
                    },
                    {
                        "type": "Feature",
                        "properties": {"n": 2},
                        "geometry": {"type": "Polygon", "coordinates": "broken"},
                    },
                ],
            }
        ),
        encoding="utf-8",
    )
    manifest = write_manifest({"w": {"path": "w.geojson"}})
    r = invoke("layers", manifest, "--format", "json")
    layer = json.loads(r.output)[0] if r.exit_code == 0 else None
    if layer is not None:  # read: the warning and the skipped row are both reported
        assert layer["warnings"] or layer["null"]
    else:
        one_line_error(r, "layer w")


# ------------------------------------------------------------------ filters that mean what they say


def test_comparison_on_numbers_held_as_text(write_manifest, tmp_path):
    shp = parcels_shp(tmp_path, encoding="UTF-8", cpg="UTF-8")
    manifest = write_manifest(
        {"p": {"path": str(shp), "where": {"field": "far", "ge": 1000}}}
    )
    frame = multiplan.read_layers(multiplan.read_project(manifest))["p"]
    # "950" ≥ "1000" as text; as numbers 950 < 1000: 5 of 60 are below
    assert len(frame) == 55
    assert frame["far"].astype(int).min() == 1000


def test_a_comparison_that_cannot_mean_anything_is_refused(write_manifest, tmp_path):
    shp = parcels_shp(tmp_path, encoding="UTF-8", cpg="UTF-8")
    manifest = write_manifest(
        {"p": {"path": str(shp), "where": {"field": "DLMC", "ge": 1000}}}
    )
    one_line_error(
        invoke("layers", manifest),
        "field 'DLMC' holds text",
        "ge 1000",
        "key layers.p.where",
    )
    numeric = tmp_path / "n.gpkg"
    gpd.GeoDataFrame({"far": [1.5]}, geometry=squares(1), crs=4549).to_file(numeric)
    manifest = write_manifest(
        {"n": {"path": str(numeric), "where": {"field": "far", "eq": "high"}}}
    )
    one_line_error(invoke("layers", manifest), "field 'far' holds numbers", "'high'")


# ------------------------------------------------------------------ the output folder as one set


def test_a_second_run_on_a_busy_folder_stops_at_once(make, tmp_path):
    project = make([RULE])
    with OutputFolder(project.out):
        r = invoke("check", project.path, "--no-map")
    one_line_error(
        r, f"another multiplan run (PID {os.getpid()}) is writing to this folder"
    )
    assert not project.out.exists()
    # released: the next run goes through
    assert invoke("check", project.path, "--no-map").exit_code == 0


def test_a_foreign_folder_needs_force(make, tmp_path):
    project = make([RULE])
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.docx").write_bytes(b"precious")
    one_line_error(
        invoke("check", project.path, "--out", home, "--no-map"),
        "holds no multiplan run",
        "--force",
    )
    r = invoke("check", project.path, "--out", home, "--no-map", "--force")
    assert r.exit_code == 0, r.output
    assert (home / "thesis.docx").read_bytes() == b"precious"
    assert (home / "summary.csv").is_file()


def test_other_commands_files_and_the_users_stay(make):
    project = make([RULE])
    run_check(project)
    (project.out / "notes.txt").write_text("mine", encoding="utf-8")
    (project.out / "site.csv").write_text("from site", encoding="utf-8")
    r = invoke("check", project.path, "--no-map")
    assert r.exit_code == 0, r.output
    names = {p.name for p in project.out.iterdir()}
    assert "map.html" not in names  # --no-map removes a stale map
    assert (project.out / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (project.out / "site.csv").read_text(encoding="utf-8") == "from site"


@pytest.mark.parametrize("case", ["under-a-file", "symlink-loop"])
def test_os_errors_on_output_are_exit_2_naming_the_folder(make, tmp_path, case):
    project = make([RULE])
    if case == "under-a-file":
        (tmp_path / "afile").write_text("x", encoding="utf-8")
        out, words = tmp_path / "afile" / "out", "a part of the path is a file"
    else:
        (tmp_path / "loop").symlink_to(tmp_path / "loop")
        out, words = tmp_path / "loop" / "out", "loop of symbolic links"
    r = invoke("check", project.path, "--out", out, "--no-map")
    one_line_error(r, str(out), words)


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_a_full_disk_is_exit_2_and_the_previous_outputs_stay(make, tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=200k"):
        pytest.skip("cannot mount a small tmpfs here (not root, or no mount)")
    try:
        project = make([RULE])
        out = disk / "out"
        first = invoke("check", project.path, "--out", out, "--no-map")
        assert first.exit_code == 0, first.output
        before = file_hashes(out)
        r = invoke(
            "check", project.path, "--out", out
        )  # the map (Leaflet inlined) does not fit
        one_line_error(r, str(out), "no space left on the device")
        assert file_hashes(out) == before
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_read_only_folder_is_exit_2(make, tmp_path):
    disk = tmp_path / "ro"
    if not _mount_tmpfs(disk, "ro,size=100k"):
        pytest.skip("cannot mount a read-only tmpfs here (not root, or no mount)")
    try:
        project = make([RULE])
        r = invoke("check", project.path, "--out", disk / "out", "--no-map")
        one_line_error(r, str(disk / "out"), "read-only")
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------------ CRS checks that accept good data


def test_a_working_crs_across_the_antimeridian_accepts_its_layers(
    write_manifest, tmp_path
):
    g = gpd.GeoDataFrame(
        {"n": [1, 2]},
        geometry=[
            shapely.box(178.5, -18.5, 179.5, -17.5),
            shapely.box(-179.9, -18.5, -179.0, -17.5),
        ],
        crs=4326,
    )
    g.to_file(tmp_path / "fiji.gpkg")
    manifest = write_manifest(
        {"fiji": {"path": "fiji.gpkg"}}, crs="EPSG:3460"
    )  # Fiji 1986 / Fiji Map Grid
    frame = multiplan.read_layers(multiplan.read_project(manifest))["fiji"]
    assert len(frame) == 2


def test_longitudes_a_few_ulps_past_180_are_degrees(write_manifest, tmp_path):
    lon = 180.00000000000006
    (tmp_path / "ne.geojson").write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [
                                [[179.0, 65.0], [lon, 65.0], [lon, 66.0], [179.0, 65.0]]
                            ],
                        },
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    manifest = write_manifest(
        {"ne": {"path": "ne.geojson"}}, crs="EPSG:3571"
    )  # North Pole LAEA Bering Sea
    assert len(multiplan.read_layers(multiplan.read_project(manifest))["ne"]) == 1


# ------------------------------------------------------------------ units


@pytest.mark.parametrize(
    ("names", "words"),
    [(["西区", None], "1 units have no name"), (["西区", "西区"], "'西区' by")],
)
def test_units_without_a_name_or_with_one_name_twice_are_refused(
    make, tmp_path, names, words
):
    towns = gpd.GeoDataFrame(
        {"name": names},
        geometry=[box(0, -100, 500, 1000), box(500, -100, 950, 1000)],
        crs=4549,
    )
    project = make([RULE], layers={"towns": towns})
    with pytest.raises(LayerError, match=words):
        multiplan.check(project)
    one_line_error(invoke("check", project.path), words, "layer towns")


# ------------------------------------------------------------------ sites that cannot be where they say


@pytest.mark.parametrize(
    ("site", "words"),
    [
        (
            "POLYGON ((119.9 31.8, 119.91 31.8, 119.91 31.81, 119.9 31.8))",
            "look like degrees",
        ),
        ("POLYGON ((0 0, 100 0, 100 100, 0 0))", "lie outside the area of EPSG:4549"),
        (
            "POLYGON ((600000 3530000, 600300 3530000, 600300 3530300, 600000 3530000))",
            "outside the study area",
        ),
    ],
)
def test_a_site_that_cannot_be_in_the_working_crs_is_exit_2(tmp_path, site, words):
    r = invoke("site", DEMO, site, "--out", tmp_path / "o")
    one_line_error(r, words, "key SITE")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ spreadsheet formulas


def test_text_that_looks_like_a_formula_stays_text_in_csv(make, tmp_path):
    plan = gpd.GeoDataFrame(
        {"code": ["R21"], "pid": ['=HYPERLINK("http://x","x")']},
        geometry=[box(0, 0, 100, 100)],
        crs=4549,
    )
    project = make([RULE], layers={"plan": plan})
    towns = gpd.GeoDataFrame(
        {"name": ["@西区", "+东区"]},
        geometry=[box(0, -100, 500, 1000), box(500, -100, 950, 1000)],
        crs=4549,
    )
    project = make([RULE], layers={"plan": plan, "towns": towns})
    run_check(project, with_map=False)
    text = (project.out / "by_unit.csv").read_text(encoding="utf-8-sig")
    assert "'@西区" in text
    assert "\n@" not in text
    table = pd.read_csv(project.out / "by_unit.csv", encoding="utf-8-sig")
    assert table["area_m2"].dtype.kind == "f"  # numbers stay numbers


def test_input_error_is_the_base_of_output_errors():
    from multiplan.errors import OutputError

    assert issubclass(OutputError, InputError)
