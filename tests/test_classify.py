import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO

from multiplan.classify import (
    Crosswalk,
    builtin_rule_dirs,
    classify_codes,
    find_classification,
    known_classifications,
    load_crosswalk,
    load_taxonomy,
)
from multiplan.errors import CrosswalkError

CLASSES = REPO / "rules" / "classes"


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy([CLASSES])


def rows(name):
    with (CLASSES / f"{name}.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_taxonomy_has_the_2023_counts(taxonomy):
    levels = [len(c) for c in taxonomy.codes]
    assert (levels.count(2), levels.count(4), levels.count(6)) == (24, 111, 40)
    assert taxonomy.codes["070101"] == "一类城镇住宅用地"
    assert taxonomy.codes["0602"] == "设施农用地"


def test_every_level_has_its_parent(taxonomy):
    for code in taxonomy.codes:
        if len(code) > 2:
            assert code[:-2] in taxonomy.codes, code


@pytest.mark.parametrize("name", ["ydyh2023", "ydyh2020", "gbt21010", "gb50137"])
def test_every_target_is_a_taxonomy_code_with_its_name(name, taxonomy):
    for row in rows(name):
        assert row["target_code"] in taxonomy.codes, row
        assert row["target_name"] == taxonomy.codes[row["target_code"]], row


def test_groups(taxonomy):
    assert taxonomy.groups["construction"] == tuple(f"{i:02d}" for i in range(7, 17))
    assert set(taxonomy.groups["agricultural"]) == {"01", "02", "03", "04", "06"}
    assert taxonomy.groups["water"] == ("05", "17")
    assert taxonomy.groups["unused"] == ("23",)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("0101", "0101"),
        ("0201K", "0201"),  # 可调整果园
        ("0204", "0205"),  # 其他园地 moved in 2023
        ("0404", "0403"),
        ("05H1", "09"),
        ("0508", "1101"),
        ("08H1", "0801"),
        ("08H2", "08"),
        ("08H2A", "080401"),
        ("0810", "1401"),
        ("0810A", "1403"),  # 广场, not 公园绿地 by prefix
        ("1104A", "1704"),
        ("1107A", "1311"),  # 干渠 is 水工设施, not 沟渠 by prefix
        ("1006", "0601"),
        ("1202", "0602"),
        ("1203", "2303"),
    ],
)
def test_gbt21010(source, target):
    cw = load_crosswalk(CLASSES / "gbt21010.csv")
    assert cw.lookup(source) == target


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("R21", "070102"),
        ("R22", "0702"),
        ("A33", "080403"),
        ("A35", "0802"),
        ("A7", "1504"),
        ("M3", "100103"),
        ("S1", "1207"),
        ("U12", "1303"),
        ("G3", "1403"),
        ("H21", "1201"),
        ("H24", "1203"),
        ("B41", "090105"),
        ("r21", "070102"),  # case and blanks are normalised
        (" M1 ", "100101"),
        ("A3X", "0804"),  # prefix fallback: A3X -> A3
        ("R2/B1", "070102"),  # mixed use falls back to the first class by prefix
    ],
)
def test_gb50137(source, target):
    assert load_crosswalk(CLASSES / "gb50137.csv").lookup(source) == target


@pytest.mark.parametrize("source", ["H", "H11", "E", "X9", "", None, float("nan")])
def test_gb50137_unmapped(source):
    assert load_crosswalk(CLASSES / "gb50137.csv").lookup(source) is None


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("0204", "0205"),
        ("060102", "1207"),
        ("0603", "060202"),
        ("090302", "0903"),
        ("1312", "1311"),
        ("1313", "1312"),
        ("2202", "2206"),
        ("2302", "2303"),
        ("2303", "060102"),
        ("0701", "0701"),
    ],
)
def test_ydyh2020_to_2023(source, target):
    assert load_crosswalk(CLASSES / "ydyh2020.csv").lookup(source) == target


def test_integer_codes_regain_their_leading_zero():
    cw = load_crosswalk(CLASSES / "gbt21010.csv")
    assert cw.lookup(101) == "0101"
    assert cw.lookup(101.0) == "0101"
    assert cw.lookup("101") == "0101"


def test_classify_codes_reports_unmapped_counts():
    cw = load_crosswalk(CLASSES / "gb50137.csv")
    classes, unmapped = classify_codes(
        pd.Series(["R21", "H11", "H11", None, "M1"], dtype=object), cw
    )
    assert classes.tolist() == ["070102", None, None, None, "100101"]
    assert unmapped == {"H11": 2, "<null>": 1}


def test_bad_crosswalks(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("code,target\nA,01\n", encoding="utf-8")
    with pytest.raises(CrosswalkError, match="wrong columns"):
        load_crosswalk(bad)
    bad.write_text(
        "source_code,target_code,source_name,target_name\nA,01,x,y\nA,02,x,y\n",
        encoding="utf-8",
    )
    with pytest.raises(CrosswalkError, match="listed twice"):
        load_crosswalk(bad)
    bad.write_text(
        "source_code,target_code,source_name,target_name\nA,0X1,x,y\n", encoding="utf-8"
    )
    with pytest.raises(CrosswalkError, match="line 2"):
        load_crosswalk(bad)


def test_crosswalk_with_bom_and_tag_targets(tmp_path: Path):
    p = tmp_path / "zones.csv"
    p.write_text(
        "\ufeffsource_code,target_code,source_name,target_name\nHX,eco_redline,红线,生态保护红线\n",
        encoding="utf-8",
    )
    cw = load_crosswalk(p)
    assert isinstance(cw, Crosswalk)
    assert cw.lookup("hx") == "eco_redline"


def test_find_and_list_classifications(tmp_path: Path):
    assert find_classification("gb50137", [CLASSES]) == CLASSES / "gb50137.csv"
    assert set(known_classifications([CLASSES])) >= {
        "gb50137",
        "gbt21010",
        "ydyh2020",
        "ydyh2023",
    }
    assert "groups" not in known_classifications([CLASSES])
    with pytest.raises(CrosswalkError):
        find_classification("nope", [CLASSES])
    with pytest.raises(CrosswalkError):
        find_classification("groups", [CLASSES])


def test_checkout_rules_dir_is_found():
    assert REPO / "rules" in builtin_rule_dirs()


def test_lookup_is_vectorised_over_unique_values():
    cw = load_crosswalk(CLASSES / "gbt21010.csv")
    values = pd.Series(np.array(["0101", "0102"] * 5000, dtype=object))
    classes, unmapped = classify_codes(values, cw)
    assert not unmapped
    assert (classes[::2] == "0101").all()
