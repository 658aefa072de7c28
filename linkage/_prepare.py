"""Linkage tables: identity signatures of records, and the register, with the columns the models compare.

A signature is the distinct (declared NIR, normalised last name, first names, birth date)
tuple - sex comes from the NIR - with a stable 64-bit id: a person's identity as one
declarant writes it repeats on every row that declarant sends, so rows collapse into far
fewer signatures and linkage works on those. Empty strings and unknown birth-date parts
become NULL, so that they never match (in blocking or comparisons).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nirlink.kernels._hash import hash_rows, hash_rows_squeezed, squeeze_nir
from nirlink.kernels._text import squeeze

__all__ = ["signature_ids", "records_table", "register_table", "LINK_COLUMNS", "RECORD_INPUT_COLUMNS",
           "SIGNATURE_COLUMNS"]

RECORD_INPUT_COLUMNS = ["declared_nir", "nir", "nir_status", "nir_sex", "last_name_key", "first_name_norm",
                        "first_names_norm", "birth_year", "birth_month", "birth_day"]

LINK_COLUMNS = pa.schema([
    pa.field("unique_id", pa.int64(), nullable=False),
    pa.field("nir", pa.string()),
    pa.field("nir_body", pa.string()),
    pa.field("nir_prefix10", pa.string()),
    pa.field("nir_status", pa.string()),
    pa.field("sex", pa.int8()),
    pa.field("last_name_key", pa.string()),
    pa.field("usage_name_key", pa.string()),
    pa.field("first_name_key", pa.string()),
    pa.field("first_name_norm", pa.string()),
    pa.field("first_names_norm", pa.string()),
    pa.field("first_names_key", pa.string()),
    pa.field("birth_year", pa.int16()),
    pa.field("birth_month", pa.int8()),
    pa.field("birth_day", pa.int8()),
    pa.field("birth_place", pa.string()),
])

_BODY = r"^[0-9]{5}[0-9][0-9AB][0-9]{6}([0-9]{2})?$"


def _key(arr: pa.Array) -> pa.Array:
    """A name as a comparison key: no spaces, no hyphens (JEAN-PIERRE MARIE -> JEANPIERREMARIE)."""
    return _empty_to_null(squeeze(pc.replace_substring(arr, "-", "")))


def _empty_to_null(arr: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(arr, ""), pa.nulls(len(arr), arr.type), arr)


def _zero_to_null(arr) -> pa.Array:
    return pc.if_else(pc.equal(arr, 0), pa.nulls(len(arr), arr.type), arr)


def _body(declared: pa.Array) -> pa.Array:
    """The 13-character body of a declared NIR (whatever its key), or NULL if it is not one."""
    cleaned = squeeze_nir(declared)
    ok = pc.fill_null(pc.match_substring_regex(cleaned, _BODY), False)
    return pc.if_else(ok, pc.utf8_slice_codeunits(cleaned, 0, 13), pa.nulls(len(declared), pa.string()))


def _sex_from_digit(digit) -> pa.Array:
    d = pc.fill_null(pc.cast(digit, pa.int8()), 0).to_numpy(zero_copy_only=False)
    s = np.where(np.isin(d, (1, 3, 7)), 1, np.where(np.isin(d, (2, 4, 8)), 2, 0)).astype(np.int8)
    return pa.array(s, mask=s == 0)


def _identity(table: pa.Table) -> dict[str, pa.Array]:
    """The name and birth-date columns both sides share (the schema puts them in order)."""
    first_norm = _empty_to_null(table.column("first_name_norm"))
    return {
        "last_name_key": _empty_to_null(table.column("last_name_key")),
        "first_name_key": _key(first_norm),
        "first_name_norm": first_norm,
        "first_names_norm": _empty_to_null(table.column("first_names_norm")),
        "first_names_key": _key(table.column("first_names_norm")),
        "birth_year": _zero_to_null(table.column("birth_year")),
        "birth_month": _zero_to_null(table.column("birth_month")),
        "birth_day": _zero_to_null(table.column("birth_day")),
    }


# the identity fields a signature id hashes, in order (the declared NIR first, normalised)
SIGNATURE_COLUMNS = ["declared_nir", "last_name_key", "first_names_norm", "birth_year", "birth_month", "birth_day"]


def signature_ids(table: pa.Table) -> np.ndarray:
    """The signature id of each ingested row (same identity fields, same id, in any source)."""
    return hash_rows_squeezed(table.column("declared_nir"), *(table.column(c) for c in SIGNATURE_COLUMNS[1:]))


def records_table(table: pa.Table) -> pa.Table:
    """Linkage columns of ingested rows (one row per input row; callers take distinct ids)."""
    body = _body(table.column("declared_nir"))
    place = pc.utf8_slice_codeunits(body, 5, 10)
    return pa.table({
        "unique_id": pa.array(signature_ids(table)),
        "nir": table.column("nir"),
        "nir_body": body,
        "nir_prefix10": pc.utf8_slice_codeunits(body, 0, 10),
        "nir_status": table.column("nir_status"),
        "sex": _sex_from_digit(table.column("nir_sex")),
        "usage_name_key": pa.nulls(table.num_rows, pa.string()),
        **_identity(table),
        "birth_place": place,
    }, schema=LINK_COLUMNS)


def register_table(table: pa.Table) -> pa.Table:
    """Linkage columns of the ingested register (unique_id: hash of the NIR)."""
    nir = table.column("nir")
    body = pc.utf8_slice_codeunits(nir, 0, 13)
    sex = table.column("sex") if "sex" in table.column_names else _sex_from_digit(table.column("nir_sex"))
    return pa.table({
        "unique_id": pa.array(hash_rows(nir)),
        "nir": nir,
        "nir_body": body,
        "nir_prefix10": pc.utf8_slice_codeunits(nir, 0, 10),
        "nir_status": table.column("nir_status"),
        "sex": pc.cast(sex, pa.int8()),
        "usage_name_key": _empty_to_null(table.column("usage_name_key")),
        **_identity(table),
        "birth_place": _empty_to_null(table.column("birth_place")),
    }, schema=LINK_COLUMNS)
