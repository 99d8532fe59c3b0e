from pathlib import Path

import pytest
from helpers import DEFAULT_PACK, DEMO, toml_dumps

from multiplan.errors import ManifestError
from multiplan.project import read_project
from multiplan.specs import LayerSpec, Project


def test_demo_manifest_loads():
    p = read_project(DEMO)
    assert isinstance(p, Project)
    assert p.name == "xinbei"
    assert p.crs == "EPSG:4549"
    assert p.boundary == "district"
    assert p.units == ("towns", "communities")
    assert (
        p.rules == (DEFAULT_PACK.resolve(),)
        or p.rules[0].resolve() == DEFAULT_PACK.resolve()
    )
    tugui = p.layers["tugui"]
    assert isinstance(tugui, LayerSpec)
    assert tugui.encoding == "GBK"
    assert tugui.classification == "gbt21010"
    assert tugui.crosswalk_path is not None
    assert tugui.crosswalk_path.name == "gbt21010.csv"
    assert p.layers["airport_noise"].classes[0].cls == "noise_70"
    assert p.out.resolve() == (DEMO.parent / "../../outputs/xinbei").resolve()
    with pytest.raises(TypeError):
        p.layers["x"] = tugui  # frozen mapping


def test_relative_paths_and_defaults(write_manifest, parcels):
    path = write_manifest({"p": {"path": parcels.name, "class_field": "DLBM"}})
    p = read_project(path)
    spec = p.layers["p"]
    assert spec.path == parcels
    assert spec.classification == "ydyh2023"  # default crosswalk: identity
    assert p.area == "planar"
    assert p.out == path.parent / "outputs" / "test"
    assert p.title == "test"


def test_builtin_pack_by_name(write_manifest, parcels):
    p = read_project(
        write_manifest({"tugui": {"path": parcels.name}}, rules=["multiplan-default"])
    )
    assert p.rules[0].name == "multiplan-default.toml"


def expect_error(path: Path, *words: str) -> str:
    with pytest.raises(ManifestError) as info:
        read_project(path)
    msg = str(info.value)
    assert msg.startswith(f"file {path}"), msg
    for w in words:
        assert w in msg, msg
    assert "\n" not in msg
    return msg


def test_missing_manifest(tmp_path):
    expect_error(tmp_path / "nope.toml", "does not exist", "layers/xinbei/project.toml")


