"""What the rules of a check need of the layers: which to read, and that they fit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from multiplan.errors import LayerError, RulePackError
from multiplan.layers import public_fields, unit_names

if TYPE_CHECKING:
    from collections.abc import Sequence

    from multiplan.layers import Layers
    from multiplan.rules import Rule
    from multiplan.specs import Project


def layers_needed(project: Project, rules: Sequence[Rule]) -> list[str]:
    """Return the layers the rules read, in manifest order, with the boundary and units."""
    names: dict[str, None] = {}
    for r in rules:
        names[r.a.layer] = None
        names[r.b.layer] = None
    if rules:
        for extra in context_layers(project):
            names[extra] = None
    return [n for n in project.layers if n in names]


def context_layers(project: Project) -> list[str]:
    """Return the layers every rule reads beside its own: the boundary and the units."""
    return [n for n in (project.boundary, *project.units) if n]


def check_layers_for_rules(
    project: Project,
    rules: Sequence[Rule],
    layers: Layers,
    *,
    allow_unmapped: bool,
) -> None:
    """Check what needs the data: geometry families, filter fields, unmapped codes.

    Raises
    ------
    LayerError, RulePackError
        Naming the layer or rule and the fix.
    """
    for key, name in (("boundary", project.boundary), ("units", project.unit_layer)):
        if name and name in layers and layers.layer(name).family != "polygon":
            raise LayerError(
                f"the {key} layer must be polygons, not {layers.layer(name).family}s",
                path=project.path,
                key=f"project.{key}",
                layer=name,
            )
    for name in project.units:
        if name in layers:
            unit_names(project, layers, name)
    for rule in rules:
        for side, sel in (("a", rule.a), ("b", rule.b)):
            frame = layers[sel.layer]
            for fld in sel.where.fields:
                if fld not in frame.columns:
                    raise RulePackError(
                        f"the filter reads a field {fld!r} that layer {sel.layer!r} does not have",
                        path=rule.pack,
                        key=f"rule {rule.id}.{side}.where",
                        hint=f"Fields are: {', '.join(public_fields(frame))}",
                    )
        fam_a = layers.layer(rule.a.layer).family
        if fam_a != "polygon":
            raise RulePackError(
                f"layer {rule.a.layer!r} holds {fam_a}s, which cannot be the A side of a rule",
                path=rule.pack,
                key=f"rule {rule.id}.a.layer",
                hint=f"Give layers.{rule.a.layer} a buffer or width_field, or use it as B with distance > 0",
            )
        fam_b = layers.layer(rule.b.layer).family
        if fam_b != "polygon" and rule.distance <= 0:
            raise RulePackError(
                f"layer {rule.b.layer!r} holds {fam_b}s, which need distance > 0 on the B side",
                path=rule.pack,
                key=f"rule {rule.id}.distance",
                hint=f"Set distance = <metres>, or give layers.{rule.b.layer} a buffer or width_field",
            )
    if not allow_unmapped:
        for name in layers:
            layer = layers.layer(name)
            if layer.stats.unmapped:
                codes = ", ".join(
                    f"{k} ({v})" for k, v in list(layer.stats.unmapped.items())[:8]
                )
                raise LayerError(
                    f"{sum(layer.stats.unmapped.values())} features carry source codes that the crosswalk "
                    f"{layer.spec.classification!r} does not map: {codes}",
                    path=layer.spec.source,
                    layer=name,
                    key=f"layers.{name}.classification",
                    hint="Add rows for them to the crosswalk, or run with --allow-unmapped (their class is then null)",
                )
