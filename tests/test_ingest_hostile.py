"""Hostile inputs: each gives a clear error naming the file (and column), or reject rows with the
right reason code - and the counts always reconcile (rows read = accepted + rejected)."""

from __future__ import annotations

from decimal import Decimal

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nirlink.engine import InputFileError, SchemaError
from nirlink.engine.io._readers import CsvOptions, InputSpec
from nirlink.engine.stages._ingest import ingested_rows_sql, run_ingest
from nirlink.engine.stages._ingest_duplicates import chunks_to_check

HEADER = ["record_id", "declared_nir", "last_name", "first_name", "birth_date", "employer_id", "year", "start_date",
          "end_date", "kind", "gross_salary", "days"]
GOOD = ["1", "177127400100163", "DUPUY", "Frédéric", "1977-12-16", "12345678200010", "2015", "2015-01-01",
        "2015-12-31", "salary", "25000.50", "365"]
RESOURCE_HEADER = ["declared_nir", "last_name", "first_name", "birth_date", "payer_id", "period", "kind", "amount"]
RESOURCE_GOOD = ["177127400100163", "DUPUY", "Frederic", "1977-12-16", "12345678200010", "2021-03", "salary", "1500,00"]


def _row(**changes):
    row = dict(zip(HEADER, GOOD))
    row.update(changes)
    return row


def _csv_text(rows, header=HEADER, sep=";"):
    def q(v):
        v = str(v)
        return '"' + v.replace('"', '""') + '"' if any(c in v for c in (sep, '"', "\n", "\r")) else v
    lines = [sep.join(header)] + [sep.join(q(r.get(h, "")) for h in header) for r in rows]
    return "\n".join(lines) + "\n"


