"""nirlink.yaml (defaults) and nirlink-schema.yaml must describe the same keys."""

import dask.config
import pytest

from nirlink.engine import _config


def _walk_defaults(node, path=()):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _walk_defaults(value, (*path, key))
        else:
            yield (*path, key), value


def _walk_schema(node, path=()):
    for key, spec in node.get("properties", {}).items():
        if spec.get("type") == "object":
            yield from _walk_schema(spec, (*path, key))
        else:
            yield (*path, key), spec


def test_defaults_and_schema_have_the_same_keys():
    defaults = dict(_walk_defaults(_config.defaults()))
    schema = dict(_walk_schema(_config.schema()))
    assert set(defaults) == set(schema), (set(defaults) ^ set(schema))


def test_every_schema_key_is_described_and_every_default_validates():
    schema = dict(_walk_schema(_config.schema()))
    for path, spec in schema.items():
        assert spec.get("description"), f"{'.'.join(path)} has no description"
        assert spec.get("type") in {"integer", "number", "string", "boolean"}, path
    assert _config.validate(_config.defaults()) == []


def test_every_default_has_a_comment_in_the_yaml():
    from importlib import resources

    text = resources.files("engine").joinpath("nirlink.yaml").read_text()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped and not stripped.split("#")[0].strip().endswith(":"):
            assert "#" in stripped, f"no comment on: {stripped}"


def test_defaults_are_registered_under_the_nirlink_namespace():
    assert dask.config.get("nirlink.synth.noise.missing-nir") == _config.defaults()["nirlink"]["synth"]["noise"]["missing-nir"]
    with dask.config.set({"nirlink.synth.seed": 42}):
        assert _config.get("synth.seed") == 42


@pytest.mark.parametrize(
    "tree,path,fragment",
    [
        ({"nirlink": {"synth": {"sed": 1}}}, "nirlink.synth.sed", "unknown setting"),
        ({"nirlink": {"synth": {"seed": "x"}}}, "nirlink.synth.seed", "expected an integer"),
        ({"nirlink": {"synth": {"noise": {"missing-nir": 1.5}}}}, "nirlink.synth.noise.missing-nir", "<= 1"),
        ({"nirlink": {"synth": {"noise": 3}}}, "nirlink.synth.noise", "expected a table"),
    ],
)
def test_validate_names_the_bad_key(tree, path, fragment):
    errors = _config.validate(tree)
    assert errors and errors[0][0] == path and fragment in errors[0][1]
