"""The clerical review dataset: every signature the decision left unlinked or ambiguous, with
its best candidates, their weights and, per comparison, the level reached, its weight and the
two values compared. ``review/review.parquet`` for tools, ``review/review.csv`` for an agent
(one line per signature and candidate, a signature without candidate on one line of its own).

These files hold identity fields (names, birth dates, NIRs): they are written readable by
their owner only. What the agent decides goes into a decisions file (_clerical.py) named in
the job file; the next run honours it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ._explain import PAIR_KEY, compare_pairs, waterfall
from ._model import ModelSpec
from ._prepare import LINK_COLUMNS

__all__ = ["write_review", "REVIEW_FIELDS"]

REVIEW_FIELDS = ("nir", "last_name_key", "usage_name_key", "first_names_norm", "birth_year", "birth_month",
                 "birth_day", "sex", "birth_place")


def _private(path: Path) -> None:
    os.chmod(path, 0o600)


def write_review(work: Path, model: ModelSpec, tf: dict[str, pa.Table], *, threads: int = 1,
                 memory_limit: str | None = None) -> dict[str, Any]:
    """Writes ``work/review/``; returns the counts for the manifest."""
    import duckdb

    out = work / "review"
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"""create temp table todo as
            select l.signature, l.status, l.nir_status, l.rows, l.match_weight as best_weight
            from read_parquet('{work}/links/*.parquet') l where l.status in ('unlinked', 'ambiguous')""")
        cands = con.sql(f"""select c.* from read_parquet('{work}/candidates/*.parquet') c
                            where c.signature in (select signature from todo) order by c.signature, c.rank""")
        cands = cands.to_arrow_table()
        con.register("cands", cands)
        cols = ", ".join(LINK_COLUMNS.names)
        left = con.sql(f"""select {cols}, unique_id as {PAIR_KEY} from read_parquet('{work}/signatures/*.parquet')
                           where unique_id in (select signature from todo) order by unique_id""").to_arrow_table()
        right = con.sql(f"""select {", ".join("r." + c for c in LINK_COLUMNS.names)}, c.signature as {PAIR_KEY}
                            from read_parquet('{work}/register/*.parquet') r
                            join cands c on c.register_id = r.unique_id
                            order by c.signature, c.rank""").to_arrow_table()
        todo = con.sql("select * from todo order by signature").to_arrow_table()
    finally:
        con.close()

    compared = {}
    if cands.num_rows and left.num_rows:
        table, _ = compare_pairs(model, left, right, tf, threads=threads, memory_limit=memory_limit)
        compared = {(int(p["unique_id_l"]), int(p["unique_id_r"])): p for p in table.to_pylist()}
    record = {int(r["unique_id"]): r for r in left.to_pylist()}
    register = {(int(r[PAIR_KEY]), int(r["unique_id"])): r for r in right.to_pylist()}
    by_sig: dict[int, list[dict[str, Any]]] = {}
    for c in cands.to_pylist():
        by_sig.setdefault(int(c["signature"]), []).append(c)
    comparisons = [c["output_column_name"] for c in model.settings()["comparisons"]]

    rows = []
    for t in todo.to_pylist():
        sig = int(t["signature"])
        rec = record.get(sig, {})
        base = {"signature": sig, "status": t["status"], "nir_status": t["nir_status"], "rows": t["rows"],
                **{f"record_{f}": rec.get(f) for f in REVIEW_FIELDS}}
        for c in by_sig.get(sig, []) or [None]:
            row = dict(base)
            row.update({"rank": c["rank"] if c else None, "register_nir": c["register_nir"] if c else None,
                        "person": c["person"] if c else None, "method": c["method"] if c else None,
                        "match_weight": c["match_weight"] if c else None,
                        "match_probability": c["match_probability"] if c else None})
            pair = compared.get((sig, int(c["register_id"]))) if c else None
            steps = {s["step"]: s for s in waterfall(model, pair)["steps"]} if pair else {}
            for name in comparisons:
                s = steps.get(name)
                row[f"{name}_level"] = s["level"] if s else None
                row[f"{name}_weight"] = (s["weight"] + s["tf_adjustment"]) if s else None
            candidate = register.get((sig, int(c["register_id"])), {}) if c else {}
            for f in REVIEW_FIELDS:
                row[f"candidate_{f}"] = candidate.get(f)
            rows.append(row)
    schema = _schema(comparisons)
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    for path, write in ((out / "review.parquet", lambda p: pq.write_table(table, p)),
                        (out / "review.csv", lambda p: pacsv.write_csv(table, p))):
        write(path)
        _private(path)
    statuses = todo.column("status").to_numpy(zero_copy_only=False) if todo.num_rows else np.array([])
    return {"signatures": todo.num_rows, "unlinked": int((statuses == "unlinked").sum()),
            "ambiguous": int((statuses == "ambiguous").sum()),
            "without_candidate": int(todo.num_rows - len(by_sig)), "lines": table.num_rows,
            "files": ["review/review.parquet", "review/review.csv"]}


def _schema(comparisons: list[str]) -> pa.Schema:
    types = {f.name: f.type for f in LINK_COLUMNS}
    fields = [pa.field("signature", pa.int64()), pa.field("status", pa.string()), pa.field("nir_status", pa.string()),
              pa.field("rows", pa.int64()), pa.field("rank", pa.int8()), pa.field("register_nir", pa.string()),
              pa.field("person", pa.string()), pa.field("method", pa.string()), pa.field("match_weight", pa.float64()),
              pa.field("match_probability", pa.float64())]
    for name in comparisons:
        fields += [pa.field(f"{name}_level", pa.string()), pa.field(f"{name}_weight", pa.float64())]
    fields += [pa.field(f"record_{f}", types[f]) for f in REVIEW_FIELDS]
    fields += [pa.field(f"candidate_{f}", types[f]) for f in REVIEW_FIELDS]
    return pa.schema(fields)