def _write(tmp_path, name, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _run(tmp_path, path, kind="career", **csv_options):
    spec = InputSpec("in", kind, (str(path),), csv=CsvOptions(**csv_options))
    manifest = run_ingest([spec], tmp_path / "out")
    totals = manifest["inputs"]["in"]["totals"]
    assert totals["rows_read"] == totals["accepted"] + totals["rejected"]
    accepted_dir = tmp_path / "out" / "in"
    rejects_dir = tmp_path / "out" / "rejects" / "in"
    accepted = None
    if accepted_dir.exists():  # declared rows with their identity (its own files: ingested_rows_sql)
        accepted = pq.read_table(accepted_dir) if kind == "register" else duckdb.connect().sql(
            f"select * from ({ingested_rows_sql(tmp_path / 'out', 'in')}) order by row_number").fetch_arrow_table()
    rejects = pq.read_table(rejects_dir) if rejects_dir.exists() else None
    return totals, accepted, rejects


def _one_reject(tmp_path, rows, reason, column, **kw):
    path = _write(tmp_path, "c.csv", _csv_text([_row(), *rows]))
    totals, accepted, rejects = _run(tmp_path, path, **kw)
    assert totals["accepted"] == 1, totals
    assert totals["rejected"] == len(rows)
    assert rejects is not None
    got = rejects.to_pylist()
    assert {r["reason"] for r in got} == {reason}, got
    assert {r["column"] for r in got} == {column}
    assert all(r["source_file"] == str(path) for r in got)
    assert [r["row_number"] for r in got] == list(range(2, 2 + len(rows)))
    return got


REJECT_CASES = [
    ("negative salary", [_row(gross_salary="-12.5")], "negative_amount", "gross_salary"),
    ("salary not a number", [_row(gross_salary="douze")], "bad_number", "gross_salary"),
    ("salary with a fraction of a cent", [_row(gross_salary="1234.567")], "sub_cent_amount", "gross_salary"),
    ("salary beyond decimal(18, 2)", [_row(gross_salary="12345678901234567")], "sub_cent_amount", "gross_salary"),
    ("salary NaN", [_row(gross_salary="NaN")], "bad_number", "gross_salary"),
    ("salary missing on a salary row", [_row(gross_salary="")], "missing_value", "gross_salary"),
    ("year in the future", [_row(year="2031", start_date="2031-01-01", end_date="2031-12-31")], "year_out_of_range", "year"),
    ("year before the tables", [_row(year="1985", start_date="1985-01-01", end_date="1985-12-31")], "year_out_of_range", "year"),
    ("year not a number", [_row(year="20x5")], "bad_number", "year"),
    ("birth date 1900-02-30", [_row(birth_date="1900-02-30")], "bad_date", "birth_date"),
    ("birth date garbage", [_row(birth_date="16/13/1977")], "bad_date", "birth_date"),
    ("date with trailing text", [_row(start_date="2015-01-01 xyz")], "bad_date", "start_date"),
    ("date with an impossible time", [_row(end_date="2015-12-31T25:99:99")], "bad_date", "end_date"),
    ("start date impossible", [_row(start_date="2015-02-30")], "bad_date", "start_date"),
    ("period outside its year", [_row(start_date="2014-12-01")], "date_outside_year", "start_date"),
    ("end before start", [_row(start_date="2015-06-01", end_date="2015-05-01")], "end_before_start", "end_date"),
    ("unknown kind", [_row(kind="lottery")], "bad_kind", "kind"),
    ("employer empty", [_row(employer_id="  ")], "missing_value", "employer_id"),
    ("kind empty", [_row(kind="")], "missing_value", "kind"),
    ("days above 366", [_row(days="400")], "bad_days", "days"),
    ("days beyond the period", [_row(start_date="2015-01-01", end_date="2015-01-31", days="200")], "bad_days", "days"),
    ("NUL byte in a name", [_row(last_name="DU\x00PUY")], "bad_characters", "last_name"),
    ("embedded newline in a quoted name", [_row(first_name="Jean\nPierre")], "bad_characters", "first_name"),
    ("1 MB field", [_row(last_name="A" * (1 << 20))], "field_too_long", "last_name"),
    ("record id not a number", [_row(record_id="r-17")], "bad_number", "record_id"),
]


@pytest.mark.parametrize("label,rows,reason,column", REJECT_CASES, ids=[c[0] for c in REJECT_CASES])
def test_rejects_with_reason(tmp_path, label, rows, reason, column):
    _one_reject(tmp_path, rows, reason, column)


def test_mixed_encoding_strict_utf8_rejects_the_latin1_row(tmp_path):
    text = _csv_text([_row(), _row(last_name="LEFÈVRE")]).encode("utf-8")
    text = text.replace("LEFÈVRE".encode("utf-8"), "LEFÈVRE".encode("latin-1"))
    path = _write(tmp_path, "mixed.csv", text)
    totals, accepted, rejects = _run(tmp_path, path, encoding="utf-8")
    assert totals["rejected"] == 1 and rejects.column("reason").to_pylist() == ["bad_encoding"]
    assert rejects.column("column").to_pylist() == ["last_name"]


def test_mixed_encoding_auto_transcodes_and_counts(tmp_path):
    text = _csv_text([_row(), _row(record_id="2", last_name="LEFÈVRE")]).encode("utf-8")
    text = text.replace("LEFÈVRE".encode("utf-8"), "LEFÈVRE".encode("latin-1"))
    totals, accepted, _ = _run(tmp_path, _write(tmp_path, "mixed.csv", text))
    assert totals["accepted"] == 2 and totals["values_transcoded_from_latin1"] == 1
    assert "LEFEVRE" in accepted.column("last_name_key").to_pylist()


def test_latin1_file_with_accented_header(tmp_path):
    header = [*HEADER[:3], "prénom", *HEADER[4:]]
    text = _csv_text([dict(zip(header, GOOD))], header=header).encode("latin-1")
    spec = InputSpec("in", "career", (str(_write(tmp_path, "l1.csv", text)),), columns=(("first_name", "prénom"),))
    manifest = run_ingest([spec], tmp_path / "out")
    assert manifest["inputs"]["in"]["totals"]["accepted"] == 1
    rows = duckdb.connect().sql(ingested_rows_sql(tmp_path / "out", "in")).fetch_arrow_table()
    assert rows.column("first_names_norm").to_pylist() == ["FREDERIC"]


def test_wrong_field_count_row_is_rejected_with_its_row_number(tmp_path):
    text = _csv_text([_row(), _row(record_id="2")]) + "1;2;3\n" + _csv_text([_row(record_id="9")]).split("\n", 1)[1]
    totals, accepted, rejects = _run(tmp_path, _write(tmp_path, "shape.csv", text))
    assert totals == {**totals, "rows_read": 4, "accepted": 3, "rejected": 1}
    assert rejects.to_pylist()[0]["reason"] == "bad_row" and rejects.to_pylist()[0]["row_number"] == 3
    assert accepted.column("row_number").to_pylist() == [1, 2, 4]


def test_separator_inside_quotes_and_crlf_and_bom(tmp_path):
    text = "\ufeff" + _csv_text([_row(last_name="DUPUY; DIT MARTIN")]).replace("\n", "\r\n")
    totals, accepted, _ = _run(tmp_path, _write(tmp_path, "q.csv", text))
    assert totals["accepted"] == 1
    assert accepted.column("last_name_key").to_pylist() == ["DUPUYDITMARTIN"]


def test_french_decimal_comma_and_thousands(tmp_path):
    totals, accepted, _ = _run(tmp_path, _write(tmp_path, "fr.csv", _csv_text([_row(gross_salary="25 000,50")])))
    assert accepted.column("gross_salary").to_pylist() == [25000.5]


def test_comma_separated_file(tmp_path):
    text = _csv_text([_row(), _row(record_id="2")], sep=",")
    totals, accepted, _ = _run(tmp_path, _write(tmp_path, "comma.csv", text))
    assert totals["accepted"] == 2


def test_header_only_gives_zero_rows(tmp_path):
    totals, accepted, rejects = _run(tmp_path, _write(tmp_path, "h.csv", ";".join(HEADER) + "\n"))
    assert (totals["rows_read"], totals["accepted"], totals["rejected"]) == (0, 0, 0)


def test_extra_columns_are_ignored(tmp_path):
    header = [*HEADER, "comment", "internal_code"]
    row = {**_row(), "comment": "x", "internal_code": "y"}
    totals, accepted, _ = _run(tmp_path, _write(tmp_path, "extra.csv", _csv_text([row], header=header)))
    assert totals["accepted"] == 1 and "comment" not in accepted.column_names


def test_unknown_birth_month_is_kept_unknown_and_13_digit_nir_completed(tmp_path):
    path = _write(tmp_path, "u.csv", _csv_text([_row(birth_date="1977-00-00", declared_nir="1771274001001")]))
    totals, accepted, _ = _run(tmp_path, path)
    row = accepted.to_pylist()[0]
    assert (row["birth_year"], row["birth_month"], row["birth_day"]) == (1977, 0, 0)
    assert row["nir"] == "177127400100163" and row["nir_key_computed"] and row["nir_status"] == "valid"
    assert totals["nir_key_computed"] == 1


def test_resource_period_and_amount_rules(tmp_path):
    rows = [dict(zip(RESOURCE_HEADER, RESOURCE_GOOD)),
            {**dict(zip(RESOURCE_HEADER, RESOURCE_GOOD)), "period": "2021-13"},
            {**dict(zip(RESOURCE_HEADER, RESOURCE_GOOD)), "amount": "-3"},
            {**dict(zip(RESOURCE_HEADER, RESOURCE_GOOD)), "period": "2040-01"},
            {**dict(zip(RESOURCE_HEADER, RESOURCE_GOOD)), "amount": "0.105"},
            {**dict(zip(RESOURCE_HEADER, RESOURCE_GOOD)), "amount": "1234.56"}]
    path = _write(tmp_path, "r.csv", _csv_text(rows, header=RESOURCE_HEADER))
    totals, accepted, rejects = _run(tmp_path, path, kind="resource")
    # amounts are exact decimals of cents: 1234.56 is not the double nearest to it
    assert totals["accepted"] == 2
    assert accepted.schema.field("amount").type == pa.decimal128(18, 2)
    assert accepted.column("amount").to_pylist() == [Decimal("1500.00"), Decimal("1234.56")]
    assert str(accepted.column("period").to_pylist()[0]) == "2021-03-01"
    assert rejects.column("reason").to_pylist() == ["bad_date", "negative_amount", "year_out_of_range", "sub_cent_amount"]


def test_register_rejects_bad_nirs(tmp_path):
    header = ["nir", "sex", "birth_date", "birth_place", "last_name", "first_names"]
    rows = [dict(zip(header, ["177127400100163", "1", "1977-12-16", "74001", "DUPUY", "FREDERIC"])),
            dict(zip(header, ["177127400100199", "1", "1977-12-16", "74001", "DUPUY", "FREDERIC"])),
            dict(zip(header, ["", "1", "1977-12-16", "74001", "DUPUY", "FREDERIC"])),
            dict(zip(header, ["177127400100163", "X", "1977-12-16", "74001", "DUPUY", "FREDERIC"]))]
    totals, accepted, rejects = _run(tmp_path, _write(tmp_path, "reg.csv", _csv_text(rows, header=header)),
                                     kind="register")
    assert totals["accepted"] == 1
    assert rejects.column("reason").to_pylist() == ["bad_nir", "missing_value", "bad_sex"]


# ------------------------------------------------------------------ errors that stop the stage

def _good_parquet(tmp_path, name="good.parquet", **overrides):
    data = {h: [v] for h, v in zip(HEADER, GOOD)}
    data["year"] = [2015]
    data["gross_salary"] = [25000.5]
    data.update(overrides)
    path = tmp_path / name
    pq.write_table(pa.table(data), path)
    return path


def _error(tmp_path, path, cls, *fragments, kind="career", **kw):
    spec = InputSpec("in", kind, (str(path),), **kw)
    with pytest.raises(cls) as info:
        run_ingest([spec], tmp_path / "out")
    text = str(info.value)
    for f in fragments:
        assert f in text, text
    assert not (tmp_path / "out").exists(), "nothing may be published when a file cannot be read"
    return text


def test_missing_file(tmp_path):
    _error(tmp_path, tmp_path / "nope.csv", InputFileError, "nope.csv", "no such file")


def test_empty_file(tmp_path):
    _error(tmp_path, _write(tmp_path, "empty.csv", b""), InputFileError, "empty.csv", "empty file")


def test_blank_file(tmp_path):
    _error(tmp_path, _write(tmp_path, "blank.csv", b"\n\n  \n"), InputFileError, "blank.csv", "empty file")


def test_truncated_parquet(tmp_path):
    good = _good_parquet(tmp_path)
    data = good.read_bytes()
    bad = _write(tmp_path, "trunc.parquet", data[: len(data) // 2])
    _error(tmp_path, bad, InputFileError, "trunc.parquet", "not a readable Parquet file")


def test_text_file_named_parquet(tmp_path):
    _error(tmp_path, _write(tmp_path, "fake.parquet", "a;b\n1;2\n"), InputFileError, "fake.parquet", "Parquet")


def test_corrupted_parquet_pages(tmp_path):
    path = tmp_path / "corrupt.parquet"
    table = pa.table({h: [v] * 5000 for h, v in zip(HEADER, GOOD)})
    pq.write_table(table, path, compression="snappy")
    data = bytearray(path.read_bytes())
    for i in range(200, 2200):
        data[i] = 0xFF
    path.write_bytes(bytes(data))
    _error(tmp_path, path, InputFileError, "corrupt.parquet")


def test_missing_column_csv(tmp_path):
    header = [h for h in HEADER if h != "employer_id"]
    path = _write(tmp_path, "nocol.csv", _csv_text([_row()], header=header))
    _error(tmp_path, path, SchemaError, "nocol.csv", "missing column 'employer_id'")


def test_missing_mapped_column_parquet(tmp_path):
    path = _good_parquet(tmp_path)
    _error(tmp_path, path, SchemaError, "good.parquet", "missing column 'siret'", columns=(("employer_id", "siret"),))


def test_wrong_parquet_type(tmp_path):
    path = _good_parquet(tmp_path, gross_salary=[True])
    _error(tmp_path, path, SchemaError, "good.parquet", "'gross_salary'", "type bool", "expected a number")


def test_unterminated_quote(tmp_path):
    text = _csv_text([_row()]) + '2;"177127400100163;DUPUY\n'
    _error(tmp_path, _write(tmp_path, "open.csv", text), InputFileError, "open.csv", "unterminated quoted field")


def test_duplicate_header(tmp_path):
    text = ";".join([*HEADER, "year"]) + "\n" + ";".join([*GOOD, "2015"]) + "\n"
    _error(tmp_path, _write(tmp_path, "dup.csv", text), InputFileError, "dup.csv", "duplicate column names")


def test_binary_garbage_named_csv(tmp_path):
    _error(tmp_path, _write(tmp_path, "bin.csv", b"\x00\x01\x02\x03" * 100), InputFileError, "bin.csv")


def test_every_problem_is_reported_at_once(tmp_path):
    specs = [InputSpec("a", "career", (str(tmp_path / "missing1.csv"),)),
             InputSpec("b", "career", (str(_write(tmp_path, "e.csv", b"")),))]
    with pytest.raises(InputFileError) as info:
        run_ingest(specs, tmp_path / "out")
    assert "missing1.csv" in str(info.value) and "e.csv" in str(info.value)


def test_parquet_native_types_are_accepted(tmp_path):
    import datetime as dt

    path = _good_parquet(tmp_path, start_date=[dt.date(2015, 1, 1)], end_date=[dt.date(2015, 12, 31)],
                         days=[365], record_id=[7],
                         last_name=pa.array(["DUPUY"]).dictionary_encode())
    totals, accepted, _ = _run(tmp_path, path)
    assert totals["accepted"] == 1 and accepted.column("record_id").to_pylist() == [7]


# ------------------------------------------------------------------ duplicate record ids

def test_duplicate_record_ids_within_and_across_inputs_keep_the_first_row(tmp_path):
    """Policy: one accepted row per record id and kind; later ones (job order: input, file,
    row) are rejected as duplicate_record_id, and each file's counts still reconcile."""
    a = _write(tmp_path, "a.csv", _csv_text([_row(record_id="1"), _row(record_id="2"), _row(record_id="1"),
                                             _row(record_id="3", birth_date="bad")]))
    b = _write(tmp_path, "b.csv", _csv_text([_row(record_id="2"), _row(record_id="3"), _row(record_id="4")]))
    specs = [InputSpec("first", "career", (str(a),)), InputSpec("second", "career", (str(b),))]
    manifest = run_ingest(specs, tmp_path / "out")
    for name, (read, accepted, rejected, dups) in {"first": (4, 2, 2, 1), "second": (3, 2, 1, 1)}.items():
        t = manifest["inputs"][name]["totals"]
        assert (t["rows_read"], t["accepted"], t["rejected"]) == (read, accepted, rejected), (name, t)
        assert t["reasons"].get("duplicate_record_id", 0) == dups
        assert manifest["inputs"][name]["accepted"]["rows"] == accepted
        assert manifest["inputs"][name]["rejects"]["rows"] == rejected
    first = pq.read_table(tmp_path / "out" / "first")
    second = pq.read_table(tmp_path / "out" / "second")
    assert first.column("record_id").to_pylist() == [1, 2]
    # id 3's first row was rejected (bad date): the accepted row of id 3 in the second input stands
    assert second.column("record_id").to_pylist() == [3, 4]
    rejects = pq.read_table(tmp_path / "out" / "rejects").to_pylist()
    dup = sorted((r["source_file"], r["row_number"], r["record_id"]) for r in rejects
                 if r["reason"] == "duplicate_record_id")
    assert dup == [(str(a), 3, 1), (str(b), 1, 2)]
    kept_at = {r["record_id"]: r["value"] for r in rejects if r["reason"] == "duplicate_record_id"}
    assert "input first" in kept_at[2] and f"{a} row 2" in kept_at[2]
    assert all(r["raw"]["last_name"] == "DUPUY" for r in rejects if r["reason"] == "duplicate_record_id")


def test_generated_record_ids_are_not_checked_and_never_collide(tmp_path):
    header = [h for h in HEADER if h != "record_id"]
    path = _write(tmp_path, "n.csv", _csv_text([_row(), _row()], header=header))
    totals, accepted, _ = _run(tmp_path, path)
    assert totals["accepted"] == 2 and len(set(accepted.column("record_id").to_pylist())) == 2
    assert not (tmp_path / "out" / "_duplicates").exists()


def test_header_names_with_spaces_are_trimmed(tmp_path):
    header = [f" {h.upper()} " for h in HEADER]
    text = _csv_text([dict(zip(header, GOOD))], header=header)
    totals, accepted, _ = _run(tmp_path, _write(tmp_path, "sp.csv", text))
    assert totals["accepted"] == 1 and accepted.column("last_name_key").to_pylist() == ["DUPUY"]


def test_cr_only_line_endings(tmp_path):
    text = _csv_text([_row(), _row(record_id="2", start_date="2015-01-01 xyz")]).replace("\n", "\r")
    totals, accepted, rejects = _run(tmp_path, _write(tmp_path, "cr.csv", text))
    assert (totals["accepted"], totals["rejected"]) == (1, 1)
    assert rejects.column("reason").to_pylist() == ["bad_date"] and rejects.column("row_number").to_pylist() == [2]


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 8), st.booleans()), max_size=12))
def test_chunks_to_check_are_exactly_the_overlapping_or_repeating_ones(chunks):
    """Oracle: a chunk is checked iff its own ids repeat or its id range meets another chunk's."""
    summaries = [{"min": lo, "max": lo + width, "unique": unique, "id": i}
                 for i, (lo, width, unique) in enumerate(chunks)]
    want = {s["id"] for s in summaries if not s["unique"] or any(
        o is not s and o["min"] <= s["max"] and s["min"] <= o["max"] for o in summaries)}
    assert {s["id"] for s in chunks_to_check(summaries)} == want


