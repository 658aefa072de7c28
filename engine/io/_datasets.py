"""Datasets at rest: Parquet writing, atomic publication of a stage's output, manifests.

A stage writes everything under a hidden temporary directory next to its final place and
publishes it with one rename, so readers never see half a stage and a failed stage leaves
the previous published output untouched. The manifest (``_manifest.json``) records each
dataset's schema, files, row counts and checksums.

Privacy: datasets hold NIRs, names and birth dates, so every directory nirlink creates is
made with ``nirlink.privacy.directory-mode`` (0700) and every file it writes gets
``nirlink.privacy.file-mode`` (0600); a stage's directory is swept to those modes before it
is published, whatever wrote into it (DuckDB, a worker with another umask). Directories
that already exist are left alone: nirlink never loosens or tightens what it did not create.
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

__all__ = ["write_parquet", "staged_directory", "sweep_temporaries", "describe_dataset", "file_sha256", "write_json",
           "read_json", "WRITE_OPTIONS", "dictionary_columns", "statistics_columns", "column_options", "delta_columns", "private_modes", "make_private_dir", "apply_private_modes", "link_or_copy"]

# store_decimal_as_integer: money (decimal(18, 2), engine/io/_money.py) as Parquet INT64 of
# cents, which zstd compresses (fixed 16-byte arrays otherwise)
WRITE_OPTIONS = dict(compression="zstd", compression_level=1, write_statistics=True, store_decimal_as_integer=True)


def private_modes() -> tuple[int, int]:
    """(directory mode, file mode) from the settings ``nirlink.privacy.*``."""
    from nirlink.engine import _config

    return int(_config.get("privacy.directory-mode", "0700"), 8), int(_config.get("privacy.file-mode", "0600"), 8)


def make_private_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` and its missing parents with the private directory mode (those that
    exist keep theirs)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    if missing:
        mode = private_modes()[0]
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):
                d.mkdir(mode=mode)
                os.chmod(d, mode)  # mkdir's mode is filtered by the umask
    elif not path.is_dir():
        path.mkdir()  # not a directory: raise the usual FileExistsError / NotADirectoryError
    return path


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """``dst`` as a hard link of ``src`` (its parents created private), or a copy keeping its
    mode where the file system refuses links; returns ``"hardlink"`` or ``"copy"``."""
    make_private_dir(Path(dst).parent)
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:
        shutil.copy2(src, dst)
        return "copy"


def apply_private_modes(root: str | os.PathLike) -> None:
    """Give ``root`` and everything below it the private modes (files and directories this
    user does not own are left as they are)."""
    dir_mode, file_mode = private_modes()
    with contextlib.suppress(PermissionError):
        os.chmod(root, dir_mode)
    for here, dirs, files in os.walk(root):
        for name in dirs:
            with contextlib.suppress(PermissionError, FileNotFoundError):
                os.chmod(os.path.join(here, name), dir_mode)
        for name in files:
            with contextlib.suppress(PermissionError, FileNotFoundError):
                os.chmod(os.path.join(here, name), file_mode)


ROW_ID_COLUMNS = frozenset({"record_id", "row_number", "signature"})


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth a Parquet dictionary: strings, dates and integers repeat. Not amounts
    (nearly all distinct) nor a row's own ids (ROW_ID_COLUMNS): the writer builds their
    dictionary, overflows its page and falls back to plain - measured on 2M attached rows, 20%
    of the write time for files 12% larger."""
    return [f.name for f in schema if not (pa.types.is_floating(f.type) or pa.types.is_decimal(f.type))
            and not pa.types.is_nested(f.type)
            and f.name not in ROW_ID_COLUMNS]


