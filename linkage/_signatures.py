"""Phase 1 of the link stage: distinct identity signatures of the ingested rows, per source.

Rows repeat a person's identity tens of times, so linkage works on signatures. The ingest
stage, which holds each row's identity columns in memory, hashes them to the row's
``signature`` and writes beside each accepted part file the part's distinct signatures with
their linkage columns and row counts (``_signatures/<input>/<part>``, ``distinct_signatures``:
a few percent of the rows). Map tasks merge those per group of files and spread them over
buckets by id; reduce tasks merge each bucket (checking for 64-bit collisions) into
signatures/part-<b>.parquet. No ingested row is read again.
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

from ._buckets import key_hash, read_bucket, write_buckets
from ._config import LinkConfig
from ._prepare import LINK_COLUMNS, RECORD_INPUT_COLUMNS, records_table
from ._tasks import Progress, run_tasks

__all__ = ["SOURCES", "SIGNATURE_SCHEMA", "SIDECAR_DIR", "build_signatures", "signature_files", "distinct_signatures",
           "sidecar_path"]

SOURCES = ("career", "resource")
SIGNATURE_SCHEMA = pa.schema([*LINK_COLUMNS, pa.field("rows", pa.int64(), nullable=False),
                              pa.field("sources", pa.int8(), nullable=False)])

FILES_PER_MAP = 8  # part files' distinct signatures merged by one map task (each a few percent of its rows)
SIDECAR_DIR = "_signatures"  # beside the ingested inputs' directories (an input's name never starts with '_')
SIDECAR_SCHEMA = pa.schema([*LINK_COLUMNS, pa.field("rows", pa.int64(), nullable=False)])


def sidecar_path(rows_file: str | Path) -> Path:
    """Where the ingest stage writes the distinct signatures of the accepted part ``rows_file``
    (``<ingest>/<input>/<part>`` -> ``<ingest>/_signatures/<input>/<part>``)."""
    p = Path(rows_file)
    return p.parent.parent / SIDECAR_DIR / p.parent.name / p.name


def distinct_signatures(rows: pa.Table) -> pa.Table:
    """The distinct signatures of ingested rows (their ``signature`` column): the linkage
    columns of each signature's first row and how many rows carry it."""
    ids = rows.column("signature").to_numpy()
    uniq, first, n = np.unique(ids, return_index=True, return_counts=True)
    rec = records_table(rows.select(RECORD_INPUT_COLUMNS).take(pa.array(first)))
    if not np.array_equal(rec.column("unique_id").to_numpy(), uniq):
        raise StageError("signatures: the rows' stored signature differs from their identity's hash")
    return rec.append_column(SIDECAR_SCHEMA.field("rows"), pa.array(n.astype(np.int64)))


def _sig_map(files: Sequence[str], source: int, work: str, n_buckets: int, part: str) -> dict[str, int]:
    parts = []
    for f in files:
        side = sidecar_path(f)
        if not side.exists():
            raise InputError(f"{f}: no distinct signatures beside it ({side}): the ingest stage writes them; "
                             "run it again (--restart)")
        parts.append(pq.read_table(side, use_threads=False))
    if not parts:
        return {"rows": 0, "distinct": 0}
    rec = pa.concat_tables(parts)
    rows = int(pc.sum(rec.column("rows")).as_py() or 0)
    uniq, first, inverse = np.unique(rec.column("unique_id").to_numpy(), return_index=True, return_inverse=True)
    local = rec.drop_columns(["rows"]).take(pa.array(first))
    local = local.append_column("rows", pa.array(np.bincount(inverse, weights=rec.column("rows").to_numpy(),
                                                             minlength=len(uniq)).astype(np.int64)))
    local = local.append_column("sources", pa.array(np.full(len(uniq), 1 << source, np.int8)))
    h, valid = key_hash(local, ["unique_id"])
    write_buckets(local, h, valid, n_buckets, Path(work) / "tmp" / "signatures", part)
    return {"rows": rows, "distinct": len(uniq), "source": source}


def _sig_reduce(work: str, bucket: int) -> dict[str, Any]:
    t = read_bucket(Path(work) / "tmp" / "signatures", bucket, SIGNATURE_SCHEMA)
    if t.num_rows:
        ids = t.column("unique_id").to_numpy()
        order = np.argsort(ids, kind="stable")
        t = t.take(pa.array(order))
        ids = ids[order]
        starts = np.r_[0, np.flatnonzero(ids[1:] != ids[:-1]) + 1]
        rows = np.add.reduceat(t.column("rows").to_numpy(), starts)
        sources = np.bitwise_or.reduceat(t.column("sources").to_numpy(), starts)
        # a 64-bit collision would merge two different identities: detect it
        fields = pc.binary_join_element_wise(*[pc.cast(pc.fill_null(pc.cast(t.column(c), pa.string()), "\x00"), pa.string())
                                               for c in ("nir_body", "last_name_key", "first_names_norm", "birth_year",
                                                         "birth_month", "birth_day")], "\x1f")
        firsts = fields.take(pa.array(np.repeat(starts, np.diff(np.r_[starts, len(ids)]))))
        if not pc.all(pc.equal(fields, firsts)).as_py():
            raise StageError(f"signature ids: a 64-bit hash collision in bucket {bucket}; rerun is not enough, "
                             "report it (two different identities got the same id)")
        t = t.take(pa.array(starts)).set_column(SIGNATURE_SCHEMA.names.index("rows"), "rows", pa.array(rows))
        t = t.set_column(SIGNATURE_SCHEMA.names.index("sources"), "sources", pa.array(sources.astype(np.int8)))
    pq.write_table(t, Path(work) / "signatures" / f"part-{bucket:05d}.parquet", compression="zstd")
    src = t.column("sources").to_numpy() if t.num_rows else np.zeros(0, np.int8)
    return {"signatures": t.num_rows, **{f"signatures_{s}": int(((src >> i) & 1).sum()) for i, s in enumerate(SOURCES)}}


def build_signatures(rows: dict[str, Sequence[str]], work: Path, cfg: LinkConfig, *, client=None,
                     progress: Progress | None = None) -> dict[str, Any]:
    """Distinct signatures of the ingested rows of each source; counts rows and signatures per source."""
    (work / "signatures").mkdir(parents=True, exist_ok=True)
    args = []
    for s, source in enumerate(SOURCES):
        files = rows.get(source, [])
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


