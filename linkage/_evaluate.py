"""Accuracy of a link table against a truth table: precision, recall and F1 at the signature
and at the row level, by NIR status; the share of true pairs blocking reaches; register
deduplication against the true duplicates.

Truth: a Parquet dataset with columns source ('career' / 'resource' / 'register'),
record_id, register_nir and true_nir (as `nirlink synth` writes it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._model import ModelSpec
from ._prepare import signature_ids

__all__ = ["evaluate"]


def _rows_with_signatures(files: list[str]) -> pa.Table:
    parts = []
    for f in files:
        t = pq.read_table(f, columns=["record_id", "declared_nir", "last_name_key", "first_names_norm", "birth_year",
                                      "birth_month", "birth_day", "nir_status"])
        parts.append(pa.table({"record_id": t.column("record_id"), "signature": pa.array(signature_ids(t)),
                               "nir_status": t.column("nir_status")}))
    return pa.concat_tables(parts) if parts else pa.table({"record_id": pa.array([], pa.int64()),
                                                          "signature": pa.array([], pa.int64()),
                                                          "nir_status": pa.array([], pa.string())})


def _scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"true_positives": tp, "false_positives": fp, "false_negatives": fn,
            "precision": precision, "recall": recall, "f1": f1}


def evaluate(link_dir: str | Path, row_files: list[str], truth_dir: str | Path, *,
             model: ModelSpec | None = None) -> dict[str, Any]:
    import duckdb

    link_dir, truth_dir = Path(link_dir), Path(truth_dir)
    con = duckdb.connect()
    con.register("rows_sig", _rows_with_signatures(row_files))
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

    def measure(table: str, group: str | None = None) -> Any:
        sql = f"""select {group + ',' if group else ''}
                    sum((status = 'linked' and predicted = true_nir)::int) as tp,
                    sum((status = 'linked' and predicted is distinct from true_nir)::int) as fp,
                    sum((coalesce(status, 'unlinked') <> 'linked')::int) as fn,
                    sum((status = 'ambiguous')::int) as ambiguous
                  from {table} {'group by ' + group + ' order by ' + group if group else ''}"""
        rows = con.execute(sql).fetchall()
        if group:
            return {r[0]: {**_scores(int(r[1] or 0), int(r[2] or 0), int(r[3] or 0)), "ambiguous": int(r[4] or 0)}
                    for r in rows}
        r = rows[0]
        return {**_scores(int(r[0] or 0), int(r[1] or 0), int(r[2] or 0)), "ambiguous": int(r[3] or 0)}

    report: dict[str, Any] = {
        "signatures": measure("sig_eval"),
        "rows": measure("row_eval"),
        "signatures_by_nir_status": measure("sig_eval", "nir_status"),
        "rows_by_nir_status": measure("row_eval", "nir_status"),
    }
    # blocking reach: signatures left to the model whose true register row some rule pairs them with
    if model is not None and (link_dir / "signatures").exists():
        con.execute(f"create view sigs as select * from read_parquet('{link_dir}/signatures/*.parquet')")
        con.execute(f"create view reg as select * from read_parquet('{link_dir}/register/*.parquet')")
        reach = " OR ".join(f"coalesce(({b.sql}), false)" for b in model.blocking)
        per_rule = ", ".join(f"max(coalesce(({b.sql}), false)::int) as \"{b.name}\"" for b in model.blocking)
        names = [b.name for b in model.blocking]
        r = con.execute(f"""
            with todo as (select s.* from sigs s join links k on k.signature = s.unique_id
                          where k.method is distinct from 'nir'),
            pairs as (select l.unique_id as sid, max(({reach})::int) as reached, {per_rule}
                      from todo l join sig_eval e on e.signature = l.unique_id
                      join reg_truth t on t.true_nir = e.true_nir join reg r on r.nir = t.register_nir
                      group by l.unique_id)
            select count(*), sum(reached), {", ".join(f'sum("{n}")' for n in names)} from pairs""").fetchone()
        report["blocking"] = {"signatures_to_model": int(r[0] or 0), "true_pair_reached": int(r[1] or 0),
                              "reach": (r[1] or 0) / r[0] if r[0] else 1.0,
                              "reached_by_rule": {n: int(v or 0) for n, v in zip(names, r[2:])}}
    # register duplicates: pairs of register rows of one true person
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
        report["register_duplicates"] = _scores(tp, int(found[1] or 0) - tp, int(true_pairs) - tp)
    con.close()
    return report
