"""Evaluation of a `nirlink link` run against a truth: true cluster labels (a column of the
inputs) or a list of true pairs.

Pairs are compared as pairs of records (unordered within a deduplication; left-right in a
link). At each threshold t the predicted pairs are the scored pairs with p >= t: precision
= true positives / predicted, recall = true positives / true pairs (every true pair, scored
or not: a true pair no blocking rule admits is a false negative at every threshold). Pairs
below the run's prediction floor were not kept, so thresholds below it see no more pairs.
Blocking reach is the share of true pairs that some blocking rule admits, evaluated with
the model's rules on the inputs themselves, with the first admitting rule of each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels import InputError
from nirlink.kernels._segments import sorted_unique

__all__ = ["evaluate_run"]


def _internal(side, given: pa.Array, what: str) -> np.ndarray:
    """Internal ids (ranks) of ids as given; refuses ids the input does not hold."""
    if given.type != side.ids.type:
        try:
            given = pc.cast(given, side.ids.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputError(f"{what}: ids of type {given.type} where the input's ids are {side.ids.type}") from None
    pos = pc.index_in(given, value_set=side.ids)
    if pos.null_count:
        raise InputError(f"{what}: {pos.null_count} id(s) that the input {side.path} does not hold")
    return pos.to_numpy().astype(np.int64)


def _keys(prep, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if prep.dedupe:
        a, b = np.minimum(a, b), np.maximum(a, b)
    n = len(prep.sides[-1].ids)
    return a * n + b


def _label_pairs(prep, labels: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
    import duckdb

    con = duckdb.connect()
    try:
        for side, lab, name in zip(prep.sides, labels, ("a", "b")):
            con.register(name, pa.table({"k": pa.array(np.argsort(side.order)), "label": lab}))
        if prep.dedupe:
            sql = "SELECT x.k AS l, y.k AS r FROM a x JOIN a y ON x.label = y.label AND x.k < y.k"
        else:
            sql = "SELECT x.k AS l, y.k AS r FROM a x JOIN b y ON x.label = y.label"
        t = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    return t.column("l").to_numpy(), t.column("r").to_numpy()


def _reach(prep, left: np.ndarray, right: np.ndarray) -> dict[str, Any]:
    import duckdb

    rules = prep.scoring.blocking
    con = duckdb.connect()
    try:
        con.register("tp", pa.table({"kl": left, "kr": right}))
        con.register("L", prep.sides[0].table)
        con.register("R", prep.sides[-1].table)
        first = "CASE " + " ".join(f"WHEN COALESCE(({b.sql}), FALSE) THEN {i}" for i, b in enumerate(rules)) \
            + " ELSE -1 END"
        t = con.sql(f"SELECT {first} AS rule, count(*) AS n FROM tp JOIN L l ON l.unique_id = tp.kl "
                    "JOIN R r ON r.unique_id = tp.kr GROUP BY 1").to_arrow_table()
    finally:
        con.close()
    counts = dict(zip(t.column("rule").to_pylist(), t.column("n").to_pylist()))
    reached = sum(n for r, n in counts.items() if r >= 0)
    return {"reached": int(reached), "reach": reached / len(left) if len(left) else 1.0,
            "by_rule": {prep.model.blocking[i].name: int(counts.get(i, 0)) for i in range(len(rules))}}


def evaluate_run(prep, pairs_dir: str | Path, *, thresholds: list[float], labels: list[pa.Array] | None = None,
                 true_pairs: pa.Table | None = None, floor: float = 0.0) -> dict[str, Any]:
    """Pair precision, recall and F1 of a run's scored pairs at each threshold, and blocking
    reach. ``labels``: per input, each record's true cluster label (in the input's row order);
    ``true_pairs``: a table of two id columns (left id, right id), the ids as given."""
    if (labels is None) == (true_pairs is None):
        raise InputError("give the truth as labels or as true pairs (one of them)")
    if labels is not None:
        tl, tr = _label_pairs(prep, labels)
    else:
        tl = _internal(prep.sides[0], true_pairs.column(0).combine_chunks(), "true pairs, first column")
        tr = _internal(prep.sides[-1], true_pairs.column(1).combine_chunks(), "true pairs, second column")
        if prep.dedupe:
            keep = tl != tr
            tl, tr = tl[keep], tr[keep]
    true = sorted_unique(_keys(prep, tl, tr))
    files = sorted(Path(pairs_dir).glob("*.parquet"))
    scored = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
    if scored is not None and scored.num_rows:
        sl = _internal(prep.sides[0], scored.column(0).combine_chunks(), "scored pairs")
        sr = _internal(prep.sides[-1], scored.column(1).combine_chunks(), "scored pairs")
        keys = _keys(prep, sl, sr)
        prob = scored.column("match_probability").to_numpy()
        hit = np.isin(keys, true)
    else:
        keys, prob, hit = np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool)
    rows = []
    for t in thresholds:
        sel = prob >= t
        predicted, tp = int(sel.sum()), int((hit & sel).sum())
        precision = tp / predicted if predicted else 1.0
        recall = tp / len(true) if len(true) else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"threshold": t, "predicted": predicted, "true_positives": tp, "false_positives": predicted - tp,
                     "false_negatives": len(true) - tp, "precision": precision, "recall": recall, "f1": f1})
    uniq = sorted_unique(true)
    n = len(prep.sides[-1].ids)
    return {"true_pairs": int(len(true)), "scored_pairs": int(len(keys)), "floor": floor, "thresholds": rows,
            "blocking": _reach(prep, uniq // n, uniq % n)}
