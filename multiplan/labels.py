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
    "area_by_unit": (
        "各镇（街道）冲突用地面积（亩，去重）",
        "Land in conflict by unit (mu, counted once)",
    ),
    "units_table": (
        "各镇（街道）冲突用地（去重）",
        "Land in conflict by unit (counted once)",
    ),
    "unit_area_mu": ("镇街面积（亩）", "Unit area (mu)"),
    "union_note": (
        "同一地块被多条规则命中只计一次：合计为冲突图斑并集的面积，不是各规则面积之和",
        "Land hit by several rules counts once: totals are areas of unions of pieces, never sums over rules",
    ),
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
    "sheet_summary": ("汇总", "Summary"),
    "sheet_units": ("镇街", "Units"),
    "sheet_patches": ("差异图斑台账", "Difference patches"),
    "sheet_by_class": ("按类型汇总", "By class"),
    "sheet_note": ("说明", "Note"),
    "note": ("说明", "Note"),
    "ledger_too_big": (
        "本次检查共 {n} 个冲突图斑，多于 {max} 个，台账未逐条列出各规则的图斑；全部图斑见 conflicts.gpkg。",
        "This check found {n} pieces, more than {max}: the per-rule sheets are left out; every piece is in conflicts.gpkg.",
    ),
    "rule_id": ("规则编号", "Rule"),
    "rule_title": ("规则名称", "Title"),
    "area_m2_h": ("面积（平方米）", "Area (m²)"),
    "area_mu_h": ("面积（亩）", "Area (mu)"),
    "unit_area": ("镇街面积（平方米）", "Unit area (m²)"),
    "conflict_m2": ("冲突面积（平方米）", "Land in conflict (m²)"),
    "conflict_mu": ("冲突面积（亩）", "Land in conflict (mu)"),
    "share": ("占比", "Share"),
    "high_m2": ("高等级冲突面积（平方米）", "High severity (m²)"),
    "medium_m2": ("中等级冲突面积（平方米）", "Medium severity (m²)"),
    "low_m2": ("低等级冲突面积（平方米）", "Low severity (m²)"),
    "value_yuan": ("涉及土地价值（元）", "Land value at stake (yuan)"),
    "a_layer": ("A 图层", "A layer"),
    "a_id": ("A 编号", "A id"),
    "a_class": ("A 用地分类", "A class"),
    "a_name": ("A 用地名称", "A class name"),
    "b_layer": ("B 图层", "B layer"),
    "b_id": ("B 编号", "B id"),
    "b_class": ("B 用地分类", "B class"),
    "b_name": ("B 用地名称", "B class name"),
    "district_total": ("全区合计（去重）", "District total (land counted once)"),
    "total_union": ("合计（去重）", "Total (land counted once)"),
    "patch_no": ("图斑编号", "Patch no."),
    "diff_class": ("差异类型", "Difference"),
    "adjust_plan": ("调整方向", "Adjustment"),
    "opinion": ("处理意见", "Opinion"),
    "status": ("状态", "Status"),
    "class_code": ("分类代码", "class"),
    "class_name": ("分类名称", "name"),
    "diff_01": ("两规均为建设用地", "construction in both plans"),
    "diff_02": ("仅第一规划为建设用地", "construction only in the first plan"),
    "diff_03": ("仅第二规划为建设用地", "construction only in the second plan"),
    "diff_04": ("两规均为非建设用地", "construction in neither plan"),
    "in_conflict": ("冲突用地（去重）", "Land in conflict (counted once)"),
    "exempt": ("免评", "exempt"),
    "not_graded": ("未评级", "not graded"),
    "no_figures": ("缺少数据", "missing figures"),
    "verdict_pass": ("通过", "PASS"),
    "verdict_fail": ("不通过", "FAIL"),
    "site": ("拟选址", "Proposed site"),
    "site_area": ("选址面积", "Site area"),
    "forbidden": ("禁止占用", "forbidden"),
    "hits": ("涉及要素", "Features touched"),
    "north": ("北", "N"),
    "measure": ("测量", "Measure"),
    "measure_hint": (
        "点击地图逐点量测，双击结束",
        "Click points on the map; double-click to finish",
    ),
    "distance": ("距离", "Distance"),
    "m": ("米", "m"),
    "km": ("公里", "km"),
    "group_plans": ("规划", "Plans"),
    "group_controls": ("管控线", "Control lines"),
    "group_conflicts": ("冲突", "Conflicts"),
    "group_yield": ("亩均效益", "Land yield"),
    "group_onemap": ("一张图", "One map"),
    "group_base": ("范围", "Boundaries"),
    "faces": ("一张图图斑", "One-map faces"),
    "patches": ("差异图斑", "Difference patches"),
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
