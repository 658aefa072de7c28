"""nirlink: link career and resource records to the identity register, aggregate them per person.

The installed package. Its subpackages are the repository's top-level folders, mapped under
this one name by pyproject.toml (``[tool.setuptools] package-dir = {nirlink = "."}``):
``nirlink.kernels`` <- ``nirlink.linkage`` <- ``nirlink.engine`` -> ``nirlink.cluster``
(imports point that way only; tests/test_layout.py checks it).
"""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from nirlink.engine.jobs._registry import version

        return version()
    raise AttributeError(f"module 'nirlink' has no attribute {name!r}")
