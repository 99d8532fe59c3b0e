"""Chinese and English labels for maps and reports (``--lang zh|en``), in one table."""

from __future__ import annotations

from typing import Literal

Lang = Literal["zh", "en"]

LABELS: dict[str, tuple[str, str]] = {
    "conflicts": ("冲突图斑", "Conflicts"),
    "rule": ("规则", "Rule"),
    "severity": ("严重程度", "Severity"),
    "high": ("高", "high"),
    "medium": ("中", "medium"),
    "low": ("低", "low"),
    "feature_a": ("A 要素", "Feature A"),
    "feature_b": ("B 要素", "Feature B"),
    "layer": ("图层", "Layer"),
    "id": ("编号", "ID"),
    "class": ("用地分类", "Class"),
    "unit": ("镇（街道）", "Unit"),
    "area": ("面积", "Area"),
    "m2": ("平方米", "m²"),
    "mu": ("亩", "mu"),
    "ha": ("公顷", "ha"),
    "pieces": ("图斑数", "Pieces"),
    "legend": ("图例", "Legend"),
    "layers": ("图层", "Layers"),
    "search": ("搜索编号（要素、图斑）", "Search an id (feature, patch)"),
    "not_found": ("未找到", "Not found"),
    "found": ("找到 {n} 处", "{n} found"),
    "boundary": ("研究范围", "Study boundary"),
    "units": ("行政单元", "Admin units"),
    "none": ("无", "none"),
    "value": ("涉及土地价值", "Land value at stake"),
    "yuan": ("元", "yuan"),
    "difference": ("（差集，无 B 要素）", "(difference: no B feature)"),
    "report": ("冲突检查报告", "Conflict check report"),
    "summary": ("按规则汇总", "By rule"),
    "by_unit": ("按镇（街道）汇总", "By unit"),
    "largest": ("面积最大的冲突图斑", "Largest conflict pieces"),
    "inputs": ("输入数据", "Inputs"),
    "features": ("要素数", "Features"),
    "repaired": ("修复", "Repaired"),
    "skipped": ("跳过（空）", "Skipped (empty)"),
    "generated": ("生成时间", "Generated"),
    "software": ("软件版本", "Software"),
    "title": ("名称", "Title"),
    "total": ("合计", "Total"),
    "area_by_rule": ("各规则冲突面积（亩）", "Conflict area by rule (mu)"),
    "area_by_unit": ("各镇（街道）冲突面积（亩）", "Conflict area by unit (mu)"),
    "no_unit": ("（无单元）", "(no unit)"),
    "source": ("来源", "Source"),
    "crs": ("坐标系", "CRS"),
    "attributes": ("属性", "Attributes"),
    "yield_grade": ("亩均效益评价", "Land yield grade"),
    "grade": ("等级", "Grade"),
    "yield": ("亩均效益", "Land yield"),
    "scenarios": ("情景测算", "Scenarios"),
    "parcels": ("地块数", "Parcels"),
    "park": ("园区", "Park"),
}


def label(key: str, lang: Lang = "zh") -> str:
    """Return the label for ``key`` in ``lang`` (Chinese by default).

    Examples
    --------
    >>> label("conflicts"), label("conflicts", "en")
    ('冲突图斑', 'Conflicts')
    """
    zh, en = LABELS[key]
    return en if lang == "en" else zh


def labels(lang: Lang = "zh") -> dict[str, str]:
    """Return every label in one language (for the map's script)."""
    return {k: (en if lang == "en" else zh) for k, (zh, en) in LABELS.items()}
