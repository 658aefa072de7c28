"""Term frequencies of a model's TF columns, counted once on the whole register by parallel
tasks and merged: every scoring task gets the same tables, so weights do not depend on how
the data is partitioned."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._model import ModelSpec
from ._tasks import run_tasks

__all__ = ["global_tf"]


def _tf_counts(f: str, columns: list[str]) -> dict[str, pa.Table]:
    t = pq.read_table(f, columns=columns, use_threads=False)
    out = {}
    for c in columns:
        vc = pc.value_counts(pc.drop_null(t.column(c)))
        out[c] = pa.table({"value": vc.field("values"), "n": vc.field("counts")})
    return out


def global_tf(model: ModelSpec, reg_files: list[str], client, progress) -> dict[str, pa.Table]:
    cols = model.tf_columns()
    if not cols:
        return {}
    parts = run_tasks(client, _tf_counts, [(f, cols) for f in reg_files], name=f"tf-{model.name}", progress=progress)
    import duckdb

    out = {}
    for c in cols:
        merged = pa.concat_tables([p[c] for p in parts])
        con = duckdb.connect()
        con.register("m", merged)
        counts = con.sql("select value, sum(n)::double as n from m group by value order by value").to_arrow_table()
        con.close()
        total = float(pc.sum(counts.column("n")).as_py() or 1.0)
        out[c] = pa.table({c: counts.column("value"), f"tf_{c}": pc.divide(counts.column("n"), total)})
    return out


