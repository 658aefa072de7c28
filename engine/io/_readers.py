"""Input files: what a job names, checked before anything runs, then read in bounded chunks.

Planning opens every file (Parquet footer, CSV header) on the client and reports every
problem at once - missing files, unreadable or truncated Parquet, empty CSV, unknown
columns, incompatible types - before any task starts. Reading then happens in tasks:
Parquet by groups of row groups, CSV one file per task streamed batch by batch (a CSV
with quoted newlines cannot be split at arbitrary byte offsets), every chunk bounded by
``chunk_rows``.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nirlink.kernels import InputFileError, SchemaError

from ._csv_header import data_like_fields, sniff_csv
from ._schemas import COLUMNS, INPUT_KINDS

__all__ = ["CsvOptions", "InputSpec", "ChunkTask", "Chunk", "plan_input", "read_chunks", "expand_paths",
           "data_like_fields"]

SCAN_BYTES = 64 << 20


@dataclass(frozen=True)
class CsvOptions:
    separator: str = "auto"  # ';', ',', '\t', '|' or 'auto' (the most frequent of them in the header line)
    encoding: Literal["auto", "utf-8", "latin-1"] = "auto"
    decimal: Literal["auto", ".", ","] = "auto"
    quote: str = '"'


@dataclass(frozen=True)
class InputSpec:
    """One input of a job: files of one kind, their format and column mapping."""

    name: str
    kind: str  # career / resource / register
    paths: tuple[str, ...]
    format: Literal["auto", "parquet", "csv"] = "auto"
    columns: tuple[tuple[str, str], ...] = ()  # (canonical, source) pairs; unmapped = same name
    csv: CsvOptions = field(default_factory=CsvOptions)

    def source_of(self, canonical: str) -> str:
        return dict(self.columns).get(canonical, canonical)


@dataclass(frozen=True)
class ChunkTask:
    """One unit of reading work: a Parquet row-group range, or a whole CSV file."""

    input_name: str
    input_index: int
    kind: str
    path: str
    file_index: int
    format: str
    columns: tuple[tuple[str, str], ...]  # (canonical, actual source column) present in the file
    row_groups: tuple[int, ...] = ()
    first_row: int = 1  # row number of the first row of the chunk (1-based)
    separator: str = ","
    encoding: str = "utf-8"  # 'latin-1' when the whole file is Latin-1
    strict_utf8: bool = False
    decimal: str = "auto"
    quote: str = '"'
    header_fields: int = 0
    header: tuple[str, ...] = ()  # the header's names, trimmed (CSV)

    @property
    def first_group(self) -> int:
        """The first row group the task reads (0 for a CSV file): with the input and file
        indices, the key of the task's part and of its summaries."""
        return self.row_groups[0] if self.row_groups else 0


@dataclass
class Chunk:
    table: pa.Table  # canonical column names; text columns as binary (CSV) or native types
    row_numbers: np.ndarray  # int64, 1-based row (record) numbers in the file
    bad_rows: list[tuple[int, str]]  # CSV lines with the wrong number of fields: (row number, text)
    index: int  # chunk index within the task


DATA_SUFFIXES = (".parquet", ".parq", ".pq", ".csv", ".txt")  # the files of an input directory that are read
SKIPPED_IN_DIRECTORIES = (".", "_")  # hidden files and writers' markers (_SUCCESS, _metadata) of a directory


def _directory_files(p: Path) -> list[Path]:
    """The files under directory ``p``, sorted, leaving out any whose path below ``p`` has a
    part (file or folder) beginning with SKIPPED_IN_DIRECTORIES: a hidden file or folder, a
    writer's marker or its unfinished output (``_SUCCESS``, ``_temporary/``), as Spark and
    Arrow's dataset readers do."""
    return sorted(x for x in p.rglob("*") if x.is_file()
                  and not any(part.startswith(SKIPPED_IN_DIRECTORIES) for part in x.relative_to(p).parts))


def unread_files(paths: tuple[str, ...] | list[str]) -> list[Path]:
    """The files of the directories named by ``paths`` that are not read (not a DATA_SUFFIXES
    file: a compressed delivery, a stray document): an input refuses them rather than leave
    their rows out without a word."""
    return [x for pattern in paths if not any(ch in pattern for ch in "*?[") and Path(pattern).is_dir()
            for x in _directory_files(Path(pattern)) if x.suffix.lower() not in DATA_SUFFIXES]


