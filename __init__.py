"""nirlink: link career and resource records to the identity register, aggregate them per person.

The installed package. Its subpackages are the repository's top-level folders, mapped under
this one name by pyproject.toml (``[tool.setuptools] package-dir = {nirlink = "."}``):
``nirlink.kernels`` <- ``nirlink.linkage`` <- ``nirlink.engine`` -> ``nirlink.cluster``
(imports point that way only; tests/test_layout.py checks it).
"""

__all__ = ["__version__", "version"]


def version() -> str:
    """The installed nirlink's version ("0+unknown" when running from a source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("nirlink")
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return version()
    raise AttributeError(f"module 'nirlink' has no attribute {name!r}")
