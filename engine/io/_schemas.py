"""Canonical columns of each input kind and the schemas of the ingest outputs.

A job maps its files' columns onto these names (DESIGN.md, data model). `Column.parse`
says how a value is read: text, a NIR, a date (birth dates may have unknown parts), a year,
an integer, an amount (decimal comma or point), a kind from a fixed list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa

from ._money import MONEY

__all__ = ["Column", "COLUMNS", "KINDS", "ACCEPTED_SCHEMAS", "rejects_schema", "REASONS", "INPUT_KINDS",
           "INGESTED_ROW_COLUMNS", "IDENTITY_SCHEMA", "IDENTITIES",
           "identities_file"]

INPUT_KINDS = ("career", "resource", "register")

Parse = Literal["text", "nir", "birth_date", "date", "month", "year", "int", "amount", "kind", "sex", "nir_kind", "id"]


@dataclass(frozen=True)
class Column:
    name: str
    parse: Parse
    present: bool = True  # must the file have it (after mapping)?
    value: bool = False  # must every row have a value?
    max_length: int = 200


COLUMNS: dict[str, tuple[Column, ...]] = {
    "career": (
        Column("record_id", "id", present=False),
        Column("declared_nir", "nir"),
        Column("last_name", "text"),
        Column("first_name", "text"),
        Column("birth_date", "birth_date"),
        Column("employer_id", "text", value=True, max_length=32),
        Column("year", "year", value=True),
        Column("start_date", "date", value=True),
        Column("end_date", "date", value=True),
        Column("kind", "kind", value=True),
        Column("gross_salary", "amount"),
        Column("days", "int", present=False),
    ),
    "resource": (
        Column("record_id", "id", present=False),
        Column("declared_nir", "nir"),
        Column("last_name", "text"),
        Column("first_name", "text"),
        Column("birth_date", "birth_date"),
        Column("payer_id", "text", value=True, max_length=32),
        Column("period", "month", value=True),
        Column("kind", "kind", value=True),
        Column("amount", "amount", value=True),
    ),
    "register": (
        Column("nir", "nir", value=True),
        Column("sex", "sex"),
        Column("birth_date", "birth_date"),
        Column("birth_place", "text", max_length=8),
        Column("last_name", "text", value=True),
        Column("usage_name", "text", present=False),
        Column("first_names", "text"),
        Column("death_date", "date", present=False),
        Column("nir_kind", "nir_kind", present=False),
    ),
}

KINDS = {
    "career": ("salary", "unemployment", "sickness", "maternity", "disability", "military"),
    "resource": ("salary", "pension", "complementary_pension", "unemployment_benefit", "daily_allowance", "other",
                 "minimum_old_age_benefit"),
}

# Reason codes of rejected rows (documented in README, "Rejects").
REASONS = {
    "missing_value": "a required field is empty",
    "bad_number": "not a number (amount, year, days, record id)",
    "negative_amount": "an amount below zero where the kind forbids it",
    "bad_date": "not a date, or a date that does not exist (1900-02-30)",
    "year_out_of_range": "year outside the reference tables (1990-2026)",
    "date_outside_year": "a career period that does not lie within its year",
    "end_before_start": "a period that ends before it starts",
    "bad_days": "days outside 0-366 or more than the period holds",
    "bad_kind": "a kind outside the documented list",
    "bad_sex": "sex not 1/2 (or M/F)",
    "bad_nir": "a register row whose NIR is not valid (the register is the reference)",
    "bad_encoding": "bytes that are not valid UTF-8 (with encoding = 'utf-8')",
    "bad_characters": "control characters (NUL...) in a field",
    "field_too_long": "a field longer than its maximum length",
    "bad_row": "a CSV line with the wrong number of fields",
    "duplicate_record_id": "a record id an earlier accepted row of the same kind already has (in job order: "
                           "input, file, row); that first row is kept",
    "sub_cent_amount": "an amount that is not a whole number of cents (amounts are decimal(18, 2) from ingest "
                       "on), or one of 10^16 euros or more",
}

_IDENTITY = [
    pa.field("last_name_norm", pa.string()),
    pa.field("last_name_key", pa.string()),
    pa.field("first_name_norm", pa.string()),
    pa.field("first_names_norm", pa.string()),
    pa.field("birth_year", pa.int16()),
    pa.field("birth_month", pa.int8()),
    pa.field("birth_day", pa.int8()),
]
_NIR = [
    pa.field("nir", pa.string()),
    pa.field("nir_status", pa.string(), nullable=False),
    pa.field("nir_key_computed", pa.bool_(), nullable=False),
    pa.field("nir_sex", pa.int8()),
    pa.field("nir_birth_year", pa.int16()),
    pa.field("nir_birth_month", pa.int8()),
    pa.field("nir_department", pa.string()),
]
_ORIGIN = [pa.field("source_file", pa.string(), nullable=False), pa.field("row_number", pa.int64(), nullable=False)]
# a declared row's identity signature (linkage/_prepare.py signature_ids), hashed where the
# columns are in memory: the link stage's signatures and the attach stage's lookup read it
_SIGNATURE = pa.field("signature", pa.int64(), nullable=False)

ACCEPTED_SCHEMAS = {
    "career": pa.schema([
        pa.field("record_id", pa.int64(), nullable=False),
        pa.field("declared_nir", pa.string()),
        *_NIR,
        pa.field("last_name", pa.string()),
        pa.field("first_name", pa.string()),
        pa.field("birth_date", pa.string()),
        *_IDENTITY,
        pa.field("employer_id", pa.string(), nullable=False),
        pa.field("year", pa.int16(), nullable=False),
        pa.field("start_date", pa.date32(), nullable=False),
        pa.field("end_date", pa.date32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("gross_salary", MONEY),
        pa.field("days", pa.int16(), nullable=False),
        *_ORIGIN,
        _SIGNATURE,
    ]),
    "resource": pa.schema([
        pa.field("record_id", pa.int64(), nullable=False),
        pa.field("declared_nir", pa.string()),
        *_NIR,
        pa.field("last_name", pa.string()),
        pa.field("first_name", pa.string()),
        pa.field("birth_date", pa.string()),
        *_IDENTITY,
        pa.field("payer_id", pa.string(), nullable=False),
        pa.field("period", pa.date32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("amount", MONEY, nullable=False),
        *_ORIGIN,
        _SIGNATURE,
    ]),
    "register": pa.schema([
        pa.field("nir", pa.string(), nullable=False),
        pa.field("nir_status", pa.string(), nullable=False),
        pa.field("nir_sex", pa.int8()),
        pa.field("nir_birth_year", pa.int16()),
        pa.field("nir_birth_month", pa.int8()),
        pa.field("nir_department", pa.string()),
        pa.field("sex", pa.int8()),
        pa.field("birth_date", pa.string()),
        pa.field("birth_place", pa.string()),
        pa.field("last_name", pa.string(), nullable=False),
        pa.field("usage_name", pa.string()),
        pa.field("first_names", pa.string()),
        *_IDENTITY,
        pa.field("usage_name_norm", pa.string()),
        pa.field("usage_name_key", pa.string()),
        pa.field("death_date", pa.date32()),
        pa.field("nir_kind", pa.string()),
        *_ORIGIN,
    ]),
}

# What the ingest stage writes of a declared (career, resource) row: the row itself, its origin
# and its identity signature. The identity (the declared NIR squeezed of its separators and
# upper-cased, as the signature hashes it; the NIR, its status and parts, the normalised names
# and birth date) is a function of the signature, so it is written once per signature and
# chunk (IDENTITY_SCHEMA, under ``ingest/identities/<input>/``): at 200,000 persons a chunk of
# ~900,000 resource rows holds ~14,000 signatures, and writing 26 columns per row cost 0.33 s
# of CPU against 0.12 s for 12 and 0.07 s for the signatures' table. The NIR, its status and
# the NIR's birth year and month were still written on every row until 2026-12-05 (the ingest
# stage's workers then spent 13% less CPU on 10M rows): the attach stage takes the NIR and its
# status from the link stage's tables, a job without it (its person buckets) from the part's
# identities file (``identities_file``), `nirlink evaluate` the status from the link table.
# Not kept: the declared names and birth date as delivered and the surname's normalised form
# with its spaces (not functions of the signature; read by nothing after ingest; a rejected
# row keeps them in its ``raw``)
INGESTED_ROW_COLUMNS = {
    "career": ["record_id", "employer_id", "year", "start_date", "end_date", "kind", "gross_salary",
               "days", "source_file", "row_number", "signature"],
    "resource": ["record_id", "payer_id", "period", "kind", "amount", "source_file", "row_number",
                 "signature"],
}
IDENTITIES = "identities"  # ingest/identities/<input>/<part>: the signatures of each part file of rows
IDENTITY_SCHEMA = pa.schema([
    _SIGNATURE,
    pa.field("declared_nir", pa.string()),
    *_NIR,
    *[f for f in _IDENTITY if f.name != "last_name_norm"],
    pa.field("rows", pa.int64(), nullable=False),  # rows of the part file with this signature
])


def identities_file(rows_file: str | os.PathLike) -> Path:
    """The identities file of an ingested part file of declared rows
    (``<ingest>/<input>/<part>`` -> ``<ingest>/identities/<input>/<part>``): its signatures'
    identity columns, sorted by signature."""
    rows_file = Path(rows_file)
    return rows_file.parent.parent / IDENTITIES / rows_file.parent.name / rows_file.name


def rejects_schema(kind: str) -> pa.Schema:
    """Rejects of one input kind: where the row was, its first failing column and reason, every
    (column, reason) pair, the failing value, the row's fields as text (``raw``, each cut at
    1000 characters) or, for a CSV line with the wrong number of fields, the line itself."""
    return pa.schema([
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("row_number", pa.int64()),
        pa.field("record_id", pa.int64()),
        pa.field("column", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("reasons", pa.string(), nullable=False),
        pa.field("value", pa.string()),
        pa.field("raw", pa.struct([pa.field(c.name, pa.string()) for c in COLUMNS[kind]])),
        pa.field("line", pa.string()),
    ])
