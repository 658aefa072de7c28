"""nirlink settings under the ``nirlink`` namespace of dask.config.

Defaults come from nirlink.yaml (a comment per key), described by nirlink-schema.yaml.
Importing engine registers the defaults; ``get`` reads a setting with the usual Dask
overrides (YAML files, DASK_NIRLINK__* environment variables, dask.config.set) and checks
it against the schema, so a bad value is an error naming the setting, not a stray
``ValueError`` deep in a stage. Keys the schema does not know (a misspelt override) are
ignored by nirlink; ``unknown_settings`` lists them so the command line can warn.
"""

from __future__ import annotations

import difflib
import os
import re
from functools import cache
from importlib import resources
from typing import Any

import dask.config
import yaml

__all__ = ["get", "defaults", "schema", "validate", "unknown_settings", "effective_settings", "sources"]


def defaults() -> dict[str, Any]:
    return yaml.safe_load(resources.files("nirlink.engine").joinpath("nirlink.yaml").read_text(encoding="utf-8"))


@cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(resources.files("nirlink.engine").joinpath("nirlink-schema.yaml").read_text(encoding="utf-8"))


def schema() -> dict[str, Any]:
    return _schema()


dask.config.update_defaults(defaults())


def _canonical(key: str) -> str:
    # Dask treats '-' and '_' in keys alike (environment variables can only spell '_')
    return key.replace("_", "-")


def _node(key: str) -> dict[str, Any] | None:
    """The schema entry of a dotted key below ``nirlink`` (None when unknown)."""
    node = _schema()["properties"]["nirlink"]
    for part in key.split("."):
        node = node.get("properties", {}).get(_canonical(part)) if node.get("type") == "object" else None
        if node is None:
            return None
    return node


def get(key: str, default: Any = None) -> Any:
    """A setting by dotted key below ``nirlink`` (``get("synth.seed")``), checked against the
    schema: a value of the wrong type or out of range raises a SpecError naming the setting."""
    value = dask.config.get(f"nirlink.{key}", default=default)
    node = _node(key)
    if node is not None and value is not None:
        if node.get("type") == "object":
            problems = [(p, m) for p, m in validate(value, node, f"nirlink.{key}") if "unknown setting" not in m]
        else:
            problems = [(f"nirlink.{key}", m) for m in _check_leaf(node, value)]
        if problems:
            from nirlink.kernels import SpecError

            raise SpecError([(p, f"{m} {_where(p)}") for p, m in problems], source="settings")
    return value


def _where(path: str) -> str:
    env = "DASK_" + path.upper().replace(".", "__").replace("-", "_")
    return f"(set in a YAML file under {', '.join(_config_dirs())} or by {env})"


def _config_dirs() -> list[str]:
    return [p for p in dict.fromkeys(dask.config.paths) if os.path.isdir(p)] or ["~/.config/dask"]


def _check_leaf(spec: dict[str, Any], value: Any) -> list[str]:
    if value is None and spec.get("nullable"):
        return []
    typ = spec.get("type")
    ok = {
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
    }.get(typ, True)
    if not ok:
        article = "an" if typ == "integer" else "a"
        return [f"expected {article} {typ}, got {value!r}"]
    problems = []
    if "minimum" in spec and value < spec["minimum"]:
        problems.append(f"must be >= {spec['minimum']}, got {value!r}")
    if "maximum" in spec and value > spec["maximum"]:
        problems.append(f"must be <= {spec['maximum']}, got {value!r}")
    if "enum" in spec and value not in spec["enum"]:
        problems.append(f"must be one of {spec['enum']}, got {value!r}")
    if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
        problems.append(f"must match {spec['pattern']}, got {value!r}")
    return problems


def validate(config: dict[str, Any], node: dict[str, Any] | None = None, path: str = "") -> list[tuple[str, str]]:
    """Check a (partial) config tree against the schema; returns ``(path, message)`` errors."""
    node = node if node is not None else _schema()
    errors: list[tuple[str, str]] = []
    props = node.get("properties", {})
    for key, value in config.items():
        sub = f"{path}.{key}" if path else key
        spec = props.get(_canonical(key))
        if spec is None:
            close = difflib.get_close_matches(_canonical(key), list(props), n=1)
            hint = f"did you mean {close[0]}?" if close else f"expected one of: {', '.join(sorted(props))}"
            errors.append((sub, f"unknown setting ({hint})"))
            continue
        if spec.get("type") == "object":
            if not isinstance(value, dict):
                errors.append((sub, "expected a table of settings"))
            else:
                errors.extend(validate(value, spec, sub))
            continue
        errors.extend((sub, m) for m in _check_leaf(spec, value))
    return errors


def unknown_settings() -> list[tuple[str, str]]:
    """``(dotted key, hint)`` of every ``nirlink.*`` key set that the schema does not know."""
    tree = dask.config.config.get("nirlink", {})
    if not isinstance(tree, dict):
        return [("nirlink", "expected a table of settings")]
    return [(p, m.removeprefix("unknown setting ").strip("()"))
            for p, m in validate(tree, _schema()["properties"]["nirlink"], "nirlink")
            if m.startswith("unknown setting")]


def _leaves(node: dict[str, Any], path: str):
    for key, spec in node.get("properties", {}).items():
        sub = f"{path}.{key}"
        if spec.get("type") == "object":
            yield from _leaves(spec, sub)
        else:
            yield sub, spec


def effective_settings() -> list[dict[str, Any]]:
    """Every known setting with its effective value, its default, whether it was changed and
    any problem with it; then the unknown keys that are set (ignored)."""
    base = defaults()
    out = []
    for path, spec in _leaves(_schema()["properties"]["nirlink"], "nirlink"):
        value = dask.config.get(path, default=None)
        default: Any = base
        for part in path.split("."):
            default = default.get(part) if isinstance(default, dict) else None
        problems = _check_leaf(spec, value)
        out.append({"setting": path, "value": value, "default": default, "changed": value != default,
                    "description": spec.get("description", ""), "problem": "; ".join(problems) or None})
    for path, hint in unknown_settings():
        out.append({"setting": path, "value": dask.config.get(path, default=None), "default": None, "changed": True,
                    "description": "", "problem": f"unknown setting, ignored ({hint})"})
    return out


def sources() -> dict[str, list[str]]:
    """Where overrides can come from: the YAML directories Dask reads (those that exist) and
    the ``DASK_NIRLINK__*`` environment variables that are set."""
    files = []
    for d in dict.fromkeys(dask.config.paths):
        if os.path.isdir(d):
            files += sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith((".yaml", ".yml")))
    env = sorted(k for k in os.environ if k.upper().startswith("DASK_NIRLINK__"))
    return {"yaml_files": files, "environment": env}
