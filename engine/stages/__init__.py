"""The stages of a job, one module each: ingest (with its row checks in _ingest_rows and
_ingest_checks), link (the phases live in nirlink.linkage), attach (an increment's in
_attach_increment), aggregate (per-partition work in _aggregate_partitions, an increment's
reuse of the previous job's outputs in _aggregate_increment), signals (rules in _signals_rules, settings and case schemas
in _signals_settings) and export. Each reads published datasets and publishes its own
directory atomically with a manifest."""

from nirlink.kernels._lazy import lazy_front

_LAZY = {
    "._ingest": ("run_ingest", "ingested_rows_sql"),
    "._link": ("run_link", "ingested_files", "identity_files"),
    "._attach": ("run_attach", "declared_persons"),
    "._aggregate": ("run_aggregate",),
    "._aggregate_partitions": ("career_partition", "resource_partition"),
    "._signals": ("run_signals",),
    "._signals_settings": ("SignalSettings",),
    "._export": ("run_export", "load_key", "pseudonymise"),
}

__all__ = [name for names in _LAZY.values() for name in names]

__getattr__, __dir__ = lazy_front(__name__, _LAZY)