@settings(max_examples=12)
@given(st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=9), min_size=1, max_size=3), st.booleans())
def test_duplicate_ids_in_chunks_and_files_keep_the_first_row(tmp_path_factory, files, increasing):
    """Oracle (pandas): in job order (file, row), the first row of each record id is kept and
    every later one is rejected; with ids increasing across files nothing is checked."""
    tmp_path = tmp_path_factory.mktemp("dup")
    if increasing:  # one delivery numbered by increasing ids across its files
        files = [[100 * k + j for j in range(len(ids))] for k, ids in enumerate(files)]
    names = ["DUPUY", "MARTIN", "DURAND"]  # identities vary, so moving a row changes its part's signatures
    paths = [_write(tmp_path, f"c{k}.csv", _csv_text([_row(record_id=str(i), last_name=names[(k + r) % 3])
                                                      for r, i in enumerate(ids)]))
             for k, ids in enumerate(files)]
    manifest = run_ingest([InputSpec("in", "career", tuple(str(p) for p in paths))], tmp_path / "out", chunk_rows=2)
    rows = pd.DataFrame([(k, r, i) for k, ids in enumerate(files) for r, i in enumerate(ids)],
                        columns=["file", "row", "record_id"])
    kept = rows[~rows.duplicated("record_id")]
    accepted = pq.read_table(tmp_path / "out" / "in").to_pandas()
    assert sorted(accepted["record_id"]) == sorted(kept["record_id"])
    got = accepted.assign(file=accepted["source_file"].map({str(p): k for k, p in enumerate(paths)}),
                          row=accepted["row_number"] - 1)
    assert sorted(zip(got["file"], got["row"])) == sorted(zip(kept["file"], kept["row"]))
    totals = manifest["inputs"]["in"]["totals"]
    assert totals["rejected"] == totals["reasons"].get("duplicate_record_id", 0) == len(rows) - len(kept)
    check = manifest["duplicate_check"]["career"]
    assert check["duplicates"] == len(rows) - len(kept)
    if increasing:
        assert check["chunks_checked"] == 0
    rejects = pq.read_table(tmp_path / "out" / "rejects" / "in").to_pylist() if len(rows) > len(kept) else []
    for r in rejects:  # a moved row keeps its own fields as delivered
        k = [str(p) for p in paths].index(r["source_file"])
        assert r["raw"]["last_name"] == names[(k + r["row_number"] - 1) % 3]
    _signatures_match_their_parts(tmp_path / "out", "in")


