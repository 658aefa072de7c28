"""`nirlink evaluate` out of core: the streamed, memory-bounded evaluation gives the same report
as the former in-memory one (kept here as the oracle) and as plain pandas counts; the
evaluate and `model show` commands."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from typer.testing import CliRunner

from nirlink.engine.cli import app
from nirlink.linkage import load_model
from nirlink.linkage._evaluate import evaluate
from nirlink.linkage._prepare import signature_ids

runner = CliRunner()

# ------------------------------------------------------------------ oracles


def _signatures(t: pa.Table):
    """The rows' signatures: the one the ingest stage stored (it hashed the identity that is now
    in ingest/identities/), or hashed from the identity columns of rows without it."""
    return t.column("signature").to_numpy() if "signature" in t.column_names else signature_ids(t)


def _nir_status(path, t: pa.Table) -> pd.Series:
    """Each row's NIR status: its own column, or (ingested rows no longer hold it) its
    signature's in the part's identities file, the row's own identity (pandas merge)."""
    from nirlink.engine.io._schemas import identities_file

    if "nir_status" in t.column_names:
        return t.column("nir_status").to_pandas()
    ids = pq.read_table(identities_file(path), columns=["signature", "nir_status"]).to_pandas()
    rows = pd.DataFrame({"signature": t.column("signature").to_numpy()})
    merged = rows.merge(ids, on="signature", how="left", validate="many_to_one")
    assert merged["nir_status"].notna().all()  # every row's signature has its identity
    return merged["nir_status"]


