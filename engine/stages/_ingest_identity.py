"""The identity of a chunk's rows: birth date, NIR checks, normalised names, signature.

A declared (career, resource) row's identity is a function of four of its fields (the
declared NIR, the surname, the first name and the birth date as delivered), and a person's
rows repeat them: a chunk of ~900,000 resource rows of 200,000 persons holds ~14,000
distinct identities. So the rows are grouped by those four values (exactly:
``kernels/_hash.distinct_rows``), every check and normalisation runs once per group, and each
row takes back its signature (and its group, for ``split_accepted``) and the errors of its
group, in the order they were found: the same values, the same first failing column and reason
as row by row. The register's rows are persons: checked
row by row. The groups' table is what ``split_accepted`` writes once per signature, and what
gives a duplicate's rejected row its fields back (``full_rows``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from nirlink.engine.io._schemas import ACCEPTED_SCHEMAS, IDENTITY_SCHEMA, INGESTED_ROW_COLUMNS
from nirlink.kernels._dates import DATE_BAD
from nirlink.kernels._nir import NIR_STATUS

from ._ingest_checks import _as, _clean_declared, _dates, _Errors, _names, _nir_columns

__all__ = ["identity_columns", "declared_identity", "split_accepted", "full_rows", "GROUP"]

GROUP = "_group"  # a declared row's group in its chunk's groups' table (accepted rows only; never written)
# the groups' table: the identity columns of the accepted rows (the declared names and birth
# date, the NIR's columns, the normalised ones), and the signature
_GROUP_FIELDS = [f for f in ACCEPTED_SCHEMAS["career"]
                 if f.name in {*IDENTITY_SCHEMA.names, "last_name", "first_name", "birth_date", "last_name_norm"}]


def identity_columns(nir_in: pa.Array, birth_in: pa.Array | None, last_name: pa.Array, first_in: pa.Array,
                     errors: _Errors, first_col: str, today_year: int) -> tuple[dict, dict]:
    """(NIR columns, identity columns) of rows given as arrays; their errors into ``errors``."""
    n = len(nir_in)
    birth = _dates(birth_in, allow_unknown=True) if birth_in is not None else None
    if birth is not None:
        errors.add("birth_date", birth["status"] == DATE_BAD, "bad_date")
        birth_year = birth["year"].astype(np.int64)
    else:
        birth_year = np.zeros(n, np.int64)
    nir = _nir_columns(nir_in, birth_year, today_year)
    ln = _names(last_name, errors, "last_name")
    fn = _names(first_in, errors, first_col, first_names=True)
    identity = {
        "last_name_norm": ln["norm"], "last_name_key": ln["key"],
        "first_name_norm": fn["first"], "first_names_norm": fn["norm"],
        "birth_year": pa.array(birth["year"] if birth is not None else np.zeros(n, np.int16)),
        "birth_month": pa.array(birth["month"] if birth is not None else np.zeros(n, np.int8)),
        "birth_day": pa.array(birth["day"] if birth is not None else np.zeros(n, np.int8)),
    }
    return nir, identity


def _key(arr: pa.Array) -> pa.Array:
    """A column as distinct_rows groups it: text as it is, a dictionary by its indices (rows of
    one index hold one value), a date or time by its integer value."""
    if pa.types.is_dictionary(arr.type):
        return arr.indices
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_integer(arr.type):
        return arr
    if pa.types.is_temporal(arr.type):
        return arr.view(pa.int32() if arr.type.bit_width == 32 else pa.int64())
    return arr.cast(pa.string())


def _plain(arr: pa.Array) -> pa.Array:
    return arr.cast(arr.type.value_type) if pa.types.is_dictionary(arr.type) else arr


def declared_identity(nir_in: pa.Array, birth_in: pa.Array | None, last_name: pa.Array, first_in: pa.Array,
                      errors: _Errors, today_year: int, stats: Counter) -> tuple[dict[str, Any], pa.Table, np.ndarray]:
    """(each row's NIR columns and signature, the groups' table, each row's group) of a chunk's
    declared rows; the groups' errors given to their rows in ``errors``."""
    from nirlink.kernels._hash import distinct_rows
    from nirlink.linkage._prepare import signature_ids

    keys = [_key(a) for a in (nir_in, last_name, first_in, birth_in) if a is not None]
    first, inverse = distinct_rows(*keys)
    take = pa.array(first)
    # the groups' first rows, plain arrays
    nir_in, last_name, first_in = (_plain(a.take(take)) for a in (nir_in, last_name, first_in))
    birth_in = _plain(birth_in.take(take)) if birth_in is not None else None
    groups = _Errors(len(first), errors.columns)
    nir, identity = identity_columns(nir_in, birth_in, last_name, first_in, groups, "first_name", today_year)
    errors.add_grouped(groups, inverse)
    status = nir["_status"][inverse]
    for code, count in enumerate(np.bincount(status, minlength=len(NIR_STATUS))):
        if count:
            stats[f"nir_{NIR_STATUS[code]}"] += int(count)
    stats["nir_key_computed"] += int(nir["_key_computed"][inverse].sum())
    columns = {"declared_nir": _clean_declared(nir_in), **{k: nir[k] for k in nir if not k.startswith("_")},
               "last_name": last_name, "first_name": first_in,
               "birth_date": birth_in if birth_in is not None else pa.nulls(len(first), pa.string()),
               **identity}
    fields = [f for f in _GROUP_FIELDS if f.name != "signature"]
    table = pa.table({f.name: _as(columns[f.name], f.type) for f in fields}, schema=pa.schema(fields))
    signature = signature_ids(table)
    table = table.append_column(ACCEPTED_SCHEMAS["career"].field("signature"), pa.array(signature, pa.int64()))
    # a row keeps its signature and group; its NIR columns are its group's (ingest/identities/)
    out = {"signature": pa.array(signature[inverse]), GROUP: pa.array(inverse)}
    return out, table, inverse


def split_accepted(accepted: pa.Table, kind: str, groups: pa.Table | None) -> tuple[pa.Table, pa.Table | None]:
    """What the ingest stage writes of a chunk's accepted rows: the rows' own columns
    (INGESTED_ROW_COLUMNS) and, for declared rows, each distinct signature's identity once
    (IDENTITY_SCHEMA: the columns of its first row's group, every one of them a function of the
    signature - the declared NIR squeezed as the signature hashes it - and how many rows carry
    it), sorted by signature. The register: as it is."""
    if kind not in INGESTED_ROW_COLUMNS:
        return accepted, None
    from nirlink.kernels._hash import distinct_first, squeeze_nir

    first, counts = distinct_first(accepted.column("signature").to_numpy())
    names = [f.name for f in IDENTITY_SCHEMA if f.name != "rows"]
    group = accepted.column(GROUP).to_numpy()[first]
    firsts = groups.select(names).take(pa.array(group))
    # the declared NIR as the signature hashes it (the same for every row of the signature,
    # whatever its spelling)
    firsts = firsts.set_column(names.index("declared_nir"), "declared_nir", squeeze_nir(firsts.column("declared_nir")))
    identities = firsts.append_column(IDENTITY_SCHEMA.field("rows"), pa.array(counts.astype(np.int64)))
    # the rows as written: ``source_file`` a dictionary, the file without its Arrow schema (it
    # reads back as text, as every other column reads back its own type)
    return accepted.select(INGESTED_ROW_COLUMNS[kind]), identities.cast(IDENTITY_SCHEMA)


def full_rows(accepted: pa.Table, kind: str, groups: pa.Table) -> pa.Table:
    """Accepted declared rows with every column of ACCEPTED_SCHEMAS (their identity taken from
    their groups), in that order."""
    rows = accepted.column(GROUP)
    return pa.table({f.name: accepted.column(f.name).cast(f.type) if f.name in accepted.column_names
                     else groups.column(f.name).take(rows) for f in ACCEPTED_SCHEMAS[kind]}, schema=ACCEPTED_SCHEMAS[kind])