def _signatures_match_their_parts(out, name):
    """Each part file of accepted rows has an identities file (what the link stage reads)
    holding each of its signatures once, with its identity (whose hash the signature is) and
    the number of the part's rows carrying it, also after duplicates moved out of the part."""
    import numpy as np

    from nirlink.linkage._prepare import signature_ids
    from nirlink.linkage._signatures import distinct_signatures

    parts = sorted((out / name).glob("*.parquet"))
    assert [p.name for p in parts] == [p.name for p in sorted((out / "identities" / name).glob("*.parquet"))]
    for part in parts:
        rows = pq.read_table(part)
        identities = pq.read_table(out / "identities" / name / part.name)
        assert identities.column("signature").to_pylist() == signature_ids(identities).tolist()
        side = distinct_signatures(str(out / "identities" / name / part.name))
        ids, counts = np.unique(rows.column("signature").to_numpy(), return_counts=True)
        assert side.column("unique_id").to_pylist() == ids.tolist()
        assert side.column("rows").to_pylist() == counts.tolist()


def test_a_file_delivered_twice_is_read_once_more_for_its_rejects(tmp_path, monkeypatch):
    """Every chunk of the second copy holds duplicates: the pass reads that file once (not once
    per chunk), rejects every row with its fields as delivered, and leaves no part or
    identities file of it."""
    import nirlink.engine.io._readers as readers

    names = ["DUPUY", "MARTIN", "DURAND"] * 20
    rows = [_row(record_id=str(i), last_name=n) for i, n in enumerate(names, 1)]
    a = _write(tmp_path, "a.csv", _csv_text(rows))
    b = _write(tmp_path, "b.csv", _csv_text(rows))
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 1)  # blocks of a few lines (~1 KB): chunks of 20 rows
    reads = []
    original = readers.read_chunks
    monkeypatch.setattr(readers, "read_chunks", lambda task, **kw: reads.append(task.path) or original(task, **kw))
    manifest = run_ingest([InputSpec("in", "career", (str(a), str(b)))], tmp_path / "out", chunk_rows=20)
    assert reads == [str(b)]  # the ingest tasks' own reads are not counted here (their import is their own)
    files = manifest["inputs"]["in"]["files"]
    assert (files[str(a)]["accepted"], files[str(b)]["rejected"]) == (60, 60)
    rejects = pq.read_table(tmp_path / "out" / "rejects" / "in").to_pylist()
    assert [r["raw"]["last_name"] for r in sorted(rejects, key=lambda r: r["row_number"])] == names
    assert {p.name for p in (tmp_path / "out" / "in").glob("*.parquet")} == \
        {p.name for p in (tmp_path / "out" / "identities" / "in").glob("*.parquet")}
    parts = sorted(p.name for p in (tmp_path / "out" / "in").glob("*.parquet"))
    assert len(parts) == 3 and all(p.startswith("part-00-00000-") for p in parts)  # a.csv's three chunks only
    _signatures_match_their_parts(tmp_path / "out", "in")


