"""Colours by meaning, one scheme each: severity, grade, land class, zone, difference class.

Severity runs red–orange–yellow; grades run green (A) to purple (D), so that a D
parcel is never read as a high-severity conflict; land classes follow the usual
planning colours of 用地用海 level 1.
"""

from __future__ import annotations

GRADE_COLOURS = {"A": "#08519c", "B": "#6baed6", "C": "#bcbddc", "D": "#6a51a3"}
"""亩均效益 grades: blues for A and B, purples for C and D (never the severity reds)."""
SEVERITY_COLOURS = {"high": "#d7191c", "medium": "#f28e2b", "low": "#e6c619"}
"""Conflict severity: red, orange, yellow."""
DIFF_COLOURS = {"01": "#9e9e9e", "02": "#e7298a", "03": "#1b9e77", "04": "#d9d9d9"}
"""两规差异 classes: 02 (construction only in the first plan) magenta, 03 teal."""
CHANGE_COLOURS = {
    "added": "#1a9641",
    "removed": "#7b3294",
    "reclassified": "#fdae61",
    "same": "#d9d9d9",
}
"""Plan editions compared: land added (green), removed (purple), reclassified (orange)."""
#: Fill colours by 用地用海 level-1 class, after the usual planning colours.
CLASS_COLOURS = {
    "01": "#f3eea2",
    "02": "#bfe3a0",
    "03": "#5fa75e",
    "04": "#cdebb0",
    "05": "#7fcdbb",
    "06": "#d9d4b0",
    "07": "#ffd37f",
    "08": "#ff8fc7",
    "09": "#ff5a5a",
    "10": "#b08868",
    "11": "#a57fd1",
    "12": "#a6a6a6",
    "13": "#4f8fd1",
    "14": "#4cc35e",
    "15": "#7e8f3c",
    "16": "#e5e5e5",
    "17": "#74b7e8",
    "18": "#9ecae1",
    "19": "#9ecae1",
    "20": "#9ecae1",
    "21": "#9ecae1",
    "22": "#9ecae1",
    "23": "#cbbf9f",
    "24": "#9ecae1",
}
#: Outline styles of zone tags (constraint layers): stroke colour, fill colour, dash.
ZONE_STYLES = {
    "eco_redline": ("#1a9850", "#1a9850", "6 3"),
    "basic_farmland": ("#b8860b", "#e8d35c", None),
    "urban_boundary": ("#c51b7d", None, "10 4"),
    "industrial_park": ("#6a3d9a", "#cab2d6", "4 3"),
    "transport_corridor": ("#555555", "#999999", None),
}
OTHER_ZONE = ("#444444", "#bbbbbb", "3 3")
