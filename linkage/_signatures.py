"""Phase 1 of the link stage: distinct identity signatures of the ingested rows, per source.

Rows repeat a person's identity tens of times, so linkage works on signatures. The ingest
stage, which holds each row's identity columns in memory, hashes them to the row's
``signature`` and writes each part file's distinct signatures with their identity columns
once (``ingest/identities/``). Map tasks read those, derive the linkage columns and spread
the signatures over buckets by id (no row of the parts is read); reduce tasks merge
each bucket (checking for 64-bit collisions) into signatures/part-<b>.parquet.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels import InputError, StageError

from ._buckets import key_hash, read_bucket, sorted_id_options, write_buckets
from ._config import LinkConfig
from ._prepare import LINK_COLUMNS, RECORD_INPUT_COLUMNS, records_table
from ._tasks import Progress, run_tasks

__all__ = ["SOURCES", "SIGNATURE_SCHEMA", "build_signatures", "signature_files", "distinct_signatures"]

SOURCES = ("career", "resource")
SIGNATURE_SCHEMA = pa.schema([*LINK_COLUMNS, pa.field("rows", pa.int64(), nullable=False),
                              pa.field("sources", pa.int8(), nullable=False)])

FILES_PER_MAP = 4  # identities files (one per ingested part of about a million rows) read by one map task


def distinct_signatures(path: str) -> pa.Table:
    """The distinct signatures of an ingested part file of rows, from its identities file (the
    ingest stage writes each signature's identity columns there once, with the number of the
    part's rows that carry it): their linkage columns and ``rows``."""
    schema = pq.read_schema(path)
    missing = [c for c in ("signature", *RECORD_INPUT_COLUMNS, "rows") if c not in schema.names]
    if missing:
        raise InputError(f"{path}: not the identities of ingested rows (no {', '.join(missing)}): ingested by an "
                         "older nirlink; run the job with --restart")
    t = pq.read_table(path, columns=["signature", *RECORD_INPUT_COLUMNS, "rows"], use_threads=False)
    rec = records_table(t.select(RECORD_INPUT_COLUMNS))
    if not np.array_equal(rec.column("unique_id").to_numpy(), t.column("signature").to_numpy()):
        raise StageError(f"{path}: a stored signature differs from its identity's hash")
    return rec.append_column(pa.field("rows", pa.int64(), nullable=False), t.column("rows"))


def _sig_map(files: Sequence[str], source: int, work: str, n_buckets: int, part: str) -> dict[str, int]:
    parts = [distinct_signatures(f) for f in files]
    if not parts:
        return {"rows": 0, "distinct": 0}
    rec = pa.concat_tables(parts).combine_chunks()
    rows = int(pc.sum(rec.column("rows")).as_py() or 0)
    uniq, first, inverse = np.unique(rec.column("unique_id").to_numpy(), return_index=True, return_inverse=True)
    # each id's first row carries the id's rows; only those rows are written, taken once into
    # their buckets (taking them first into a table of distinct ids, then into buckets, was a
    # tenth of the map's CPU at 2M persons)
    merged = np.zeros(rec.num_rows, np.int64)
    merged[first] = np.bincount(inverse, weights=rec.column("rows").to_numpy(), minlength=len(uniq)).astype(np.int64)
    rec = rec.set_column(rec.schema.get_field_index("rows"), "rows", pa.array(merged))
    rec = rec.append_column("sources", pa.array(np.full(rec.num_rows, 1 << source, np.int8)))
    h, valid = key_hash(rec.select(["unique_id"]), ["unique_id"])
    keep = np.zeros(rec.num_rows, bool)
    keep[first] = True
    write_buckets(rec, h, valid & keep, n_buckets, Path(work) / "tmp" / "signatures", part, scratch=True)
    return {"rows": rows, "distinct": len(uniq), "source": source}


# the identity fields a signature id hashes (as the link columns hold them): rows of one id must agree on all
_COLLISION_COLUMNS = ("nir_body", "last_name_key", "first_names_norm", "birth_year", "birth_month", "birth_day")


def _sig_reduce(work: str, bucket: int) -> dict[str, Any]:
    """Merge a bucket's signatures: one row per id (its first in the files' order), the rows
    summed and the sources or'ed. Only the distinct rows are taken, once (taking every row
    into id order, then the distinct ones, took 0.75 of a 2.1 s bucket of 1.18M rows at 2M
    persons), and only the repeated rows are compared with their id's first."""
    t = read_bucket(Path(work) / "tmp" / "signatures", bucket, SIGNATURE_SCHEMA)
    if t.num_rows:
        ids = t.column("unique_id").to_numpy()
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        new = np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]
        starts = np.flatnonzero(new)
        first = order[starts]
        rows = np.add.reduceat(t.column("rows").to_numpy()[order], starts)
        sources = np.bitwise_or.reduceat(t.column("sources").to_numpy()[order], starts)
        # a 64-bit collision would merge two different identities: detect it
        repeated = order[~new]
        if len(repeated):
            their_first = pa.array(first[(np.cumsum(new) - 1)[~new]])
            repeated = pa.array(repeated)
            for c in _COLLISION_COLUMNS:
                x, y = t.column(c).take(repeated), t.column(c).take(their_first)
                same = pc.or_kleene(pc.equal(x, y), pc.and_(pc.is_null(x), pc.is_null(y)))
                if not pc.all(pc.fill_null(same, False)).as_py():
                    raise StageError(f"signature ids: a 64-bit hash collision in bucket {bucket}; rerun is not "
                                     "enough, report it (two different identities got the same id)")
        t = t.take(pa.array(first)).set_column(SIGNATURE_SCHEMA.names.index("rows"), "rows", pa.array(rows))
        t = t.set_column(SIGNATURE_SCHEMA.names.index("sources"), "sources", pa.array(sources.astype(np.int8)))
    pq.write_table(t, Path(work) / "signatures" / f"part-{bucket:05d}.parquet",  # sorted by unique_id (above)
                   **sorted_id_options(t.schema, "unique_id"))
    src = t.column("sources").to_numpy() if t.num_rows else np.zeros(0, np.int8)
    return {"signatures": t.num_rows, **{f"signatures_{s}": int(((src >> i) & 1).sum()) for i, s in enumerate(SOURCES)}}