UNREAD_FILE = ("not a file nirlink reads in an input directory (expected " + ", ".join(DATA_SUFFIXES) +
               "; compressed files are not read): decompress it, move it out of the directory, or name the "
               "input's files with a pattern")


def expand_paths(paths: tuple[str, ...] | list[str]) -> tuple[list[Path], list[str]]:
    """Files named by ``paths`` (files, directories, globs), sorted; and the patterns that matched nothing."""
    files: list[Path] = []
    missing: list[str] = []
    for pattern in paths:
        p = Path(pattern)
        if any(ch in pattern for ch in "*?["):
            found = sorted(Path(x) for x in glob.glob(pattern, recursive=True) if Path(x).is_file())
        elif p.is_dir():
            found = [x for x in _directory_files(p) if x.suffix.lower() in DATA_SUFFIXES]
        elif p.is_file():
            found = [p]
        else:
            found = []
        if not found:
            missing.append(pattern)
        files.extend(found)
    seen, unique = set(), []
    for f in files:
        key = str(f.resolve())
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, missing


def _format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    return "parquet" if path.suffix.lower() in (".parquet", ".parq", ".pq") else "csv"


# Arrow types each parse kind accepts from a Parquet file.
def _compatible(parse: str, typ: pa.DataType) -> bool:
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    textual = pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_binary(typ) \
        or pa.types.is_large_binary(typ) or pa.types.is_string_view(typ) or pa.types.is_null(typ)
    if textual:
        return True
    if parse in ("text", "id", "nir", "kind", "nir_kind"):
        return pa.types.is_integer(typ) if parse in ("id", "nir", "text") else False
    if parse in ("year", "int", "sex"):
        return pa.types.is_integer(typ) or pa.types.is_floating(typ)
    if parse == "amount":
        return pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)
    if parse in ("date", "month", "birth_date"):
        return pa.types.is_date(typ) or pa.types.is_timestamp(typ)
    return False


def _match_columns(spec: InputSpec, available: list[str], where: str, errors: list[tuple[str, str]]):
    """(canonical, actual) pairs for the columns of ``spec.kind`` found in ``available``."""
    by_lower = {}
    for name in available:
        by_lower.setdefault(name.strip().lower(), name)
    pairs = []
    for col in COLUMNS[spec.kind]:
        wanted = spec.source_of(col.name)
        actual = wanted if wanted in available else by_lower.get(wanted.strip().lower())
        if actual is None:
            if col.present:
                shown = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "")
                errors.append((where, f"missing column {wanted!r} (for {col.name}); the file has: {shown}"))
            continue
        pairs.append((col.name, actual))
    return tuple(pairs)


