"""nirlink kernels: Numba loops over numpy/Arrow buffers and their validating wrappers.

No Dask and no I/O here. The exception tree lives here because this is the lowest layer.
Kernels are imported lazily (Numba is slow to import), errors eagerly.
"""

import importlib

from ._errors import (
    ClusterError,
    InputError,
    InputFileError,
    JobCancelled,
    JobError,
    ModelError,
    NirlinkError,
    ReferenceDataError,
    SchemaError,
    SpecError,
    StageError,
)

_LAZY = {
    "format_dates": "._format",
    "format_digits": "._format",
    "format_nir": "._nir",
    "nir_key": "._nir",
}

__all__ = [
    "ClusterError",
    "InputError",
    "InputFileError",
    "JobCancelled",
    "JobError",
    "ModelError",
    "NirlinkError",
    "ReferenceDataError",
    "SchemaError",
    "SpecError",
    "StageError",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")
