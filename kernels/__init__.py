"""nirlink kernels: Numba loops over numpy/Arrow buffers and their validating wrappers.

No Dask and no I/O here. The exception tree lives here because this is the lowest layer.
Kernels are imported lazily (Numba is slow to import), errors eagerly.
"""

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
    describe_error,
)
from ._lazy import lazy_front

_LAZY = {
    "._format": ("format_dates", "format_digits"),
    "._nir": ("format_nir", "nir_key"),
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
    "describe_error",
    *(name for names in _LAZY.values() for name in names),
]

__getattr__, __dir__ = lazy_front(__name__, _LAZY)