def _old_evaluate(link_dir, row_files, truth_dir, *, model=None) -> dict[str, Any]:
    """The in-memory implementation evaluate replaced (an Arrow table of every row, DuckDB with
    no limit), verbatim but for names and the rows' stored signature: the oracle of every
    figure it reported."""
    import duckdb

    def rows_with_signatures(files):
        parts = []
        for f in files:
            t = pq.read_table(f)
            parts.append(pa.table({"record_id": t.column("record_id"), "signature": pa.array(_signatures(t)),
                                   "nir_status": pa.array(_nir_status(f, t), pa.string())}))
        return pa.concat_tables(parts)

    def scores(tp, fp, fn):
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"true_positives": tp, "false_positives": fp, "false_negatives": fn,
                "precision": precision, "recall": recall, "f1": f1}

    link_dir, truth_dir = Path(link_dir), Path(truth_dir)
    con = duckdb.connect()
    con.register("rows_sig", rows_with_signatures(row_files))
    con.execute(f"create view links as select * from read_parquet('{link_dir}/links/*.parquet')")
    con.execute(f"create view truth as select * from read_parquet('{truth_dir}/*.parquet')")
    con.execute("create temp table reg_truth as select register_nir, true_nir from truth where source = 'register'")
    con.execute("""create temp table row_eval as
        select r.record_id, r.signature, r.nir_status, t.true_nir, l.status, rt.true_nir as predicted
        from rows_sig r join truth t on t.record_id = r.record_id and t.source <> 'register'
        left join links l on l.signature = r.signature
        left join reg_truth rt on rt.register_nir = l.person""")
    con.execute("""create temp table sig_eval as
        select signature, any_value(nir_status) as nir_status, mode(true_nir) as true_nir,
               any_value(status) as status, any_value(predicted) as predicted, count(*) as rows
        from row_eval group by signature""")

    def measure(table, group=None):
        sql = f"""select {group + ',' if group else ''}
                    sum((status = 'linked' and predicted = true_nir)::int) as tp,
                    sum((status = 'linked' and predicted is distinct from true_nir)::int) as fp,
                    sum((coalesce(status, 'unlinked') <> 'linked')::int) as fn,
                    sum((status = 'ambiguous')::int) as ambiguous
                  from {table} {'group by ' + group + ' order by ' + group if group else ''}"""
        rows = con.execute(sql).fetchall()
        if group:
            return {r[0]: {**scores(int(r[1] or 0), int(r[2] or 0), int(r[3] or 0)), "ambiguous": int(r[4] or 0)}
                    for r in rows}
        r = rows[0]
        return {**scores(int(r[0] or 0), int(r[1] or 0), int(r[2] or 0)), "ambiguous": int(r[3] or 0)}

    report = {"signatures": measure("sig_eval"), "rows": measure("row_eval"),
              "signatures_by_nir_status": measure("sig_eval", "nir_status"),
              "rows_by_nir_status": measure("row_eval", "nir_status")}
    if model is not None and (link_dir / "signatures").exists():
        con.execute(f"create view sigs as select * from read_parquet('{link_dir}/signatures/*.parquet')")
        con.execute(f"create view reg as select * from read_parquet('{link_dir}/register/*.parquet')")
        # a fallback rule admits only signatures with no register entry equal on its columns:
        # the signatures with such an entry, by a semi join (one column set in these models)
        (cols,) = {b.fallback for b in model.blocking if b.fallback} or {()}
        twin = (f"s.unique_id in (select s2.unique_id from sigs s2 semi join reg using ({', '.join(cols)}))"
                if cols else "false")

        def rule(b):
            return f"coalesce(({b.sql}), false)" + (" and not l.has_twin" if b.fallback else "")

        reach = " OR ".join(f"({rule(b)})" for b in model.blocking)
        per_rule = ", ".join(f"max(({rule(b)})::int) as \"{b.name}\"" for b in model.blocking)
        names = [b.name for b in model.blocking]
        r = con.execute(f"""
            with todo as (select s.*, {twin} as has_twin from sigs s join links k on k.signature = s.unique_id
                          where k.method is distinct from 'nir'),
            pairs as (select l.unique_id as sid, max(({reach})::int) as reached, {per_rule}
                      from todo l join sig_eval e on e.signature = l.unique_id
                      join reg_truth t on t.true_nir = e.true_nir join reg r on r.nir = t.register_nir
                      group by l.unique_id)
            select count(*), sum(reached), {", ".join(f'sum("{n}")' for n in names)} from pairs""").fetchone()
        report["blocking"] = {"signatures_to_model": int(r[0] or 0), "true_pair_reached": int(r[1] or 0),
                              "reach": (r[1] or 0) / r[0] if r[0] else 1.0,
                              "reached_by_rule": {n: int(v or 0) for n, v in zip(names, r[2:])}}
    if (link_dir / "clusters.parquet").exists():
        con.execute(f"create view cl as select * from read_parquet('{link_dir / 'clusters.parquet'}')")
        con.execute(f"create view regall as select * from read_parquet('{link_dir}/register/*.parquet')")
        true_pairs = con.execute("""select count(*) from reg_truth a join reg_truth b on a.true_nir = b.true_nir
                                    and a.register_nir < b.register_nir""").fetchone()[0]
        found = con.execute("""select sum((ta.true_nir = tb.true_nir)::int), count(*) from cl a join cl b
            on a.cluster = b.cluster and a.unique_id < b.unique_id
            join regall ra on ra.unique_id = a.unique_id join regall rb on rb.unique_id = b.unique_id
            join reg_truth ta on ta.register_nir = ra.nir join reg_truth tb on tb.register_nir = rb.nir""").fetchone()
        tp = int(found[0] or 0)
        report["register_duplicates"] = scores(tp, int(found[1] or 0) - tp, int(true_pairs) - tp)
    con.close()
    return report


