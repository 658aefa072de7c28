"""Datasets at rest: Parquet writing, atomic publication of a stage's output, manifests.

A stage writes everything under a hidden temporary directory next to its final place and
publishes it with one rename, so readers never see half a stage and a failed stage leaves
the previous published output untouched. The manifest (``_manifest.json``) records each
dataset's schema, files, row counts and checksums.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["write_parquet", "staged_directory", "describe_dataset", "file_sha256", "write_json", "read_json",
           "WRITE_OPTIONS"]

WRITE_OPTIONS = dict(compression="zstd", compression_level=1, write_statistics=True)


def write_parquet(table: pa.Table, path: str | os.PathLike, **options: Any) -> None:
    """Write ``table`` to ``path`` through a temporary name (a reader never sees a partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    if "use_dictionary" not in options and not any(pa.types.is_nested(f.type) for f in table.schema):
        # amounts are nearly all distinct: trying a dictionary on them costs write time for
        # a larger file; strings, dates and integers repeat and keep their dictionaries
        options["use_dictionary"] = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
    pq.write_table(table, tmp, **{**WRITE_OPTIONS, **options})
    os.replace(tmp, path)


@contextlib.contextmanager
def staged_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success it replaces ``final`` at once.

    On failure the temporary directory is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # leftovers of an attempt that died (its process killed) are garbage now
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_dataset(directory: str | os.PathLike, *, relative_to: str | os.PathLike | None = None) -> dict[str, Any]:
    """Schema, files (with rows and sha256) and total rows of a directory of Parquet files."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith("."))
    base = Path(relative_to) if relative_to else directory
    entries, total, schema = [], 0, None
    for f in files:
        meta = pq.read_metadata(f)
        total += meta.num_rows
        if schema is None:
            schema = pq.read_schema(f)
        entries.append({"path": str(f.relative_to(base)), "rows": meta.num_rows, "sha256": file_sha256(f)})
    return {
        "rows": total,
        "files": entries,
        "schema": [{"name": fld.name, "type": str(fld.type), "nullable": fld.nullable} for fld in schema] if schema else [],
    }


def write_json(path: str | os.PathLike, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