def test_invalid_toml(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text("[project\nname = 'x'\n", encoding="utf-8")
    expect_error(p, "not valid TOML")


def test_gbk_manifest_is_refused_with_a_fix(tmp_path):
    p = tmp_path / "p.toml"
    p.write_bytes('[project]\nname = "x"\ntitle = "新北区"\n'.encode("gbk"))
    expect_error(p, "not UTF-8", "Save it as UTF-8")


@pytest.mark.parametrize(
    ("layers", "project", "words"),
    [
        (
            {"p": {"path": "{parcels}", "clas_field": "DLBM"}},
            {},
            ("key layers.p.clas_field", "unknown key", "Did you mean 'class_field'"),
        ),
        (
            {"p": {"path": "missing.gpkg"}},
            {},
            ("key layers.p.path", "file not found", "relative to the manifest"),
        ),
        (
            {
                "p": {
                    "path": "{parcels}",
                    "class_field": "DLBM",
                    "classification": "gb9999",
                }
            },
            {},
            (
                "key layers.p.classification",
                "unknown classification 'gb9999'",
                "gb50137",
                "gbt21010",
            ),
        ),
        (
            {"p": {"path": "{parcels}"}},
            {"crs": "EPSG:4490"},
            ("key project.crs", "not projected", "EPSG:4549"),
        ),
        (
            {"p": {"path": "{parcels}"}},
            {"crs": "EPSG:4549x"},
            ("key project.crs", "unknown CRS"),
        ),
        (
            {"p": {"path": "{parcels}"}},
            {"boundary": "district"},
            (
                "key project.boundary",
                "names no layer: 'district'",
                "Valid layers are: p",
            ),
        ),
        (
            {"p": {"path": "{parcels}"}},
            {"name": "Xin Bei"},
            ("key project.name", "invalid project name"),
        ),
        (
            {"p": {"path": "{parcels}"}},
            {"area": "spherical"},
            ("key project.area", '"planar" and "ellipsoidal"'),
        ),
        (
            {"p": {"path": "{parcels}"}},
            {"rules": ["nope.toml"]},
            ("key project.rules[0]", "rule pack not found"),
        ),
        (
            {"p": {"path": "{parcels}"}},
            {"colour": "red"},
            ("key project.colour", "unknown key", "Valid keys are"),
        ),
        (
            {"p": {"path": "{parcels}", "class_field": "DLBM", "class": "0101"}},
            {},
            ("key layers.p.class", "not both"),
        ),
        (
            {"p": {"path": "{parcels}", "buffer": 5, "width_field": "width"}},
            {},
            ("key layers.p.buffer", "not both"),
        ),
        (
            {"p": {"path": "{parcels}", "buffer": -5}},
            {},
            ("key layers.p.buffer", "positive number"),
        ),
        (
            {"p": {"path": "{parcels}", "encoding": "klingon"}},
            {},
            ("key layers.p.encoding", "unknown text encoding", "GBK"),
        ),
        (
            {"p": {"path": "{parcels}", "crs": "EPSG:0"}},
            {},
            ("key layers.p.crs", "unknown CRS"),
        ),
        (
            {"p": {"path": "{parcels}", "class": "Farm Land"}},
            {},
            ("key layers.p.class", "neither a code", "eco_redline"),
        ),
        (
            {"p": {"path": "{parcels}", "class": "9999"}},
            {},
            ("key layers.p.class", "neither a code"),
        ),
        (
            {"p": {"path": "{parcels}", "classification": "gbt21010"}},
            {},
            ("key layers.p.classification", "needs a class_field"),
        ),
        (
            {"p": {"path": "{parcels}", "where": {"field": "status", "like": "x"}}},
            {},
            ("key layers.p.where", "unknown filter key 'like'"),
        ),
        (
            {"p": {"path": "{parcels}", "kind": "table"}},
            {},
            ("key layers.p.kind", '"vector" and "raster"'),
        ),
        (
            {"p": {"path": "{parcels}", "kind": "raster", "class_field": "x"}},
            {},
            ("key layers.p.class_field", "unknown key"),
        ),
        (
            {
                "p": {
                    "path": "{parcels}",
                    "kind": "raster",
                    "classes": [{"from": 5, "below": 1, "class": "x"}],
                }
            },
            {},
            ("key layers.p.classes[0]", "'from' must be less"),
        ),
        (
            {"p": {"path": "{parcels}", "kind": "raster", "classes": [{"class": "x"}]}},
            {},
            ("key layers.p.classes[0]", "needs 'from', 'below' or 'value'"),
        ),
        (
            {"p": {"path": "{parcels}", "kind": "raster", "band": 0}},
            {},
            ("key layers.p.band", "numbered from 1"),
        ),
        (
            {"p": {"path": "{parcels}", "transformation": "+proj=bogus"}},
            {},
            ("key layers.p.transformation", "PROJ pipeline"),
        ),
        (
            {"9bad": {"path": "{parcels}"}},
            {},
            ("key layers.9bad", "invalid layer name"),
        ),
    ],
)
def test_manifest_errors(write_manifest, parcels, layers, project, words):
    for spec in layers.values():
        if spec.get("path") == "{parcels}":
            spec["path"] = str(parcels)
    expect_error(write_manifest(layers, **project), *words)


def test_no_layers(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text(toml_dumps({"project": {"name": "x"}}), encoding="utf-8")
    expect_error(p, "key layers", "declares no layers")


def test_no_project_table(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('[layers.a]\npath = "x"\n', encoding="utf-8")
    expect_error(p, "key project", "no [project] table")


def test_fusion_and_yield_tables_are_checked(write_manifest, parcels, tmp_path):
    path = write_manifest({"p": {"path": str(parcels)}})
    text = path.read_text(encoding="utf-8")
    path.write_text(text + '\n[fusion]\npriority = ["p", "q"]\n', encoding="utf-8")
    expect_error(path, "key fusion.priority", "names no layer: 'q'")
    path.write_text(text + '\n[yield]\nparcels = "p"\nbogus = 1\n', encoding="utf-8")
    expect_error(path, "key yield.bogus", "unknown key")


def test_postgis_sources_are_accepted_by_the_manifest(write_manifest):
    p = read_project(
        write_manifest(
            {"pg": {"path": "postgresql://user@localhost/db", "layer": "public.plan"}}
        )
    )
    assert p.layers["pg"].source.startswith("postgresql://")


def test_zip_inner_path_is_accepted(write_manifest, tmp_path, parcels):
    import zipfile

    z = tmp_path / "delivery.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.write(parcels, "inner/parcels.gpkg")
    p = read_project(write_manifest({"z": {"path": "delivery.zip/inner/parcels.gpkg"}}))
    assert str(p.layers["z"].path).endswith("delivery.zip/inner/parcels.gpkg")
