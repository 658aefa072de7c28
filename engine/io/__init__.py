"""Data in and out: readers of CSV and Parquet inputs in bounded chunks, the canonical Arrow
schemas with the reject reasons, and published datasets (atomic directories, manifests,
Parquet and JSON writers)."""

from nirlink.kernels._lazy import lazy_front

_LAZY = {
    "._readers": ("CsvOptions", "InputSpec", "expand_paths", "plan_input", "read_chunks"),
    "._schemas": ("ACCEPTED_SCHEMAS", "COLUMNS", "IDENTITY_SCHEMA", "INGESTED_ROW_COLUMNS", "INPUT_KINDS", "REASONS",
                  "rejects_schema"),
    "._datasets": ("describe_dataset", "read_json", "staged_directory", "write_json", "write_parquet"),
}

__all__ = [name for names in _LAZY.values() for name in names]

__getattr__, __dir__ = lazy_front(__name__, _LAZY)
