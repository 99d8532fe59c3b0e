from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import DEFAULT_PACK, DEMO, toml_dumps

from multiplan.classify import load_taxonomy
from multiplan.errors import RulePackError
from multiplan.filters import parse_where
from multiplan.project import read_project
from multiplan.rules import Rule, Selector, class_mask, read_rules, select


def test_default_pack_on_the_demo():
    project = read_project(DEMO)
    rules = read_rules(project)
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids))
    assert {
        "ECO-01",
        "FARM-01",
        "LINE-01",
        "DIFF-01",
        "DIFF-02",
        "IND-01",
        "SRV-01",
        "NOISE-01",
    } <= set(ids)
    for r in rules:
        assert isinstance(r, Rule)
        assert all((r.title, r.title_en, r.basis)), r.id
        assert (
            r.pack == DEFAULT_PACK.resolve()
            or r.pack.resolve() == DEFAULT_PACK.resolve()
        )
    srv = next(r for r in rules if r.id == "SRV-01")
    assert (srv.relation, srv.distance, srv.b.layer) == (
        "difference",
        1000.0,
        "eldercare",
    )
    ind = next(r for r in rules if r.id == "IND-01")
    assert ind.a.layer == ind.b.layer == "chenggui"


def test_only_keeps_pack_order_and_rejects_unknown_ids():
    project = read_project(DEMO)
    assert [r.id for r in read_rules(project, only=["FARM-01", "ECO-01"])] == [
        "ECO-01",
        "FARM-01",
    ]
    with pytest.raises(RulePackError, match="--only names no rule 'ECO-99'"):
        read_rules(project, only=["ECO-99"])


@pytest.fixture
def project_with_pack(write_manifest, parcels, tmp_path):
    def make(*rules, extra_pack=None):
        pack = tmp_path / "pack.toml"
        pack.write_text(toml_dumps({"rule": list(rules)}), encoding="utf-8")
        packs = [str(pack)]
        if extra_pack is not None:
            p2 = tmp_path / "pack2.toml"
            p2.write_text(toml_dumps({"rule": list(extra_pack)}), encoding="utf-8")
            packs.append(str(p2))
        layers = {
            "tugui": {
                "path": str(parcels),
                "class_field": "DLBM",
                "classification": "gbt21010",
            },
            "zone": {"path": str(parcels), "class": "eco_redline"},
            "pts": {"path": str(parcels), "class": "my_tag"},
            "val": {"path": str(tmp_path / "v.tif"), "kind": "raster"},
        }
        (tmp_path / "v.tif").write_bytes(b"")
        return read_project(write_manifest(layers, rules=packs)), pack

    return make


GOOD = {
    "id": "R1",
    "title": "t",
    "a": {"layer": "tugui", "class": ["construction"]},
    "b": {"layer": "zone"},
}


def test_a_good_pack(project_with_pack):
    project, _ = project_with_pack(
        GOOD,
        dict(
            GOOD,
            id="R2",
            b={"layer": "pts", "class": ["my_tag"]},
            distance=50,
            relation="difference",
        ),
    )
    rules = read_rules(project)
    assert [r.id for r in rules] == ["R1", "R2"]
    assert rules[0].severity == "medium"  # default
    assert rules[0].min_area == 1.0
    assert rules[1].distance == 50.0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"colour": "red"}, ("rule R1.colour", "unknown key")),
        ({"severity": "urgent"}, ("rule R1.severity", "high, medium, low")),
        ({"relation": "touches"}, ("rule R1.relation", "intersect, difference")),
        ({"distance": -5}, ("rule R1.distance", "≥ 0")),
        ({"min_area": "big"}, ("rule R1.min_area",)),
        (
            {"a": {"layer": "nope"}},
            (
                "rule R1.a.layer",
                "names no layer",
                "Valid layers are: tugui, zone, pts, val",
            ),
        ),
        (
            {"a": {"layer": "tugui", "class": ["farmland"]}},
            (
                "rule R1.a.class",
                "unknown class 'farmland'",
                "construction",
                "eco_redline",
            ),
        ),
        (
            {"a": {"layer": "tugui", "class": ["9999"]}},
            ("rule R1.a.class", "unknown class '9999'"),
        ),
        (
            {"a": {"layer": "tugui", "klass": ["01"]}},
            ("rule R1.a.klass", "Did you mean 'class'"),
        ),
        (
            {"a": {"layer": "tugui", "where": {"field": "x", "regex": "y"}}},
            ("rule R1.a.where", "unknown filter key 'regex'"),
        ),
        ({"b": {"layer": "val"}}, ("rule R1.b.layer", "value raster")),
        ({"a": "tugui"}, ("rule R1.a", "must be a table")),
    ],
)
def test_rule_errors(project_with_pack, change, words):
    project, pack = project_with_pack(dict(GOOD, **change))
    with pytest.raises(RulePackError) as info:
        read_rules(project)
    msg = str(info.value)
    assert msg.startswith(f"file {pack}, key "), msg
    for w in words:
        assert w in msg, msg


