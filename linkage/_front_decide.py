"""Decisions of the general front, on the scored pairs (internal ids: ranks of the ids as given).

- clusters: connected components of the pairs at or above the threshold, every record in
  one (a record with no such pair is a cluster of its own). A cluster's id is its smallest
  member id: in a deduplication the smallest id as given; in a link, Splink's form
  ``<source_dataset>-__-<id>`` of its smallest member, left records first.
- best match (link only): each left record takes its best-scored right record when that
  pair's probability reaches the threshold and its match weight leads the runner-up's (the
  left record's second-best pair) by at least ``margin`` bits; ``ambiguous`` when the best
  passes the threshold but a runner-up is too close; ``unlinked`` otherwise. Pairs below the
  prediction floor are not seen, as runner-ups either.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["clusters", "best_match"]


def _components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Per node 0..n-1, the smallest node of its component (itself when alone)."""
    from ._clusters import forest  # Numba: loaded only when clusters are made

    label = np.arange(n, dtype=np.int64)
    nodes, roots = forest(src, dst)
    label[nodes] = roots
    return label


def _summary(label: np.ndarray) -> dict[str, Any]:
    sizes = np.bincount(label, minlength=len(label))
    sizes = sizes[sizes > 0]
    return {"clusters": int(len(sizes)), "records": int(len(label)), "records_in_clusters_of_two_or_more":
            int(sizes[sizes > 1].sum()), "largest_cluster": int(sizes.max()) if len(sizes) else 0}


def clusters(prep, pred: pa.Table, *, threshold: float) -> tuple[pa.Table, dict[str, Any]]:
    keep = pc.greater_equal(pred.column("match_probability"), threshold)
    src = pc.filter(pred.column("unique_id_l"), keep).to_numpy()
    dst = pc.filter(pred.column("unique_id_r"), keep).to_numpy()
    idc = prep.id_column
    if prep.dedupe:
        ids = prep.sides[0].ids
        label = _components(len(ids), src, dst)
        table = pa.table({idc: ids, "cluster_id": ids.take(pa.array(label))})
        return table, _summary(label)
    left, right = prep.sides
    n_left = len(left.ids)
    label = _components(n_left + len(right.ids), src, dst + n_left)
    lids, rids = left.ids, right.ids
    if lids.type != rids.type:
        lids, rids = pc.cast(lids, pa.string()), pc.cast(rids, pa.string())
    ids = pa.concat_arrays([lids, rids])
    source = pa.array(np.where(np.arange(len(label)) < n_left, left.name, right.name))
    root_text = pc.cast(ids.take(pa.array(label)), pa.string())
    cluster_id = pc.binary_join_element_wise(source.take(pa.array(label)), root_text, "-__-")
    table = pa.table({"source_dataset": source, idc: ids, "cluster_id": cluster_id})
    return table, _summary(label)


def best_match(prep, pred: pa.Table, *, threshold: float, margin: float) -> tuple[pa.Table, dict[str, Any]]:
    left, right = prep.sides
    n = len(left.ids)
    lid = pred.column("unique_id_l").to_numpy()
    rid = pred.column("unique_id_r").to_numpy()
    w = pred.column("match_weight").to_numpy()
    p = pred.column("match_probability").to_numpy()
    order = np.lexsort((-w, lid))
    lid, rid, w, p = lid[order], rid[order], w[order], p[order]
    first = np.ones(len(lid), bool)
    first[1:] = lid[1:] != lid[:-1]
    starts = np.flatnonzero(first)
    count = np.zeros(n, np.int64)
    np.add.at(count, lid, 1)
    has = count > 0
    best_r = np.full(n, -1, np.int64)
    best_w = np.full(n, np.nan)
    best_p = np.full(n, np.nan)
    best_r[lid[starts]], best_w[lid[starts]], best_p[lid[starts]] = rid[starts], w[starts], p[starts]
    second = starts + 1
    second = second[second < len(lid)]
    second = second[~first[second]]  # not the start of another record's run (np.isin took 5x as long)
    run_w = np.full(n, np.nan)
    run_w[lid[second]] = w[second]
    passes = has & (best_p >= threshold)
    clear = np.isnan(run_w) | (best_w - np.nan_to_num(run_w, nan=-np.inf) >= margin)
    status = np.where(passes & clear, "linked", np.where(passes, "ambiguous", "unlinked"))
    linked = status == "linked"
    idc = prep.id_column
    best_ids = right.ids.take(pa.array(np.where(has, best_r, 0)))
    table = pa.table({
        f"{idc}_l": left.ids,
        f"{idc}_r": pc.if_else(pa.array(linked), best_ids, pa.nulls(n, right.ids.type)),
        "best_candidate": pc.if_else(pa.array(has), best_ids, pa.nulls(n, right.ids.type)),
        "match_probability": pa.array(best_p, mask=~has),
        "match_weight": pa.array(best_w, mask=~has),
        "runner_up_match_weight": pa.array(run_w, mask=np.isnan(run_w)),
        "candidates": pa.array(count),
        "status": pa.array(status),
    })
    summary = {s: int((status == s).sum()) for s in ("linked", "ambiguous", "unlinked")}
    return table, summary
