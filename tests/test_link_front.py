"""`nirlink link`, the general front: inputs read as ingest reads them and checked before anything
runs, model files validated with paths and their SQL compiled up front, ids as given in every
output, settings honoured, decisions, the size rule, Splink's own forms as input, evaluation
against a truth, the shipped example models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nirlink.engine import SpecError
from nirlink.engine.cli import app
from nirlink.engine.synth._people import people, true_pairs
from nirlink.linkage import load_model

MODELS = Path(__file__).parent.parent / "linkage" / "models"
runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _small_model(tmp_path: Path, *, trained: bool = False, **changes) -> Path:
    """A small dedupe model on first_name, surname, postcode (levels in SQL); ``trained``: with
    m and u set by hand (exact: m 0.9, u 0.01)."""
    model = {
        "format": "nirlink-model/1", "name": "small", "link_type": "dedupe_only", "id_column": "id",
        "comparisons": [
            {"name": "first_name", "levels": [
                {"label": "missing", "sql": "l.first_name IS NULL OR r.first_name IS NULL", "null": True},
                {"label": "exact", "sql": "l.first_name = r.first_name"}, {"label": "else", "sql": "ELSE"}]},
            {"name": "surname", "levels": [
                {"label": "missing", "sql": "l.surname IS NULL OR r.surname IS NULL", "null": True},
                {"label": "exact", "sql": "l.surname = r.surname", "tf_column": "surname"},
                {"label": "else", "sql": "ELSE"}]},
            {"name": "postcode", "levels": [
                {"label": "missing", "sql": "l.postcode IS NULL OR r.postcode IS NULL", "null": True},
                {"label": "exact", "sql": "l.postcode = r.postcode"}, {"label": "else", "sql": "ELSE"}]},
        ],
        "blocking": [{"name": "surname3", "left_keys": ["substr(surname, 1, 3)"]}],
        "training": {"u_max_pairs": 20000, "em_blocking": [["postcode"]]},
        "decision": {"threshold": 0.5},
        **changes,
    }
    if trained:
        from nirlink.linkage._model_file import model_from_data

        settings = model_from_data(model).splink_settings()
        for comp in settings["comparisons"]:
            for lv in comp["comparison_levels"]:
                if not lv.get("is_null_level"):
                    exact = lv["label_for_charts"] == "exact"
                    lv["m_probability"], lv["u_probability"] = (0.9, 0.01) if exact else (0.1, 0.99)
        model["splink"] = settings
    path = tmp_path / f"model-{len(list(tmp_path.glob('model-*.json')))}.json"
    path.write_text(json.dumps(model))
    return path


# ------------------------------------------------------------------ inputs


RAW = ('id ; first_name ;surname; postcode ;dob\n'
       '007;Anne;Martin;01234;1980-01-02\n'
       '008;Anne;Martin;01234;\n'
       '010;;Martinez; ;1979-05-06\n'
       '9;Paul;Durand;75001;1990-12-31\n')


def test_raw_csv_reads_as_ingest_reads_it(tmp_path):
    """Padded header names, ';' separator, leading zeros kept, empty and blank fields null,
    ids as given (text) in every output."""
    from nirlink.engine.io._tables import read_table

    csv = tmp_path / "raw.csv"
    csv.write_text(RAW)
    t = read_table(csv, ["id", "first_name", "surname", "postcode", "dob"])
    assert t.column("id").to_pylist() == ["007", "008", "010", "9"]
    assert t.column("postcode").to_pylist() == ["01234", "01234", None, "75001"]
    assert t.column("first_name").to_pylist()[2] is None and t.column("dob").to_pylist()[1] is None
    typed = read_table(csv, ["dob"], types={"dob": "date"})
    assert str(typed.column("dob").type) == "date32[day]" and typed.column("dob").null_count == 1
    out = tmp_path / "out"
    result = _cli("link", "--model", _small_model(tmp_path, trained=True), "--input", csv, "--out", out,
                  "--min-probability", "0")
    assert result.exit_code == 0, result.output
    pairs = pq.read_table(out / "pairs")
    assert pairs.column_names[:2] == ["id_l", "id_r"] and set(pairs.column("id_l").to_pylist()) <= {"007", "008", "010"}
    clusters = pq.read_table(out / "clusters")
    assert sorted(clusters.column("id").to_pylist()) == ["007", "008", "010", "9"]  # every record
    assert dict(zip(clusters.column("id").to_pylist(), clusters.column("cluster_id").to_pylist()))["008"] == "007"


def test_input_errors_name_the_file_and_come_before_anything_is_written(tmp_path, monkeypatch):
    import nirlink.cluster

    def no_cluster(*a, **k):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(nirlink.cluster, "open_client", no_cluster)
    model = _small_model(tmp_path)
    (tmp_path / "header.csv").write_text("id,first_name,surname,postcode\n")
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "first_name": pa.array([], pa.string()),
                             "surname": pa.array([], pa.string()), "postcode": pa.array([], pa.string())}),
                   tmp_path / "empty.parquet")
    (tmp_path / "nosurname.csv").write_text("id,first_name,postcode,city\n1,A,01000,X\n")
    (tmp_path / "dup.csv").write_text("id,first_name,surname,postcode\n1,A,B,C\n1,D,E,F\n")
    cases = {"header.csv": "no data rows", "empty.parquet": "no data rows",
             "nosurname.csv": "no column 'surname' (comparison 'surname' of the model 'small'); the file has: "
                              "id, first_name, postcode, city",
             "dup.csv": "column 'id' (the record id) is not unique"}
    for name, message in cases.items():
        out = tmp_path / f"out-{name}"
        result = _cli("link", "--model", model, "--input", tmp_path / name, "--out", out, "--run-on", "cluster")
        assert result.exit_code == 1 and message in result.output, (name, result.output)
        assert "Traceback" not in result.output and not out.exists()


# ------------------------------------------------------------------ model files


def test_model_file_errors_have_their_paths(tmp_path):
    base = json.loads(_small_model(tmp_path).read_text())
    bad = {**base, "trainig": {}, "decision": {"threshold": 1.5},
           "training": {"em_blocking": [3], "m_fixed": {"nope": {"x": 0.5}}}}
    bad["comparisons"][0]["levels"][1]["tf_colum"] = "x"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(SpecError) as info:
        load_model(path)
    errors = dict(info.value.errors)
    assert set(errors) == {"trainig", "decision.threshold", "training.em_blocking[0]",
                           "comparisons[0].levels[1].tf_colum"}
    assert errors["trainig"].startswith("unknown key (expected one of: format, name")
    assert "less than 1, got 1.5" in errors["decision.threshold"]
    bad = {**base, "comparisons": [{"name": "x", "library": {"function": "JaroWinkler", "args": {}}}],
           "training": {"m_fixed": {"nope": {"x": 0.5}}}}
    path.write_text(json.dumps(bad))
    with pytest.raises(SpecError) as info:
        load_model(path)
    errors = dict(info.value.errors)
    assert "not in Splink's comparison library" in errors["comparisons[0].library.function"]
    assert errors["training.m_fixed.nope"] == "no comparison named 'nope'"


def test_sql_errors_name_the_level_with_duckdbs_message(tmp_path):
    csv = tmp_path / "raw.csv"
    csv.write_text(RAW)
    base = json.loads(_small_model(tmp_path).read_text())
    base["comparisons"][0]["levels"][1] = {"label": "JW", "sql": "jaro_winkler(l.first_name, r.first_name) > 0.9"}
    base["training"]["em_blocking"] = [["levenshtein(postcode)"]]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(base))
    result = _cli("link", "--model", path, "--input", csv, "--out", tmp_path / "out")
    assert result.exit_code == 1 and not (tmp_path / "out").exists()
    lines = result.output.strip().splitlines()
    assert lines[0] == "error: model 'small': 2 errors"
    assert lines[1].startswith("  comparison 'first_name', level 'JW': Catalog Error: Scalar Function with name "
                               "jaro_winkler does not exist!")
    assert lines[2].startswith("  training.em_blocking[0]: Binder Error: No function matches") and len(lines) == 3
    base["training"]["em_blocking"] = [["post_code"]]
    path.write_text(json.dumps(base))
    result = _cli("link", "--model", path, "--input", csv, "--out", tmp_path / "out")
    assert "no column 'post_code' (training.em_blocking[0] of the model 'small'); the file has: id, first_name, " \
        "surname, postcode, dob" in result.output


def test_an_error_inside_splink_comes_out_in_one_line_with_duckdbs_message(tmp_path):
    csv = tmp_path / "raw.csv"
    csv.write_text(RAW)
    base = json.loads(_small_model(tmp_path, trained=True).read_text())
    cast = "CAST(l.first_name AS INTEGER) = CAST(r.first_name AS INTEGER)"  # binds on empty tables, fails on data
    base["comparisons"][0]["levels"][1]["sql"] = cast
    for lv in base["splink"]["comparisons"][0]["comparison_levels"]:
        if lv["label_for_charts"] == "exact":
            lv["sql_condition"] = 'CAST("first_name_l" AS INTEGER) = CAST("first_name_r" AS INTEGER)'
    path = tmp_path / "m.json"
    path.write_text(json.dumps(base))
    result = _cli("link", "--model", path, "--input", csv, "--out", tmp_path / "out")
    assert result.exit_code == 1 and not (tmp_path / "out").exists()
    line = result.output.strip()
    assert line.startswith("error: scoring: Splink failed: Conversion Error:") and "\n" not in line
    assert "__splink__" not in line and "SELECT" not in line and "Anne" not in line and "Paul" not in line


def test_the_reference_names_every_field_of_the_schema():
    from nirlink.linkage._model_file import schema_fields

    doc = (Path(__file__).parent.parent / "docs" / "model-file.md").read_text()
    missing = [f"{section}.{name}" for section, names in schema_fields().items() for name in names
               if f"| `{name}` |" not in doc]
    assert not missing


# ------------------------------------------------------------------ the example models, evaluation


@pytest.fixture(scope="module")
def person_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("people")
    left, right = people(3000, mode="link", seed=5)
    (dedupe,) = people(2500, mode="dedupe", seed=6)
    for name, t in (("left.csv", left), ("right.csv", right), ("dedupe.csv", dedupe)):
        pacsv.write_csv(t, base / name)
    pq.write_table(true_pairs([left, right]), base / "true_pairs.parquet")
    return base


def test_person_link_example_with_best_match_and_evaluation(person_files, tmp_path):
    out = tmp_path / "link"
    result = _cli("link", "--model", MODELS / "person-link.json", "--input", person_files / "left.csv",
                  "--input", person_files / "right.csv", "--out", out, "--output", "json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output[result.output.index("{"):])
    assert manifest["settings"]["min_probability"] == 0.01 and manifest["execution"]["where"] == "this process"
    links = pq.read_table(out / "links")
    assert links.num_rows == 1500 and set(links.column("status").to_pylist()) <= {"linked", "ambiguous", "unlinked"}
    assert all(v.startswith("L") for v in links.column("id_l").to_pylist())
    runs = {}
    for truth in (("--labels", "person_id"), ("--true-pairs", person_files / "true_pairs.parquet")):
        result = _cli("evaluate", "--links", out, *truth, "--output", "json")
        assert result.exit_code == 0, result.output
        runs[truth[0]] = json.loads(result.output)
    assert runs["--labels"] == runs["--true-pairs"]
    at = {r["threshold"]: r for r in runs["--labels"]["thresholds"]}
    assert at[0.9]["precision"] >= 0.99 and at[0.9]["recall"] >= 0.95
    assert runs["--labels"]["blocking"]["reach"] >= 0.97
    assert runs["--labels"]["true_pairs"] == 1050  # 70% of the 1500 left persons are in the right input
    linked = links.filter(pa.compute.equal(links.column("status"), "linked"))
    assert linked.num_rows <= at[0.9]["predicted"]


def test_person_dedupe_example_from_splinks_comparison_library(person_files, tmp_path):
    out = tmp_path / "dedupe"
    result = _cli("link", "--model", MODELS / "person-dedupe.json", "--input", person_files / "dedupe.csv",
                  "--out", out)
    assert result.exit_code == 0, result.output
    clusters = pq.read_table(out / "clusters").to_pandas()
    smallest = clusters.groupby("cluster_id")["id"].min()
    assert len(clusters) == 2500 and (smallest.index == smallest.values).all()  # cluster id = smallest member id
    report = json.loads(_cli("evaluate", "--links", out, "--labels", "person_id", "--output", "json").output)
    at = {r["threshold"]: r for r in report["thresholds"]}
    assert at[0.95]["precision"] >= 0.99 and at[0.95]["recall"] >= 0.9


# ------------------------------------------------------------------ decisions


class _Prep:
    def __init__(self, left, right=None):
        from nirlink.linkage._front import Side

        self.id_column = "id"
        self.sides = [Side(n, n, pa.array(ids), np.arange(len(ids)), None, None)
                      for n, ids in zip(("left", "right"), [left] + ([right] if right else []))]
        self.dedupe = right is None


def _pred(rows):
    return pa.table({"unique_id_l": pa.array([r[0] for r in rows], pa.int64()),
                     "unique_id_r": pa.array([r[1] for r in rows], pa.int64()),
                     "match_weight": pa.array([r[2] for r in rows], pa.float64()),
                     "match_probability": pa.array([1 / (1 + 2 ** -r[2]) for r in rows], pa.float64())})


def test_best_match_with_margin():
    from nirlink.linkage._front_decide import best_match

    prep = _Prep(["a", "b", "c", "d"], ["x", "y", "z"])
    pred = _pred([(0, 0, 10.0), (0, 1, 9.0), (1, 1, 10.0), (1, 2, 5.0), (3, 2, -1.0)])
    table, summary = best_match(prep, pred, threshold=0.9, margin=2.0)
    rows = {r["id_l"]: r for r in table.to_pylist()}
    assert rows["a"]["status"] == "ambiguous" and rows["a"]["id_r"] is None and rows["a"]["best_candidate"] == "x"
    assert rows["b"]["status"] == "linked" and rows["b"]["id_r"] == "y" and rows["b"]["runner_up_match_weight"] == 5.0
    assert rows["c"]["status"] == "unlinked" and rows["c"]["candidates"] == 0
    assert rows["d"]["status"] == "unlinked" and rows["d"]["best_candidate"] == "z"  # below the threshold
    assert summary == {"linked": 1, "ambiguous": 1, "unlinked": 2}
    assert best_match(prep, pred, threshold=0.9, margin=0.5)[1]["linked"] == 2


def test_clusters_hold_every_record_under_their_smallest_id():
    from nirlink.linkage._front_decide import clusters

    prep = _Prep(["1", "2", "3", "4", "5"])  # internal ids are ranks of the sorted ids
    table, summary = clusters(prep, _pred([(1, 3, 10.0), (3, 4, 10.0), (0, 2, -5.0)]), threshold=0.5)
    assert dict(zip(table.column("id").to_pylist(), table.column("cluster_id").to_pylist())) == \
        {"1": "1", "2": "2", "3": "3", "4": "2", "5": "2"}
    assert summary["clusters"] == 3 and summary["records_in_clusters_of_two_or_more"] == 3
    link = _Prep(["a", "b"], ["a", "c"])
    table, _ = clusters(link, _pred([(1, 0, 10.0)]), threshold=0.5)
    assert table.column("cluster_id").to_pylist() == ["left-__-a", "left-__-b", "left-__-b", "right-__-c"]


# ------------------------------------------------------------------ settings, the size rule, the cluster


def test_settings_and_the_size_rule_are_honoured(person_files, tmp_path, monkeypatch, dask_client):
    """Small inputs run in this process; above nirlink.linkage.in-process-rows on the cluster, partitioned
    by rows-per-scoring-task and on the expression keys, with the same pairs; the prediction floor comes
    from the setting or --min-probability and is stated in the manifest."""
    import contextlib

    import dask.config

    import nirlink.cluster

    @contextlib.contextmanager
    def test_cluster(*a, **k):
        yield dask_client

    monkeypatch.setattr(nirlink.cluster, "open_client", test_cluster)
    args = ["link", "--model", _small_model(tmp_path, trained=True), "--input", person_files / "dedupe.csv",
            "--output", "json"]

    def run(name, *extra, **settings):
        with dask.config.set({f"nirlink.linkage.{k.replace('_', '-')}": v for k, v in settings.items()}):
            result = _cli(*args, "--out", tmp_path / name, *extra)
        assert result.exit_code == 0, result.output
        manifest = json.loads(result.output[result.output.index("{"):])
        pairs = pq.read_table(tmp_path / name / "pairs").to_pandas().sort_values(["id_l", "id_r"])
        return manifest, pairs.reset_index(drop=True)

    here, here_pairs = run("here")
    assert here["execution"]["where"] == "this process" and here["settings"]["min_probability"] == 0.01
    assert here["settings"]["min_probability_from"] == "nirlink.linkage.prediction-floor"
    there, there_pairs = run("there", in_process_rows=1000, rows_per_scoring_task=400)
    assert there["execution"]["where"] == "cluster" and there["result"]["scoring"]["tasks"] >= 6
    assert there["settings"]["rows_per_scoring_task"] == 400
    assert there_pairs[["id_l", "id_r", "rule"]].equals(here_pairs[["id_l", "id_r", "rule"]])
    assert np.abs(there_pairs["match_weight"] - here_pairs["match_weight"]).max() < 1e-9
    floor, floor_pairs = run("floor", prediction_floor=0.5)
    assert floor["settings"]["min_probability"] == 0.5 and floor_pairs["match_probability"].min() >= 0.5
    assert len(floor_pairs) < len(here_pairs)
    everything, all_pairs = run("all", "--min-probability", "0", prediction_floor=0.5)
    assert everything["settings"]["min_probability_from"] == "--min-probability"
    assert len(all_pairs) > len(here_pairs) and all_pairs["match_probability"].min() < 0.01


def test_term_frequencies_come_from_both_inputs():
    from nirlink.linkage._front import term_frequencies
    from nirlink.linkage._model_file import model_from_data

    model = model_from_data({"format": "nirlink-model/1", "name": "tf", "link_type": "link_only", "comparisons": [
        {"name": "s", "levels": [{"label": "exact", "sql": "l.s = r.s", "tf_column": "s"},
                                 {"label": "else", "sql": "ELSE"}]}], "blocking": [{"name": "s", "left_keys": ["s"]}]})
    tf = term_frequencies(model, [pa.table({"s": ["a", "a", "b"]}), pa.table({"s": ["b", "c", None]})])["s"]
    assert dict(zip(tf.column("s").to_pylist(), tf.column("tf_s").to_pylist())) == {"a": 0.4, "b": 0.4, "c": 0.2}


@pytest.mark.parametrize("mode", ["link", "dedupe"])
def test_a_sampled_training_finds_the_datas_prior(mode):
    """Each side is sampled uniformly and on its own, so the share of pairs that match is the
    data's: the prior trained on half (link: half of each side) or a quarter (dedupe) of the
    records is the prior trained on all of them, not that prior times the share sampled."""
    from nirlink.linkage._front import prepare, train_on

    tables = people(12000, mode=mode, seed=5)
    priors = {}
    for cap in (10**9, 3000):
        model = load_model(MODELS / f"person-{mode}.json")
        model.training = {**model.training, "sample_max_register_rows": cap}
        prep = prepare(model, [(f"input{i}", t) for i, t in enumerate(tables)])
        sides = [s.train for s in prep.sides]
        info = train_on(model, sides[0], sides[1] if len(sides) > 1 else None, threads=2)
        assert info["sample_left_rows"] == min(cap, tables[0].num_rows)
        priors[cap] = info["probability_two_random_records_match"]
    share = 3000 / tables[0].num_rows
    assert share <= 0.5
    assert 0.8 < priors[3000] / priors[10**9] < 1.25, (priors, share)


@pytest.mark.parametrize("quoted", ['"16/12/1977"', "'DUPUY'", '"Mouhamed Bonnefoy"', "'mouhamed'"])
def test_splinks_errors_mask_values_in_either_quotes(quoted):
    """A Splink error quoting a record's value (DuckDB quotes a date it cannot convert in double
    quotes, a string in single ones) reaches the user masked, whatever the quotes."""
    from nirlink.linkage._front import _splink_errors

    class SplinkException(Exception):
        pass

    with pytest.raises(Exception) as raised:
        with _splink_errors("training"):
            raise SplinkException(f"Error executing SQL\nError was: Conversion Error: invalid date field format: {quoted}, "
                                  "expected format is (YYYY-MM-DD)\nLINE 3: select ...")
    message = str(raised.value)
    assert quoted.strip("'\"") not in message and "(values masked)" in message and "training: Splink failed" in message


_VALUE = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkl éèç'\"-/0123456789"), min_size=4, max_size=20)
_TEMPLATES = ["Conversion Error: Could not convert string '{}' to INT32",
              "Invalid Input Error: Could not parse string '{}' according to format specifier\n{}\n^",
              "Conversion Error: invalid date field format: \"{}\", expected format is (YYYY-MM-DD)",
              "Invalid Input Error: value {} is out of range"]


@settings(max_examples=300, deadline=None)
@given(value=_VALUE, template=st.sampled_from(_TEMPLATES))
def test_splinks_errors_never_show_a_value(value, template):
    """Whatever a record's value holds (an apostrophe as in O'NEIL, a double quote, a date or a
    NIR unquoted), the message the user sees does not hold it; the error's own words stay."""
    from nirlink.linkage._front import _splink_errors

    assume(any(c.isalnum() for c in value) and value.strip() not in "scoring: Splink failed: (values masked)" + template)
    unquoted = "{} is" in template
    assume(not unquoted or sum(c.isdigit() for c in value) >= 4 and set(value) <= set("0123456789/-. "))

    class SplinkException(Exception):
        pass

    with pytest.raises(Exception) as raised:
        with _splink_errors("scoring"):
            raise SplinkException("Error executing SQL\nError was: " + template.replace("{}", value) + "\nLINE 3: select ...")
    message = str(raised.value)
    assert value.strip() not in message, message
    assert message.startswith("scoring: Splink failed: " + template.split(":")[0]), message
