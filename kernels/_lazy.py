"""Lazy package fronts: a package's ``__init__`` names what it exports and where it lives, and
the module holding it is imported on first use (Numba, PyArrow, Dask and Splink are slow to
import; `nirlink --help` must answer at once)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["lazy_front"]


def lazy_front(package: str, modules: dict[str, tuple[str, ...]]
               ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``modules`` maps a module (relative to
    the package, e.g. ``"._runner"``) to the names the package exports from it."""
    names = {name: module for module, exported in modules.items() for name in exported}

    def __getattr__(name: str) -> object:
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
            setattr(importlib.import_module(package), name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(names) | set(vars(importlib.import_module(package))))

    return __getattr__, __dir__