def test_missing_b_and_missing_id(project_with_pack):
    project, _ = project_with_pack({k: v for k, v in GOOD.items() if k != "b"})
    with pytest.raises(RulePackError, match="has no 'b' selector"):
        read_rules(project)
    project, _ = project_with_pack({k: v for k, v in GOOD.items() if k != "id"})
    with pytest.raises(RulePackError, match=r"rule\[0\]\.id"):
        read_rules(project)


def test_duplicate_ids_within_and_across_packs(project_with_pack):
    project, _ = project_with_pack(GOOD, GOOD)
    with pytest.raises(RulePackError, match="duplicate rule id 'R1'"):
        read_rules(project)
    project, pack = project_with_pack(GOOD, extra_pack=[GOOD])
    with pytest.raises(RulePackError, match=f"already used in {pack}"):
        read_rules(project)


def test_invalid_toml_pack(project_with_pack, tmp_path: Path):
    project, pack = project_with_pack(GOOD)
    pack.write_text("[[rule]\n", encoding="utf-8")
    with pytest.raises(RulePackError, match="not valid TOML"):
        read_rules(project)


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy(read_project(DEMO).search_dirs)


def test_class_mask_prefix_group_tag(taxonomy):
    classes = np.array(
        [
            "0101",
            "0602",
            "070102",
            "1001",
            "2303",
            "1701",
            "eco_redline",
            None,
            "0101x",
        ],
        dtype=object,
    )
    assert class_mask(classes, ["01"], taxonomy).tolist() == [
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    assert class_mask(classes, ["construction"], taxonomy).tolist() == [
        False,
        False,
        True,
        True,
        False,
        False,
        False,
        False,
        False,
    ]
    assert class_mask(classes, ["agricultural"], taxonomy).tolist() == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    assert class_mask(classes, ["water", "unused"], taxonomy).tolist() == [
        False,
        False,
        False,
        False,
        True,
        True,
        False,
        False,
        False,
    ]
    assert class_mask(classes, ["eco_redline"], taxonomy).tolist() == [False] * 6 + [
        True,
        False,
        False,
    ]
    # "10" matches 1001 but not 0101 or 0710…: prefixes match from the start only
    assert class_mask(
        np.array(["1001", "0710"], dtype=object), ["10"], taxonomy
    ).tolist() == [True, False]


def test_select_combines_class_and_where(taxonomy):
    frame = pd.DataFrame(
        {
            "_class": ["070102", "070102", "0101"],
            "status": ["approved", "draft", "approved"],
        }
    )
    sel = Selector(
        "x",
        ("07",),
        where=parse_where({"field": "status", "eq": "approved"}, path="p", key="k"),
    )
    assert select(frame, sel, taxonomy, class_col="_class").tolist() == [
        True,
        False,
        False,
    ]
    assert select(frame, Selector("x"), taxonomy, class_col="_class").tolist() == [
        True,
        True,
        True,
    ]
