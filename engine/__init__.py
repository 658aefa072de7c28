"""nirlink engine: job specs, stages, the runner, datasets and manifests, the CLI, synthetic data.

Heavy modules load on first use so that `nirlink --help` answers at once.
"""

import importlib

from kernels import (
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
    "config": (".", "_config"),
    "cohort_table": ("._reference", "cohort_table"),
    "year_table": ("._reference", "year_table"),
    "NoiseRates": ("._synth", "NoiseRates"),
    "SynthParams": ("._synth", "SynthParams"),
    "synth": ("._synth", "synth"),
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
        module, attr = _LAZY[name]
        if module == ".":
            return importlib.import_module("." + attr, __name__)
        return getattr(importlib.import_module(module, __name__), attr)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
