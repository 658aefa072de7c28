"""The drift check of an increment: do this month's records still look like the data the model was trained on?

A quick estimate, no training: the comparison levels of two samples of this month's new
signatures, compared by Splink as the model scores them (``_explain.compare_pairs``):

- m: each new signature linked this run with its linked register entry (the decided links
  are nearly all true matches), the share of the pairs at each level of each comparison;
- u: each new signature with a register entry drawn at random (nearly all non-matches).

A level whose estimated share and the model's m (or u) differ by more than the tolerance in
bits, |log2((est + eps) / (model + eps))| with eps = 0.01 so that rare levels (a few pairs)
do not count, moved: the manifest lists it and the job's report warns that retraining
(``retrain = "always"``) is advised. With fewer than MIN_PAIRS pairs the check says it did
not run rather than judge on noise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._explain import PAIR_KEY, compare_pairs
from ._model import ModelSpec
from ._prepare import LINK_COLUMNS

__all__ = ["drift_check", "MIN_PAIRS", "SAMPLE"]

MIN_PAIRS = 50
SAMPLE = 5000  # new signatures per sample
EPS = 0.01


def _pairs(model: ModelSpec, left: pa.Table, right: pa.Table, tf) -> pa.Table:
    """Splink's comparison of left row i with right row i (ids replaced by i on both sides:
    Splink wants each side's ids distinct, and an entry may be linked by many signatures)."""
    keys = pa.array(np.arange(left.num_rows, dtype=np.int64))

    def keyed(t: pa.Table) -> pa.Table:
        return t.select(LINK_COLUMNS.names).set_column(0, "unique_id", keys).append_column(PAIR_KEY, keys)

    table, _ = compare_pairs(model, keyed(left), keyed(right), tf)
    return table


def _levels(model: ModelSpec, pairs: pa.Table, which: str) -> list[dict[str, Any]]:
    """Per comparison level: the share of ``pairs`` at it, beside the model's ``which`` (m or u)."""
    out = []
    for comp in model.splink["comparisons"]:
        name = comp["output_column_name"]
        levels = [lv for lv in comp["comparison_levels"] if not lv.get("is_null_level")]
        gamma = pairs.column(f"gamma_{name}").to_numpy(zero_copy_only=False)
        gamma = gamma[gamma >= 0]
        if len(gamma) == 0:
            continue
        for i, lv in enumerate(levels):
            model_p = lv.get(f"{which}_probability")
            if model_p is None:
                continue
            share = float((gamma == len(levels) - 1 - i).sum()) / len(gamma)
            bits = abs(math.log2((share + EPS) / (float(model_p) + EPS)))
            out.append({"comparison": name, "level": lv.get("label_for_charts", str(i)), "which": which,
                        "model": round(float(model_p), 6), "estimate": round(share, 6), "bits": round(bits, 3)})
    return out


def drift_check(work: Path, model: ModelSpec, tf: dict[str, pa.Table], *, tolerance: float,
                seed: int = 42) -> dict[str, Any]:
    """Compare the model's m and u with a quick estimate on this month's new signatures (their
    ids in ``work/new/``, written by ``_increment.merge_signatures``)."""
    new_signatures = pa.concat_tables([pq.read_table(f) for f in sorted((work / "new").glob("*.parquet"))]
                                      ).column("unique_id").combine_chunks()
    sigs = pa.concat_tables([pq.read_table(f) for f in sorted((work / "signatures").glob("part-*.parquet"))])
    sigs = sigs.filter(pc.is_in(sigs.column("unique_id"), value_set=new_signatures))
    rng = np.random.default_rng(seed)
    if sigs.num_rows > SAMPLE:
        sigs = sigs.take(pa.array(np.sort(rng.choice(sigs.num_rows, SAMPLE, replace=False))))
    sigs = sigs.select(LINK_COLUMNS.names)
    links = pa.concat_tables([pq.read_table(f, columns=["signature", "register_nir", "status"])
                              for f in sorted((work / "links").glob("*.parquet"))])
    links = links.filter(pc.and_(pc.equal(links.column("status"), "linked"),
                                 pc.is_in(links.column("signature"), value_set=sigs.column("unique_id"))))
    reg = pa.concat_tables([pq.read_table(f) for f in sorted((work / "register").glob("part-*.parquet"))])
    out: dict[str, Any] = {"tolerance_bits": tolerance, "pairs_m": 0, "pairs_u": 0, "moved": [],
                           "retrain_advised": False}
    found: list[dict[str, Any]] = []
    # m: each linked new signature with its register entry
    pos = pc.index_in(links.column("register_nir"), value_set=reg.column("nir"))
    ok = pc.is_valid(pos)
    links, pos = links.filter(ok), pos.filter(ok)
    if links.num_rows >= MIN_PAIRS:
        left = sigs.take(pc.index_in(links.column("signature"), value_set=sigs.column("unique_id")))
        table = _pairs(model, left, reg.take(pos), tf)
        out["pairs_m"] = table.num_rows
        found += _levels(model, table, "m")
    # u: each new signature with a register entry drawn at random
    if sigs.num_rows >= MIN_PAIRS and reg.num_rows:
        table = _pairs(model, sigs, reg.take(pa.array(rng.integers(0, reg.num_rows, sigs.num_rows))), tf)
        out["pairs_u"] = table.num_rows
        found += _levels(model, table, "u")
    out["checked"] = bool(found)
    out["moved"] = sorted((lv for lv in found if lv["bits"] > tolerance), key=lambda lv: -lv["bits"])
    out["max_bits"] = max((lv["bits"] for lv in found), default=None)
    out["retrain_advised"] = bool(out["moved"])
    return out
