"""The linked rows in export form (engine/stages/_export.py linked_rows) against pandas: every
row once, sorted by person (rows without one last) then record id, dictionary columns decoded,
whatever the chunks and their dictionaries."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from nirlink.engine.stages._export import linked_rows

PERSONS = ["1850575123456", "2991299000001", "1850575123455", "", "A", "b"]


@st.composite
def chunks(draw):
    """Resource rows in 1-4 chunks, each with its own person and kind dictionaries (as each
    bucket file read with ``read_dictionary`` has), record ids unique."""
    n_chunks = draw(st.integers(1, 4))
    ids = iter(draw(st.lists(st.integers(0, 10**12), min_size=60, max_size=60, unique=True)))
    out = []
    for _ in range(n_chunks):
        n = draw(st.integers(0, 15))
        persons = draw(st.lists(st.one_of(st.none(), st.sampled_from(PERSONS)), min_size=n, max_size=n))
        kinds = draw(st.lists(st.sampled_from(["salary", "pension", "benefit"]), min_size=n, max_size=n))
        out.append(pa.table({
            "record_id": pa.array([next(ids) for _ in range(n)], pa.int64()),
            "person": pa.array(persons, pa.string()).dictionary_encode(),
            "period": pa.array([dt.date(2024, 1 + i % 12, 1) for i in range(n)], pa.date32()),
            "kind": pa.array(kinds, pa.string()).dictionary_encode(),
            "amount": pa.array([i for i in range(n)], pa.int64()),
        }))
    return out


@given(chunks(), st.booleans())
@settings(max_examples=150, deadline=None)
def test_linked_rows_are_sorted_by_person_then_record(parts, as_dictionary):
    table = pa.concat_tables(parts) if as_dictionary else pa.concat_tables(
        [p.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_dictionary(f.type) else f for f in p.schema]))
         for p in parts])
    out = linked_rows(table, "resource")
    assert out.schema.field("person").type == pa.string() and out.schema.field("kind").type == pa.string()
    got = out.to_pandas()
    expected = table.to_pandas().astype({"person": object, "kind": object})
    expected["year"] = [d.year for d in expected["period"]]
    expected = expected.assign(_null=expected["person"].isna()).sort_values(
        ["_null", "person", "record_id"], kind="stable").drop(columns="_null").reset_index(drop=True)
    assert list(got.columns) == ["record_id", "person", "period", "kind", "amount", "year"]
    assert got["record_id"].tolist() == expected["record_id"].tolist()
    assert [None if p is None or p != p else p for p in got["person"]] == \
        [None if p is None or p != p else p for p in expected["person"]]
    assert got["kind"].tolist() == expected["kind"].tolist()


@given(chunks())
@settings(max_examples=100, deadline=None)
def test_rows_kept_as_dictionaries_write_the_file_plain_rows_write(tmp_path_factory, parts):
    """The aggregate stage's rows in export form keep the person (cut to its runs) and the small
    dictionaries as dictionaries and write them as they are (``_RowsFile``): the file reads
    back as the plain rows' file does, the same schema and rows."""
    from nirlink.engine.stages._aggregate import _RowsFile

    table = pa.concat_tables(parts)
    plain, kept = linked_rows(table, "resource"), linked_rows(table, "resource", dictionaries=True)
    assert kept.cast(plain.schema).equals(plain)
    person = kept.column("person")
    if pa.types.is_dictionary(person.type):  # one dictionary value per person, in their order
        values = [p for p in plain.column("person").to_pylist()]
        assert person.combine_chunks().dictionary.to_pylist() == list(dict.fromkeys(values))
    else:  # rows without a person: decoded
        assert plain.column("person").null_count or not len(plain)
    out = tmp_path_factory.mktemp("rows")
    for name, rows in (("plain", plain), ("kept", kept)):
        with _RowsFile(out / f"{name}.parquet") as f:
            f.write(rows)
    if len(plain):
        a, b = pq.read_table(out / "plain.parquet"), pq.read_table(out / "kept.parquet")
        assert a.schema == b.schema == plain.schema and a.equals(b) and b.equals(plain)
