"""Reference tables shipped with nirlink (PASS, SMIC, salary validating a quarter, SAM
revaluation, cohort rules), read from the TSV files beside this module (sources in README.md)."""

from nirlink.kernels._lazy import lazy_front

_LAZY = {
    "._tables": ("AspaTable", "CohortTable", "FRF_PER_EUR", "YearTable", "aspa_table", "cohort_table", "year_table"),
}

__all__ = [name for names in _LAZY.values() for name in names]

__getattr__, __dir__ = lazy_front(__name__, _LAZY)
