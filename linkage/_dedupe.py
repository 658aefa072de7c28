"""Phase 6 of the link stage: register deduplication. Register pairs above the model's
threshold are clustered into persons (connected components, _clusters.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels._segments import sorted_unique

from ._buckets import is_in_sorted
from ._clusters import connected_components
from ._config import LinkConfig
from ._model import ModelSpec
from ._prepare import LINK_COLUMNS
from ._register import register_files
from ._scoring import score_rules
from ._tasks import Progress, run_tasks, share

__all__ = ["dedupe_register"]


def _edges(f: str, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    t = pq.read_table(f)
    t = t.filter(pc.greater_equal(t.column("match_probability"), threshold))
    return t.column("unique_id_l").to_numpy(), t.column("unique_id_r").to_numpy()


def _cluster_rows(f: str, components: tuple[np.ndarray, np.ndarray]) -> pa.Table:
    nodes, comps = components
    t = pq.read_table(f, columns=["unique_id", "nir", "nir_status", "birth_year", "birth_month"])
    ids = t.column("unique_id").to_numpy()
    inside = is_in_sorted(ids, nodes)
    t = t.filter(pa.array(inside))
    comp = comps[np.searchsorted(nodes, t.column("unique_id").to_numpy())] if t.num_rows else np.zeros(0, np.int64)
    return t.append_column("cluster", pa.array(comp.astype(np.int64)))


def dedupe_register(work: Path, model: ModelSpec, tf, cfg: LinkConfig, *, client=None,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Pairs of register rows above the model's threshold, clustered into persons. Writes
    ``clusters.parquet``: every register row in a cluster of two or more, its cluster id (the
    smallest unique_id of the cluster) and the cluster's canonical NIR (the smallest permanent
    NIR, else the smallest NIR)."""
    scored = score_rules(work, model, tf, cfg, left_files=register_files(work), right_files=None,
                         out=work / "register_edges", schema=LINK_COLUMNS, client=client, progress=progress)
    threshold = float(model.decision.get("threshold", 0.95))
    edge_files = sorted(str(p) for p in (work / "register_edges").glob("*.parquet"))
    parts = run_tasks(client, _edges, [(f, threshold) for f in edge_files], name="register-edges", progress=progress)
    nodes, comps = connected_components(parts, client=client)
    shared = share(client, (nodes, comps))
    members = pa.concat_tables(run_tasks(client, _cluster_rows, [(f, shared) for f in register_files(work)],
                                         name="register-clusters", progress=progress)) if len(nodes) else None
    if members is None or members.num_rows == 0:
        clusters = pa.table({"unique_id": pa.array([], pa.int64()), "cluster": pa.array([], pa.int64()),
                             "person": pa.array([], pa.string()), "birth_year": pa.array([], pa.int16()),
                             "birth_month": pa.array([], pa.int8())})
    else:
        import duckdb

        con = duckdb.connect()
        con.register("m", members)
        clusters = con.sql("""
            with canon as (
              select cluster, min(case when nir_status = 'valid' then nir end) as perm, min(nir) as any_nir
              from m group by cluster)
            select m.unique_id, m.cluster, coalesce(c.perm, c.any_nir) as person,
                   first(m2.birth_year) as birth_year, first(m2.birth_month) as birth_month
            from m join canon c using (cluster)
            join m m2 on m2.cluster = m.cluster and m2.nir = coalesce(c.perm, c.any_nir)
            group by m.unique_id, m.cluster, coalesce(c.perm, c.any_nir)
            order by m.unique_id""").to_arrow_table()
        con.close()
    pq.write_table(clusters, work / "clusters.parquet")
    return {**scored, "threshold": threshold, "rows_in_clusters": clusters.num_rows,
            "clusters": len(sorted_unique(clusters.column("cluster").to_numpy())) if clusters.num_rows else 0}


