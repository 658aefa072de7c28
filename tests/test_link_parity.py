"""Parity with plain Splink: trained identically (the same estimators in the same order, u
sampling seeded on the same ids), `nirlink link` and a plain Splink script give the same pairs
and the same match weights within 1e-9, for a link and for a deduplication; a model plain
Splink trained and saved runs unchanged on nirlink with the same result. The comparisons come
from Splink's comparison library in the model file, or as plain Splink settings inside it."""

from __future__ import annotations

import json

import dask.config
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from nirlink.engine.cli import app
from nirlink.engine.synth._people import people

DET = "l.first_name = r.first_name AND l.surname = r.surname AND l.dob = r.dob"
BLOCKING = [["substr(surname, 1, 3)", "dob"], ["first_name", "dob"], ["postcode"]]
EM = [["dob"], ["first_name", "surname"]]
U_PAIRS = 50_000  # fewer than the pairs of the inputs: u comes from a sample drawn on the ids
LIBRARY = [
    {"function": "JaroWinklerAtThresholds", "args": {"col_name": "first_name", "score_threshold_or_thresholds": [0.9, 0.8]}},
    {"function": "JaroWinklerAtThresholds", "args": {"col_name": "surname", "score_threshold_or_thresholds": [0.9]},
     "configure": {"term_frequency_adjustments": True}},
    {"function": "LevenshteinAtThresholds", "args": {"col_name": "dob", "distance_threshold_or_thresholds": [1, 2]}},
    {"function": "ExactMatch", "args": {"col_name": "postcode"}},
]


def _splink_settings(link_type: str) -> dict:
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    comps = []
    for c in LIBRARY:
        comp = getattr(cl, c["function"])(**c["args"])
        comps.append(comp.configure(**c["configure"]) if "configure" in c else comp)
    return SettingsCreator(link_type=link_type, unique_id_column_name="id", comparisons=comps,
                           blocking_rules_to_generate_predictions=[block_on(*k) for k in BLOCKING]
                           ).get_settings("duckdb").as_dict()


def _plain_splink(tables: list[pa.Table], link_type: str) -> tuple[pa.Table, dict]:
    """What a Splink user writes: register the tables, train, predict every pair."""
    import duckdb
    from splink import DuckDBAPI, Linker, block_on

    con = duckdb.connect()
    con.execute("SET threads = 1")
    db_api = DuckDBAPI(connection=con)
    frames = [db_api.register(t) for t in tables]
    linker = Linker(frames if len(frames) > 1 else frames[0], _splink_settings(link_type))
    linker.training.estimate_probability_two_random_records_match([DET], recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=U_PAIRS, seed=42)
    for keys in EM:
        linker.training.estimate_parameters_using_expectation_maximisation(block_on(*keys),
                                                                           record_sample_proportion=1.0)
    pairs = linker.inference.predict().as_pyarrow_table()
    return pairs, linker.misc.save_model_to_json()


def _nirlink(tmp_path, name: str, model: dict | str, files: list, *extra: str) -> pa.Table:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(model))
    args = ["link", "--model", str(path), "--out", str(tmp_path / name), "--min-probability", "0", "--no-charts",
            "--run-on", "process", *extra]
    for f in files:
        args += ["--input", str(f)]
    with dask.config.set({"nirlink.linkage.in-process-threads": 1}):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return pq.read_table(tmp_path / name / "pairs")


def _same(ours: pa.Table, theirs: pa.Table) -> None:
    a = {(l, r): w for l, r, w in zip(ours.column("id_l").to_pylist(), ours.column("id_r").to_pylist(),
                                      ours.column("match_weight").to_pylist())}
    b = {(l, r): w for l, r, w in zip(theirs.column("id_l").to_pylist(), theirs.column("id_r").to_pylist(),
                                      theirs.column("match_weight").to_pylist())}
    assert len(a) == ours.num_rows and set(a) == set(b) and len(a) > 300
    diff = np.array([a[k] - b[k] for k in a])
    assert np.abs(diff).max() < 1e-9


def _read(path) -> pa.Table:
    """The file as a Splink user reads it: every column text, empty fields null."""
    names = pacsv.read_csv(path).column_names
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in names if c != "person_id"}, strings_can_be_null=True))


@pytest.mark.parametrize("mode", ["link", "dedupe"])
def test_nirlink_equals_plain_splink(mode, tmp_path):
    tables = people(1600, mode=mode, seed=21)
    files = []
    for i, t in enumerate(tables):
        files.append(tmp_path / f"in{i}.csv")
        pacsv.write_csv(t, files[-1])
    link_type = "link_only" if mode == "link" else "dedupe_only"
    theirs, trained = _plain_splink([_read(f) for f in files], link_type)
    training = {"deterministic_rules": [DET], "deterministic_recall": 0.7, "u_max_pairs": U_PAIRS, "seed": 42,
                "em_blocking": EM}
    if mode == "link":  # comparisons from Splink's comparison library
        model = {"format": "nirlink-model/1", "name": "parity", "link_type": link_type, "id_column": "id",
                 "comparisons": [{"name": c["args"]["col_name"], "library": c} for c in LIBRARY],
                 "blocking": [{"name": f"b{i}", "left_keys": k} for i, k in enumerate(BLOCKING)],
                 "training": training}
    else:  # plain Splink settings inside a nirlink model
        model = {"format": "nirlink-model/1", "name": "parity", "splink_settings": _splink_settings(link_type),
                 "training": training}
    _same(_nirlink(tmp_path, "trained-by-nirlink", model, files), theirs)
    # the model plain Splink trained, as plain Splink saved it, runs unchanged
    _same(_nirlink(tmp_path, "trained-by-splink", trained, files), theirs)
    if mode == "dedupe":  # bare untrained Splink settings: trained by the default recipe (u only), then run
        bare = _nirlink(tmp_path, "bare-settings", _splink_settings(link_type), files)
        model = json.loads((tmp_path / "bare-settings" / "model.json").read_text())
        assert bare.num_rows > 300 and model["splink"] is not None and model["name"] == "bare-settings"