def build_signatures(identities: dict[str, Sequence[str]], work: Path, cfg: LinkConfig, *, client=None,
                     progress: Progress | None = None) -> dict[str, Any]:
    """Distinct signatures of the ingested rows of each source, from the identities files of
    their parts (``identities``: the files by source); counts rows and signatures per source."""
    (work / "signatures").mkdir(parents=True, exist_ok=True)
    args = []
    for s, source in enumerate(SOURCES):
        files = identities.get(source, [])
        for i in range(0, len(files), FILES_PER_MAP):
            args.append((files[i:i + FILES_PER_MAP], s, str(work), cfg.signature_buckets, f"{source}-{i:05d}"))
    if not args:
        raise InputError("link: no career or resource rows to link")
    maps = run_tasks(client, _sig_map, args, name="signatures-map", progress=progress,
                     rows=lambda m: m["rows"])
    reduces = run_tasks(client, _sig_reduce, [(str(work), b) for b in range(cfg.signature_buckets)],
                        name="signatures-reduce", progress=progress)
    shutil.rmtree(work / "tmp" / "signatures", ignore_errors=True)
    out: dict[str, Any] = {"signatures": sum(r["signatures"] for r in reduces)}
    for s, source in enumerate(SOURCES):
        out[f"rows_{source}"] = sum(m["rows"] for m in maps if m.get("source") == s)
        out[f"signatures_{source}"] = sum(r[f"signatures_{source}"] for r in reduces)
    out["rows"] = sum(out[f"rows_{s}"] for s in SOURCES)
    return out


def signature_files(work: Path) -> list[str]:
    return [str(p) for p in sorted((work / "signatures").glob("part-*.parquet"))]


