"""The link pipeline: signatures, register, deterministic pass, training, distributed scoring,
register deduplication, decisions. Every step is a batch of Dask tasks exchanging Parquet
files under a work directory (see _buckets.py), so memory per task stays bounded.

Layout of the work directory:
  signatures/part-<b>.parquet   distinct signatures, bucket b of the signature id
  register/part-<i>.parquet     the register's linkage columns
  deterministic/b=<b>/...       links of the deterministic pass, by signature bucket
  predictions/b=<b>/...         scored pairs of the probabilistic pass, by signature bucket
  register_edges/...            register pairs above the duplicate threshold
  links/part-<b>.parquet        one row per signature: person, method, probability, status
  model.json, register_model.json

The link stage runs in phases, one module each: _signatures, _register, _deterministic,
_frequencies and _training, _scoring, _dedupe, _decisions. This module holds their shared
sizes and thresholds.
"""

from __future__ import annotations

__all__ = ["LinkConfig"]


class LinkConfig:
    """Sizes and thresholds of a link run (engine settings ``nirlink.linkage.*``)."""

    def __init__(self, *, signature_buckets: int = 8, rows_per_scoring_task: int = 200_000,
                 duckdb_threads: int = 1, duckdb_memory_limit: str | None = "2GB", prediction_floor: float = 0.01,
                 today_year: int = 2026, evidence_floor: float | None = 0.0):
        self.signature_buckets = signature_buckets
        self.rows_per_scoring_task = rows_per_scoring_task
        self.duckdb_threads = duckdb_threads
        self.duckdb_memory_limit = duckdb_memory_limit
        self.prediction_floor = prediction_floor
        # candidates of the identity pipeline are kept from this many bits of evidence (their
        # Bayes factor, prior excluded) rather than from a probability, which would shrink
        # with the register's size
        self.evidence_floor = evidence_floor
        self.today_year = today_year