def plan_input(spec: InputSpec, input_index: int, *, chunk_rows: int) -> list[ChunkTask]:
    """The reading tasks of one input; raises InputFileError / SchemaError listing every problem."""
    if spec.kind not in INPUT_KINDS:
        raise SchemaError(f"input {spec.name!r}: kind must be one of {', '.join(INPUT_KINDS)}, got {spec.kind!r}")
    files, missing = expand_paths(spec.paths)
    file_errors: list[tuple[str, str]] = [(m, "no such file (or the pattern matched nothing)") for m in missing]
    file_errors += [(str(f), UNREAD_FILE) for f in unread_files(spec.paths)]
    schema_errors: list[tuple[str, str]] = []
    tasks: list[ChunkTask] = []
    for file_index, path in enumerate(files):
        where = str(path)
        fmt = _format_of(path, spec.format)
        try:
            if os.path.getsize(path) == 0:
                raise InputFileError(f"{path}: empty file")
            if fmt == "parquet":
                try:
                    pf = pq.ParquetFile(path)
                except Exception as exc:  # noqa: BLE001 - any failure to open is the file's fault
                    raise InputFileError(f"{path}: not a readable Parquet file ({_reason(exc)})") from None
                schema = pf.schema_arrow
                twice = sorted({n for n in schema.names if schema.names.count(n) > 1})
                if twice:  # as a CSV header's: a column named twice cannot be told apart
                    raise InputFileError(f"{path}: duplicate column names: {', '.join(twice)}")
                columns = _match_columns(spec, schema.names, where, schema_errors)
                for canonical, actual in columns:
                    col = next(c for c in COLUMNS[spec.kind] if c.name == canonical)
                    typ = schema.field(actual).type
                    if not _compatible(col.parse, typ):
                        schema_errors.append((where, f"column {actual!r} (for {canonical}) has type {typ}, "
                                                     f"expected {_expected(col.parse)}"))
                meta = pf.metadata
                groups, rows, first = [], 0, 1
                for rg in range(meta.num_row_groups):
                    n = meta.row_group(rg).num_rows
                    if groups and rows + n > chunk_rows:
                        tasks.append(ChunkTask(spec.name, input_index, spec.kind, str(path), file_index, "parquet",
                                               columns, tuple(groups), first))
                        first += rows
                        groups, rows = [], 0
                    groups.append(rg)
                    rows += n
                if groups:
                    tasks.append(ChunkTask(spec.name, input_index, spec.kind, str(path), file_index, "parquet",
                                           columns, tuple(groups), first))
            else:
                sep, encoding, strict, header = sniff_csv(path, spec.csv)
                columns = _match_columns(spec, header, where, schema_errors)
                tasks.append(ChunkTask(spec.name, input_index, spec.kind, str(path), file_index, "csv", columns,
                                       separator=sep, encoding=encoding, strict_utf8=strict,
                                       decimal=spec.csv.decimal, quote=spec.csv.quote, header_fields=len(header),
                                       header=tuple(header)))
        except InputFileError as exc:
            file_errors.append((where, str(exc).removeprefix(f"{path}: ")))
        except OSError as exc:
            file_errors.append((where, f"cannot read: {exc.strerror or exc}"))
    if not files and not missing:
        file_errors.append((spec.name, "no input files"))
    if file_errors:
        raise InputFileError(_listing(spec.name, file_errors))
    if schema_errors:
        raise SchemaError(_listing(spec.name, schema_errors))
    return tasks


def _expected(parse: str) -> str:
    return {
        "text": "text", "id": "an integer or text", "nir": "text", "kind": "text", "nir_kind": "text",
        "year": "an integer", "int": "an integer", "sex": "an integer or text", "amount": "a number",
        "date": "a date or text", "month": "a date or text", "birth_date": "a date or text",
    }[parse]


def _listing(name: str, errors: list[tuple[str, str]]) -> str:
    if len(errors) == 1:
        return f"input {name!r}: {errors[0][0]}: {errors[0][1]}"
    return f"input {name!r}: {len(errors)} problems\n" + "\n".join(f"  {w}: {m}" for w, m in errors)


# --------------------------------------------------------------------------------- reading