def statistics_columns(schema: pa.Schema) -> list[str] | bool:
    """Columns with min/max statistics: ids, numbers, dates (row groups pruned by record id or
    period) and the person (what readers of the exports select on). Not the other strings:
    their statistics were 35% of an ingested file's write and nothing prunes on them."""
    return [f.name for f in schema if not (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
            or f.name == "person"] or False


DELTA_COLUMNS = frozenset({"record_id", "row_number"})  # increasing within a file, or within a person's run
# amounts held at a ceiling for many rows (the PASS): plain, where zstd finds the repeats
PLAIN_AMOUNTS = frozenset({"capped_salary", "revalued_capped_salary"})


def _is_cents(field: pa.Field) -> bool:
    """An amount of money as nirlink stores it: decimal(18, 2) or narrower, written as Parquet
    INT64 cents (store_decimal_as_integer)."""
    return pa.types.is_decimal(field.type) and field.type.precision <= 18


def delta_columns(schema: pa.Schema) -> dict[str, str]:
    """Parquet DELTA_BINARY_PACKED for the integer row ids that mostly increase (DELTA_COLUMNS;
    not ``signature``, a hash): measured on the ingested rows at 200,000 persons, record_id and
    row_number went from 1.0 byte a row each to nearly nothing (50 of 251 MB), and record_id
    of the exported rows (sorted by person, then record id) from 1.1 to 0.25 byte a row.
    And for amounts (cents, _is_cents) but PLAIN_AMOUNTS: a person's amounts lie close to one
    another (a salary from one year or month to the next), rows and aggregates are in person
    order, and zstd does not see numeric closeness in plain INT64s. At 200,000 persons
    (plain -> delta, zstd level 1 both): exported career rows' gross_salary 22.4 -> 19.3 MB,
    resource rows' amount 46.6 -> 42.5, resource_person_month's amount_salary 26.3 -> 23.7,
    resource_person_review's income_12m 14.3 -> 12.7, career_person_year's gross_salary 13.1 ->
    11.9; the ingested rows' (in input order) 10-14% smaller too, and delta writes faster than
    plain + zstd. capped_salary and revalued_capped_salary grow with delta (10.8 -> 11.6 MB):
    their ceiling repeats. BYTE_STREAM_SPLIT was 2-6% smaller still, but readers on Parquet
    libraries older than 2024 (parquet-java 1.13: Spark 3.5) cannot read it on integers."""
    return {f.name: "DELTA_BINARY_PACKED" for f in schema
            if (f.name in DELTA_COLUMNS and pa.types.is_integer(f.type))
            or (_is_cents(f) and f.name not in PLAIN_AMOUNTS)}


def column_options(schema: pa.Schema) -> dict[str, Any]:
    """The writer's options for ``schema`` (WRITE_OPTIONS and the per-column choices above)."""
    return {**WRITE_OPTIONS, "use_dictionary": dictionary_columns(schema), "write_statistics": statistics_columns(schema),
            "column_encoding": delta_columns(schema) or None}


def write_parquet(table: pa.Table, path: str | os.PathLike, **options: Any) -> None:
    """Write ``table`` to ``path`` through a temporary name (a reader never sees a partial file)."""
    path = Path(path)
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    defaults = column_options(table.schema)
    if any(pa.types.is_nested(f.type) for f in table.schema):  # the writer's own dictionary choice
        del defaults["use_dictionary"]
        defaults["column_encoding"] = None
    pq.write_table(table, tmp, **{**defaults, **options})
    os.chmod(tmp, private_modes()[1])
    os.replace(tmp, path)


@contextlib.contextmanager
def staged_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success it replaces ``final`` at once.

    On failure the temporary directory is removed and ``final`` is left as it was.
    """
    final = Path(final)
    make_private_dir(final.parent)
    # leftovers of an attempt that died (its process killed) are garbage now
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(mode=private_modes()[0])
    try:
        os.chmod(tmp, private_modes()[0])
        yield tmp
        apply_private_modes(tmp)
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


def sweep_temporaries(directory: str | os.PathLike) -> list[str]:
    """Remove what staged directories and atomic writes leave in ``directory`` when their
    process dies or their tasks outlive them: ``.<name>.tmp-*``, ``.<name>.old-*``,
    ``.aggregate-input`` (the aggregate stage's scratch) and half-written ``.*.tmp`` files.
    Only for the holder of the job directory's lock: no other run writes there. Returns the
    names removed."""
    root = Path(directory)
    removed = []
    for p in sorted(root.glob(".*")) if root.is_dir() else []:
        name = p.name
        if ".tmp-" in name or ".old-" in name or name == ".aggregate-input" or (name.endswith(".tmp") and p.is_file()):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(name)
    return removed


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
    # the digests on every core this process may use (hashlib and file reads release the GIL):
    # a stage describes its output once its tasks are done, while the workers wait; one thread
    # took 0.66 s for the 717 MB of ingested career rows at 2M persons, two 0.31 s
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, min(len(files), len(os.sched_getaffinity(0))))) as pool:
        digests = list(pool.map(file_sha256, files))
    for f, digest in zip(files, digests):
        meta = pq.read_metadata(f)
        total += meta.num_rows
        if schema is None:
            schema = pq.read_schema(f)
        entries.append({"path": str(f.relative_to(base)), "rows": meta.num_rows, "sha256": digest})
    return {
        "rows": total,
        "files": entries,
        "schema": [{"name": fld.name, "type": str(fld.type), "nullable": fld.nullable} for fld in schema] if schema else [],
    }


def write_json(path: str | os.PathLike, data: Any) -> None:
    path = Path(path)
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, private_modes()[1])
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.chmod(tmp, private_modes()[1])
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