def test_one_identity_however_its_nir_is_spelt(tmp_path):
    """Spellings of one NIR (separators, case of a Corsican department) are one signature, and
    its identity holds the NIR as the signature hashes it, not the first row's spelling."""
    spellings = ["1 77 12 74 001 001 63", "177127400100163", "1.77.12.74.001.001-63"]
    rows = [_row(record_id=str(i), declared_nir=n) for i, n in enumerate(spellings, 1)]
    totals, accepted, _ = _run(tmp_path, _write(tmp_path, "s.csv", _csv_text(rows)))
    assert totals["accepted"] == 3 and len(set(accepted.column("signature").to_pylist())) == 1
    identities = pq.read_table(tmp_path / "out" / "identities" / "in").to_pylist()
    assert [(r["declared_nir"], r["rows"]) for r in identities] == [("177127400100163", 3)]
    corsica = [_row(record_id="1", declared_nir="1 77 12 2a 001 001 63"),
               _row(record_id="2", declared_nir="177122A00100163")]
    _run(tmp_path / "c", _write(tmp_path, "c.csv", _csv_text(corsica)))
    identities = pq.read_table(tmp_path / "c" / "out" / "identities" / "in").to_pylist()
    assert [(r["declared_nir"], r["rows"]) for r in identities] == [("177122A00100163", 2)]