def _reason(exc: Exception) -> str:
    """A reader library's message, first line, without the row text it may quote (Arrow
    appends the offending line: a person's fields) and without a class name."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
    text = re.sub(r"(got \d+ columns?|got \d+)\s*:.*$", r"\1", text)
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", text)


def read_chunks(task: ChunkTask, *, chunk_rows: int) -> Iterator[Chunk]:
    if task.format == "parquet":
        yield from _read_parquet(task)
    else:
        yield from _read_csv(task, chunk_rows=chunk_rows)


# A declared row's identity columns: read from Parquet as dictionaries (as most writers encode
# them; a person's rows repeat them), checked once per distinct value and grouped by their indices
DICTIONARY_COLUMNS = ("declared_nir", "last_name", "first_name", "birth_date")


def _read_parquet(task: ChunkTask) -> Iterator[Chunk]:
    try:
        pf = pq.ParquetFile(task.path)
        if task.kind != "register":
            strings = {pf.schema.column(i).name for i in range(len(pf.schema))
                       if pf.schema.column(i).physical_type == "BYTE_ARRAY" and pf.schema.column(i).max_repetition_level == 0}
            wanted = [a for c, a in task.columns if c in DICTIONARY_COLUMNS and a in strings]
            if wanted:
                pf = pq.ParquetFile(task.path, read_dictionary=wanted, metadata=pf.metadata)  # footer read once
        table = pf.read_row_groups(list(task.row_groups), columns=[a for _, a in task.columns], use_threads=False)
        table = table.unify_dictionaries()  # one dictionary per column across the row groups
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(f"{task.path}: cannot read row groups {task.row_groups[0]}-{task.row_groups[-1]} "
                             f"({_reason(exc)})") from None
    table = table.rename_columns([c for c, _ in task.columns])
    rows = np.arange(task.first_row, task.first_row + table.num_rows, dtype=np.int64)
    yield Chunk(table, rows, [], 0)


def _scan_csv(task: ChunkTask):
    from nirlink.kernels._csv import CsvScanner

    scanner = CsvScanner(delimiter=task.separator.encode("latin-1"), quote=task.quote.encode("latin-1"),
                         expected_fields=task.header_fields)
    with open(task.path, "rb") as f:
        first = True
        while True:
            block = f.read(SCAN_BYTES)
            if first and block.startswith(b"\xef\xbb\xbf"):
                block = block[3:]
            first = False
            if not block:
                scanner.feed(b"", final=True)
                break
            scanner.feed(block)
    return scanner


CSV_BLOCK_BYTES = 16 << 20  # bytes Arrow's CSV reader parses at a time (a chunk is whole blocks)


def _read_csv(task: ChunkTask, *, chunk_rows: int) -> Iterator[Chunk]:
    import pyarrow.csv as pacsv

    scanner = _scan_csv(task)
    if scanner.in_quote:
        raise InputFileError(f"{task.path}: unterminated quoted field at the end of the file (truncated file?)")
    # Records are numbered from 0 (the header); data rows from 1.
    bad = scanner.bad_records
    if len(bad) and bad[0] == 0:
        raise InputFileError(f"{task.path}: header line could not be parsed")
    block_size = int(max(CSV_BLOCK_BYTES, 2 * scanner.longest_record + 1024))
    skipped: list[str] = []

    def on_invalid(row):
        skipped.append(row.text)
        return "skip"

    wanted = [a for _, a in task.columns]
    try:
        reader = pacsv.open_csv(
            task.path,
            # the trimmed header names, the header line itself skipped: " NIR " is the column NIR
            read_options=pacsv.ReadOptions(block_size=block_size, encoding="latin-1" if task.encoding == "latin-1"
                                           else "utf8", use_threads=False, column_names=list(task.header) or None,
                                           skip_rows=1 if task.header else 0),
            parse_options=pacsv.ParseOptions(delimiter=task.separator, quote_char=task.quote, newlines_in_values=True,
                                             invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types={a: pa.binary() for a in wanted}, include_columns=wanted,
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(f"{task.path}: cannot read as CSV ({_reason(exc)})") from None

    # good-row rank -> row number, skipping the bad records (sorted data-record numbers)
    shift = bad - np.arange(len(bad)) - 1

    def numbers(k0, k1):
        k = np.arange(k0, k1, dtype=np.int64)
        return k + 1 + np.searchsorted(shift, k, side="right")

    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    good = 0
    index = 0
    reported_bad = 0

    def flush():
        nonlocal pending, pending_rows, good, index, reported_bad
        table = pa.Table.from_batches(pending, schema=reader.schema) if pending else reader.schema.empty_table()
        table = table.rename_columns([c for c, _ in task.columns])
        rows = numbers(good, good + table.num_rows)
        last = rows[-1] if len(rows) else (bad[reported_bad] if reported_bad < len(bad) else 0)
        # bad records up to the last good row of this chunk (or all that remain at the end)
        upto = len(bad) if (pending_rows == 0 or good + table.num_rows == total_good) else int(
            np.searchsorted(bad, last, side="right"))
        bad_rows = [(int(bad[i]), skipped[i] if i < len(skipped) else "") for i in range(reported_bad, upto)]
        reported_bad = upto
        chunk = Chunk(table, rows, bad_rows, index)
        good += table.num_rows
        index += 1
        pending, pending_rows = [], 0
        return chunk

    total_good = scanner.records - 1 - len(bad)
    try:
        for batch in reader:
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= chunk_rows:
                yield flush()
    except Exception as exc:  # noqa: BLE001
        raise InputFileError(f"{task.path}: CSV parse error after row {good + pending_rows} "
                             f"({_reason(exc)})") from None
    if pending or index == 0 or reported_bad < len(bad):
        yield flush()
    if good != total_good or len(skipped) != len(bad):
        raise InputFileError(
            f"{task.path}: rows could not be numbered consistently ({good} well-formed rows read, {total_good} "
            f"expected; {len(skipped)} malformed lines skipped, {len(bad)} expected)")
