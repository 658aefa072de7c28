"""The job report: one self-contained HTML page per run, readable offline (the run and its
warnings, stage timings and counts, rejects, linkage rates, register duplicates, the Splink
charts, distributions of quarters and SAM), beside the run's Dask performance report."""

from nirlink.kernels._lazy import lazy_front

_LAZY = {
    "._page": ("write_report",),
}

__all__ = [name for names in _LAZY.values() for name in names]

__getattr__, __dir__ = lazy_front(__name__, _LAZY)
