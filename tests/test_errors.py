from multiplan.errors import InputError, LayerError, ManifestError, MultiplanError


def test_message_names_file_layer_key_feature_and_fix():
    err = LayerError(
        "duplicate ids.",
        path="a/b.shp",
        layer="tugui",
        key="layers.tugui.id_field",
        feature="7",
        hint="Give each feature its own id.",
    )
    assert str(err) == (
        "file a/b.shp, layer tugui, key layers.tugui.id_field, feature 7: duplicate ids. "
        "Give each feature its own id."
    )


def test_message_is_one_line_even_with_newlines():
    err = ManifestError("bad\nvalue", path="p.toml", hint="fix\nit")
    assert "\n" not in str(err)


def test_hierarchy_inherits_builtins():
    err = ManifestError("x")
    assert isinstance(err, InputError)
    assert isinstance(err, MultiplanError)
    assert isinstance(err, ValueError)
