"""Column names of every output table (SPEC §6, §8, §9, §14), defined once."""

from __future__ import annotations

PIECE_COLUMNS = (
    "rule_id",
    "severity",
    "a_layer",
    "a_id",
    "a_class",
    "b_layer",
    "b_id",
    "b_class",
    "unit",
    "area_m2",
    "area_mu",
)
"""Columns of ``conflicts.gpkg`` (SPEC §6), in order; the geometry comes last."""
SORT_COLUMNS = ("rule_id", "a_layer", "a_id", "b_layer", "b_id", "unit")
"""The sort keys of the pieces: compared as text, nulls first (SPEC §6)."""
SUMMARY_COLUMNS = ("rule_id", "title", "severity", "pieces", "area_m2", "area_mu")
BY_UNIT_COLUMNS = ("unit", "rule_id", "pieces", "area_m2", "area_mu")
UNITS_COLUMNS = (
    "unit",
    "unit_area_m2",
    "pieces",
    "area_m2",
    "area_mu",
    "share",
    "high_m2",
    "medium_m2",
    "low_m2",
)
SITE_COLUMNS = ("layer", "class", "features", "area_m2", "area_mu", "share")
LEDGER_COLUMNS = ("adjust_plan", "opinion", "status")
"""The empty sign-off columns of the difference patches (调整方向, 处理意见, 状态)."""
SCENARIO_COLUMNS = (
    "id",
    "title",
    "area_mu",
    "net_revenue_per_mu",
    "gross_yuan",
    "cost_yuan",
    "net_yuan",
)
