"""nirlink settings under the ``nirlink`` namespace of dask.config.

Defaults come from nirlink.yaml (a comment per key), described by nirlink-schema.yaml.
Importing engine registers the defaults; ``get`` reads a setting with the usual Dask
overrides (YAML files, DASK_NIRLINK__* environment variables, dask.config.set).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import dask.config
import yaml

__all__ = ["get", "defaults", "schema", "validate"]


def defaults() -> dict[str, Any]:
    return yaml.safe_load(resources.files("nirlink.engine").joinpath("nirlink.yaml").read_text(encoding="utf-8"))


def schema() -> dict[str, Any]:
    return yaml.safe_load(resources.files("nirlink.engine").joinpath("nirlink-schema.yaml").read_text(encoding="utf-8"))


dask.config.update_defaults(defaults())


def get(key: str, default: Any = None) -> Any:
    """A setting by dotted key below ``nirlink`` (``get("synth.seed")``)."""
    return dask.config.get(f"nirlink.{key}", default=default)


def validate(config: dict[str, Any], node: dict[str, Any] | None = None, path: str = "") -> list[tuple[str, str]]:
    """Check a (partial) config tree against the schema; returns ``(path, message)`` errors."""
    node = node if node is not None else schema()
    errors: list[tuple[str, str]] = []
    props = node.get("properties", {})
    for key, value in config.items():
        sub = f"{path}.{key}" if path else key
        if key not in props:
            errors.append((sub, f"unknown setting (expected one of: {', '.join(sorted(props))})"))
            continue
        spec = props[key]
        typ = spec.get("type")
        if typ == "object":
            if not isinstance(value, dict):
                errors.append((sub, "expected a table of settings"))
            else:
                errors.extend(validate(value, spec, sub))
            continue
        if value is None and spec.get("nullable"):
            continue
        ok = {
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
        }.get(typ, True)
        if not ok:
            errors.append((sub, f"expected {typ}, got {type(value).__name__} {value!r}"))
            continue
        if "minimum" in spec and value < spec["minimum"]:
            errors.append((sub, f"must be >= {spec['minimum']}, got {value!r}"))
        if "maximum" in spec and value > spec["maximum"]:
            errors.append((sub, f"must be <= {spec['maximum']}, got {value!r}"))
        if "enum" in spec and value not in spec["enum"]:
            errors.append((sub, f"must be one of {spec['enum']}, got {value!r}"))
    return errors