def _pandas_counts(link_dir, row_files, truth_dir) -> dict[str, Any]:
    """tp / fp / fn / ambiguous / unlinked per row and per signature, overall and by NIR status,
    counted row by row in pandas (a signature's truth: the NIR of most of its rows)."""
    rows = pd.concat([pd.DataFrame({"record_id": t.column("record_id").to_numpy(),
                                    "signature": _signatures(t),
                                    "nir_status": _nir_status(f, t)})
                      for f, t in ((f, pq.read_table(f)) for f in row_files)], ignore_index=True)
    truth = pq.read_table(truth_dir, columns=["source", "record_id", "register_nir", "true_nir"])
    is_reg = pc.equal(truth.column("source"), "register")
    reg = (truth.filter(is_reg).select(["register_nir", "true_nir"]).to_pandas()
           .rename(columns={"true_nir": "predicted"}))
    truth = truth.filter(pc.invert(is_reg)).select(["record_id", "true_nir"]).to_pandas()  # int64 ids (no nulls)
    links = pq.read_table(Path(link_dir) / "links").to_pandas()[["signature", "person", "status"]]
    links = links.merge(reg, how="left", left_on="person", right_on="register_nir")
    r = rows.merge(truth, on="record_id")
    r = r.merge(links, how="left", on="signature")
    r["status"] = r["status"].fillna("unlinked")
    sig = (r.groupby(["signature", "true_nir"]).size().rename("n").reset_index()
           .sort_values(["signature", "n", "true_nir"], ascending=[True, False, True])
           .drop_duplicates("signature")[["signature", "true_nir"]])
    sig = sig.merge(r.drop_duplicates("signature")[["signature", "nir_status", "status", "predicted"]], on="signature")

    def counts(df):
        linked = df.status == "linked"
        right = linked & (df.predicted == df.true_nir)
        return {"true_positives": int(right.sum()), "false_positives": int((linked & ~right).sum()),
                "false_negatives": int((~linked).sum()), "ambiguous": int((df.status == "ambiguous").sum()),
                "unlinked": int((df.status == "unlinked").sum())}

    return {"signatures": counts(sig), "rows": counts(r),
            "signatures_by_nir_status": {k: counts(g) for k, g in sig.groupby("nir_status")},
            "rows_by_nir_status": {k: counts(g) for k, g in r.groupby("nir_status")}}


