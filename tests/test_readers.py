"""CSV reading against Python's csv module: header names matched after trimming, any line
ending (LF, CRLF, CR), quoting; a first line that is data is refused without echoing it."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nirlink.engine.io._readers import CsvOptions, InputSpec, data_like_fields, plan_input, read_chunks
from nirlink.engine.io._schemas import COLUMNS
from nirlink.kernels import InputFileError

NAMES = [c.name for c in COLUMNS["career"]]

padding = st.text(st.sampled_from(" \t"), max_size=3)
header_cell = st.builds(lambda name, left, right, upper: left + (name.upper() if upper else name) + right,
                        st.just(""), padding, padding, st.booleans())
value = st.text(st.sampled_from('ab x1;,"\r\n\u00e9'), max_size=6)


def _read(path, kind="career", **csv_options):
    spec = InputSpec("in", kind, (str(path),), csv=CsvOptions(**csv_options))
    tasks = plan_input(spec, 0, chunk_rows=1000)
    chunks = [c for t in tasks for c in read_chunks(t, chunk_rows=1000)]
    return chunks


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.lists(st.tuples(padding, padding, st.booleans()), min_size=len(NAMES), max_size=len(NAMES)),
       st.lists(st.lists(value, min_size=len(NAMES), max_size=len(NAMES)), max_size=6),
       st.sampled_from(["\n", "\r\n", "\r"]), st.sampled_from([";", ",", "|"]), st.booleans())
@example([(" ", " ", False)] * len(NAMES), [["x"] * len(NAMES)], "\r", ";", False)
def test_csv_reads_like_the_csv_module_with_trimmed_header_names(tmp_path_factory, pads, rows, newline, sep, bom):
    header = [left + (name.upper() if upper else name) + right for name, (left, right, upper) in zip(NAMES, pads)]
    def quoted(v):
        return '"' + v.replace('"', '""') + '"' if any(ch in v for ch in (sep, '"', "\r", "\n")) else v

    text = ("\ufeff" if bom else "") + "".join(sep.join(map(quoted, r)) + newline for r in [header, *rows])
    path = tmp_path_factory.mktemp("csv") / "f.csv"
    path.write_bytes(text.encode("utf-8"))
    # the oracle: Python's csv module (it ends records at LF, CRLF or CR alike), names trimmed
    parsed = [r for r in csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter=sep) if r]
    expected = {h.strip().lower(): [r[i] for r in parsed[1:]] for i, h in enumerate(parsed[0])}
    chunks = _read(path, separator=sep)
    got = {name: [] for name in NAMES}
    for c in chunks:
        assert not c.bad_rows
        for name in NAMES:
            got[name] += [v.decode("utf-8") for v in c.table.column(name).to_pylist()]
    assert got == expected
    assert [n for c in chunks for n in c.row_numbers.tolist()] == list(range(1, len(rows) + 1))


def test_cr_only_file_is_read(tmp_path):
    path = tmp_path / "mac.csv"
    path.write_bytes(("\r".join([";".join(NAMES), ";".join(["1"] * len(NAMES)), ";".join(["2"] * len(NAMES))])
                      + "\r").encode())
    chunks = _read(path)
    assert [v.decode() for c in chunks for v in c.table.column("record_id").to_pylist()] == ["1", "2"]


@pytest.mark.parametrize("cells,fields", [
    (["record_id", "declared_nir", "last_name"], []),
    (["1", "177127400100163", "DUPUY", "Frédéric", "1977-12-16"], [2, 5]),
    (["DUPUY", "16/12/1977", "2021-03", "1500,00", "12345678200010"], [2, 3, 4, 5]),
    (["code_2024", "v1", "amount_eur"], []),
])
def test_data_like_header_cells(cells, fields):
    assert data_like_fields(cells) == fields


def test_header_less_file_is_refused_without_echoing_its_first_row(tmp_path):
    row = ["7", "177127400100163", "ZYGOMATIX", "Philibertine", "1961-07-23", "12345678200010", "2015",
           "2015-01-01", "2015-12-31", "salary", "25000.50", "365"]
    path = tmp_path / "noheader.csv"
    path.write_text(";".join(row) + "\n" + ";".join(row) + "\n")
    with pytest.raises(InputFileError) as info:
        _read(path)
    text = str(info.value)
    assert "noheader.csv" in text and "looks like a data row" in text and "header line" in text
    for v in row:
        if len(v) > 4:
            assert v not in text, v


def test_an_input_directory_reads_every_parquet_suffix_and_refuses_files_it_would_not_read(tmp_path):
    """A directory input reads its .parquet, .parq and .pq files alike (as a file named directly
    is read), and refuses a file it does not read (a compressed CSV) naming it, rather than
    leave its rows out; hidden files and folders, writers' markers (_SUCCESS) and unfinished
    output (_temporary/) are not data; a partition folder (year=2020) is."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nirlink.engine.io._readers import expand_paths, unread_files

    d = tmp_path / "in"
    d.mkdir()
    t = pa.table({"record_id": [1, 2]})
    for name in ("a.parquet", "b.parq", "c.PQ"):
        pq.write_table(t, d / name)
    (d / "_SUCCESS").write_text("")
    (d / ".a.parquet.crc").write_text("")
    # a writer's unfinished output and a hidden folder: their files are not data either
    for folder in ("_temporary/0", ".staging"):
        (d / folder).mkdir(parents=True)
        pq.write_table(t, d / folder / "part-0.parquet")
        (d / folder / "part-1.csv.gz").write_bytes(b"\x1f\x8b")
    (d / "year=2020").mkdir()
    pq.write_table(t, d / "year=2020" / "part-0.parquet")
    files, missing = expand_paths([str(d)])
    assert [f.relative_to(d).as_posix() for f in files] == ["a.parquet", "b.parq", "c.PQ", "year=2020/part-0.parquet"]
    assert not missing
    assert unread_files([str(d)]) == []  # nothing refused
    (d / "d.csv.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(InputFileError, match=r"d\.csv\.gz.*compressed files are not read"):
        plan_input(InputSpec("careers", "career", (str(d),)), 0, chunk_rows=1000)


def test_a_parquet_input_with_a_column_named_twice_is_refused_naming_it(tmp_path):
    """A Parquet file whose schema names a column twice is refused with the column named, as a
    CSV header's duplicate is (not an unexpected failure)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["A"]), pa.array(["B"]), pa.array([1])],
                                        names=["last_name", "last_name", "record_id"]), path)
    with pytest.raises(InputFileError, match=r"dup\.parquet.*duplicate column names: last_name"):
        plan_input(InputSpec("careers", "career", (str(path),)), 0, chunk_rows=1000)
