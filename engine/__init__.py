"""nirlink engine: everything that turns a job file into published datasets.

Rooms: ``jobs/`` (job files, state machine, runner, registry, job log), ``stages/`` (one
module per stage: ingest, link, attach, aggregate, export), ``io/`` (readers, canonical
schemas, datasets and manifests), ``synth/`` (synthetic data), ``report/`` (the HTML report),
``reference/`` (PASS, SMIC, revaluation and cohort tables), ``cli/`` (the `nirlink` command);
settings (``nirlink.*`` of dask.config) in ``_config.py``, ``nirlink.yaml`` and its schema.
Heavy modules load on first use so that `nirlink --help` answers at once.
"""

from nirlink.kernels import (
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
from nirlink.kernels._lazy import lazy_front

_LAZY = {
    ".reference": ("cohort_table", "year_table"),
    ".synth": ("NoiseRates", "SynthParams", "synth"),
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
    *(name for names in _LAZY.values() for name in names),
]

__getattr__, __dir__ = lazy_front(__name__, _LAZY)