def _without_unlinked(report: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in report.items():
        if k in ("signatures", "rows"):
            out[k] = {a: b for a, b in v.items() if a != "unlinked"}
        elif k.endswith("_by_nir_status"):
            out[k] = {s: {a: b for a, b in d.items() if a != "unlinked"} for s, d in v.items()}
        else:
            out[k] = v
    return out


def _counts_only(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("true_positives", "false_positives", "false_negatives", "ambiguous", "unlinked")
    out = {}
    for k in ("signatures", "rows"):
        out[k] = {a: report[k][a] for a in keys}
        out[f"{k}_by_nir_status"] = {s: {a: d[a] for a in keys} for s, d in report[f"{k}_by_nir_status"].items()}
    return out


# ------------------------------------------------------------------ the job of conftest (3,000 persons)


def _job_inputs(job_run):
    from nirlink.engine.stages._link import ingested_files

    root, out, _ = job_run
    files = ingested_files(out / "ingest")
    return out / "link", files["career"] + files["resource"], root / "truth", load_model(out / "link" / "model.json")


def test_streamed_evaluation_equals_the_in_memory_one(job_run, tmp_path):
    link_dir, files, truth, model = _job_inputs(job_run)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # small batches and a small memory limit: many batches per file, DuckDB under pressure
    new = evaluate(link_dir, files, truth, model=model, memory_limit="200MB", temp_dir=scratch, threads=2,
                   batch_rows=20_000)
    old = _old_evaluate(link_dir, files, truth, model=model)
    assert _without_unlinked(new) == old
    assert _counts_only(new) == _pandas_counts(link_dir, files, truth)
    assert set(new) >= {"blocking", "register_duplicates"}
    assert list(scratch.iterdir()) == []  # the temporary files are gone
    for level in ("signatures", "rows"):
        s = new[level]
        assert s["false_negatives"] == s["ambiguous"] + s["unlinked"]
        assert sum(d["unlinked"] for d in new[f"{level}_by_nir_status"].values()) == s["unlinked"]


def test_rows_joined_with_the_truth_in_parts_give_the_same_report(job_run, monkeypatch):
    """The rows' join with the truth in several parts (a hash of the record id) and their
    groups added up: the report of one join."""
    import nirlink.linkage._evaluate as ev

    link_dir, files, truth, model = _job_inputs(job_run)
    whole = evaluate(link_dir, files, truth, model=model, threads=2)
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    monkeypatch.setattr(ev, "ROWS_PER_PASS", rows // 5)  # six parts
    assert evaluate(link_dir, files, truth, model=model, threads=2) == whole


def test_evaluate_command_prints_the_same_report(job_run):
    link_dir, files, truth, model = _job_inputs(job_run)
    _, out, _ = job_run
    args = ["evaluate", "--links", str(link_dir), "--rows", str(out / "ingest"), "--truth", str(truth),
            "--memory-limit", "300MB"]
    result = runner.invoke(app, [*args, "--output", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(evaluate(link_dir, files, truth, model=model)))
    text = runner.invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "unlinked" in text.stdout and "blocking reaches" in text.stdout and "register duplicates" in text.stdout


# ------------------------------------------------------------------ edge cases on hand-made tables


def _rows(ids, nirs, names, status):
    n = len(ids)
    return pa.table({"record_id": pa.array(ids, pa.int64()), "declared_nir": pa.array(nirs, pa.string()),
                     "last_name_key": pa.array(names, pa.string()), "first_names_norm": pa.array(["JEAN"] * n),
                     "birth_year": pa.array([1970] * n, pa.int16()), "birth_month": pa.array([1] * n, pa.int8()),
                     "birth_day": pa.array([2] * n, pa.int8()), "nir_status": pa.array(status, pa.string())})


def test_edge_cases_match_both_oracles(tmp_path):
    """Signatures mixing true persons (majority wins), wrong links, ambiguous, unlinked, a
    signature missing from the link table, a row missing from the truth, an empty file."""
    ingest = tmp_path / "ingest"
    ingest.mkdir()
    # signature A (name DUPONT, NIR 1..): 3 rows of person P1, 1 of P2; B: 2 rows of P2; C: P3 (ambiguous);
    # D: P4 (unlinked); E: P5 (linked to P1: wrong); F: P6 (no row in links); G: record 99 (not in truth)
    f1 = _rows([1, 2, 3, 4, 5], ["1700175000001"] * 4 + [""], ["DUPONT"] * 4 + ["MARTIN"],
               ["valid"] * 4 + ["missing"])
    f2 = _rows([6, 7, 8, 9, 10, 99], ["", "", "2700175000001", "bad", "1700175000009", "x"],
               ["MARTIN", "DURAND", "PETIT", "ROUX", "LEROY", "ZZZ"],
               ["missing", "missing", "valid", "bad_format", "bad_key", "bad_format"])
    # a.parquet as the ingest stage writes rows (their signature stored), c.parquet without it
    pq.write_table(f1.append_column("signature", pa.array(signature_ids(f1), pa.int64())), ingest / "a.parquet")
    pq.write_table(f2.slice(0, 0), ingest / "b.parquet")
    pq.write_table(f2, ingest / "c.parquet")
    files = [str(ingest / n) for n in ("a.parquet", "b.parquet", "c.parquet")]
    sig = {name: int(s) for name, s in zip(["A"] * 4 + ["B"], signature_ids(f1))}
    sig.update({name: int(s) for name, s in zip(["B2", "C", "D", "E", "F", "G"], signature_ids(f2))})
    assert sig["B"] == sig["B2"]
    truth_dir = tmp_path / "truth"
    truth_dir.mkdir()
    pq.write_table(pa.table({
        "source": ["register"] * 6 + ["career"] * 5 + ["resource"] * 5,
        "record_id": [None] * 6 + list(range(1, 11)),
        "register_nir": ["R1", "R2", "R3", "R4", "R5", "R1b"] + [None] * 10,
        "true_nir": ["P1", "P2", "P3", "P4", "P5", "P1", "P1", "P1", "P1", "P2", "P2", "P2", "P3", "P4", "P5", "P6"],
    }), truth_dir / "part-00000.parquet")
    link_dir = tmp_path / "link"
    (link_dir / "links").mkdir(parents=True)
    pq.write_table(pa.table({
        "signature": pa.array([sig["A"], sig["B"], sig["C"], sig["D"], sig["E"]], pa.int64()),
        "person": ["R1b", "R2", None, None, "R1"],
        "method": ["nir", "model", "model", None, "model"],
        "status": ["linked", "linked", "ambiguous", "unlinked", "linked"],
    }), link_dir / "links" / "part-0.parquet")
    new = evaluate(link_dir, files, truth_dir, batch_rows=2, memory_limit="100MB", threads=1)
    assert _without_unlinked(new) == _old_evaluate(link_dir, files, truth_dir)
    assert _counts_only(new) == _pandas_counts(link_dir, files, truth_dir)
    # by hand: signatures A ok, B ok, C ambiguous, D unlinked, E wrong, F absent from links (unlinked)
    assert {k: new["signatures"][k] for k in ("true_positives", "false_positives", "false_negatives",
                                              "ambiguous", "unlinked")} == {
        "true_positives": 2, "false_positives": 1, "false_negatives": 3, "ambiguous": 1, "unlinked": 2}
    # rows: A's P2 row is a false positive of its own
    assert (new["rows"]["true_positives"], new["rows"]["false_positives"]) == (5, 2)
    assert new["rows_by_nir_status"]["missing"]["true_positives"] == 2


def test_no_rows_gives_an_empty_report(tmp_path):
    ingest = tmp_path / "a.parquet"
    pq.write_table(_rows([], [], [], []), ingest)
    (tmp_path / "link" / "links").mkdir(parents=True)
    pq.write_table(pa.table({"signature": pa.array([], pa.int64()), "person": pa.array([], pa.string()),
                             "status": pa.array([], pa.string())}), tmp_path / "link" / "links" / "p.parquet")
    (tmp_path / "truth").mkdir()
    pq.write_table(pa.table({"source": ["register"], "record_id": pa.array([None], pa.int64()),
                             "register_nir": ["R1"], "true_nir": ["P1"]}), tmp_path / "truth" / "t.parquet")
    r = evaluate(tmp_path / "link", [str(ingest)], tmp_path / "truth")
    assert r["signatures"]["true_positives"] == 0 and r["rows"]["unlinked"] == 0
    assert r["signatures_by_nir_status"] == {}


# ------------------------------------------------------------------ nirlink model show


def test_model_show_has_no_empty_cells_and_prints_log2_m_over_u(job_run):
    _, out, _ = job_run
    path = out / "link" / "model.json"
    data = json.loads(runner.invoke(app, ["model", "show", str(path), "--output", "json"]).stdout)
    assert data["trained"] and data["probability_two_random_records_match"] > 0
    # the JSON keeps its structure; the prior's weight is the one key added
    assert set(data) == {"name", "link_type", "trained", "probability_two_random_records_match", "levels",
                         "blocking", "decision", "prior_match_weight"}
    assert all(set(row) == {"comparison", "level", "m", "u", "weight", "tf"} for row in data["levels"])
    prior = data["probability_two_random_records_match"]
    assert math.isclose(data["prior_match_weight"], math.log2(prior / (1 - prior)))
    settings = json.loads(path.read_text())["splink"]
    levels = [lv for c in settings["comparisons"] for lv in c["comparison_levels"]]
    assert len(levels) == len(data["levels"])
    for lv, row in zip(levels, data["levels"]):
        m, u = lv.get("m_probability"), lv.get("u_probability")
        if lv.get("is_null_level"):
            assert row["weight"] is None
        elif m and u:
            assert math.isclose(row["weight"], math.log2(m / u))

    result = runner.invoke(app, ["model", "show", str(path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "prior" in text and "decision" in text
    lines = text.splitlines()
    for line in lines:  # every cell of every table holds something
        if line.startswith("│"):
            assert all(c.strip() for c in line.strip("│").split("│")), f"empty cell in {line!r}"
    header = next(i for i, line in enumerate(lines) if line.startswith("│") and "match weight" in line)
    end = next(i for i in range(header, len(lines)) if lines[i].startswith("└"))
    body = [line for line in lines[header + 1:end] if line.startswith("│")]
    weights = [[c.strip() for c in line.strip("│").split("│")][5] for line in body]
    # the level rows in order: printed weights equal log2(m / u) of the model file
    assert len(weights) == len(levels)
    for lv, w in zip(levels, weights):
        m, u = lv.get("m_probability"), lv.get("u_probability")
        if lv.get("is_null_level"):
            assert "null level" in w
        elif m and u:
            assert math.isclose(float(w), math.log2(m / u), abs_tol=0.005), (w, m, u)
        else:
            assert re.search("untrained|inf", w), w
    assert math.isfinite(prior)


def test_model_show_untrained_says_so():
    result = runner.invoke(app, ["model", "show", "identity"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "untrained" in result.stdout
    for line in result.stdout.splitlines():
        if line.startswith("│"):
            assert all(c.strip() for c in line.strip("│").split("│")), line
