"""The drift check of an increment: do this month's records still look like the data the model was trained on?

A quick estimate, no training: the comparison levels of pairs that Splink compares as the
model scores them (``_explain.compare_pairs``), for two samples of rows drawn the same way:

- this month: SAMPLE of this run's own rows (a signature drawn in proportion to its rows
  this month);
- the reference: SAMPLE of the previous job's rows (a signature drawn in proportion to its
  rows there: every earlier month), with the previous job's links and register.

Per sample, m: each drawn signature that is linked, with its linked register entry (the
decided links are nearly all true matches), the share of the pairs at each level of each
comparison; u: each drawn signature with a register entry drawn at random (nearly all
non-matches). Rows, not distinct signatures, are drawn: a month's distinct signatures are
another selection than a job's (a signature first seen this month is mostly a new person's
or a new typo, and a person's clean signature carries most of his rows), while the rows of
a month and of the months before come from the same process when nothing drifted. The
model's own m and u (fitted on distinct signatures by EM) are shown beside, not judged
against: they are another selection again.

A level moved when its share this month and in the reference differ both by more than the
tolerance in bits, |log2((p1 + eps) / (p2 + eps))| with eps = 0.01 (rare levels, a few
pairs, do not count), and by more than Z standard errors of that difference given the two
pair counts (a two-proportion test: the sampling error of samples of a few hundred pairs
cannot move a level). The manifest lists the levels that moved and the job's report warns
that retraining (``retrain = "always"``) is advised. With fewer than MIN_PAIRS pairs in a
sample the check says it did not run rather than judge on noise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels._segments import sorted_unique

from ._explain import PAIR_KEY, compare_pairs
from ._model import ModelSpec
from ._prepare import LINK_COLUMNS

__all__ = ["drift_check", "moved_levels", "MIN_PAIRS", "SAMPLE", "Z"]

MIN_PAIRS = 50
SAMPLE = 3000  # rows per sample
EPS = 0.01
Z = 4.0  # standard errors: about 80 levels (m and u) checked a month, a false alarm < 1% of months


def _pairs(model: ModelSpec, left: pa.Table, right: pa.Table, tf) -> pa.Table:
    """Splink's comparison of left row i with right row i (ids replaced by i on both sides:
    Splink wants each side's ids distinct, and a row may be drawn many times)."""
    keys = pa.array(np.arange(left.num_rows, dtype=np.int64))

    def keyed(t: pa.Table) -> pa.Table:
        return t.select(LINK_COLUMNS.names).set_column(0, "unique_id", keys).append_column(PAIR_KEY, keys)

    table, _ = compare_pairs(model, keyed(left), keyed(right), tf)
    return table


def _counts(model: ModelSpec, pairs: pa.Table | None) -> dict[tuple[str, int], tuple[int, int]]:
    """Per (comparison, level index): the pairs at the level and the pairs with a non-null level."""
    out = {}
    if pairs is None:
        return out
    for comp in model.splink["comparisons"]:
        name = comp["output_column_name"]
        levels = [lv for lv in comp["comparison_levels"] if not lv.get("is_null_level")]
        gamma = pairs.column(f"gamma_{name}").to_numpy(zero_copy_only=False)
        gamma = gamma[gamma >= 0]
        for i in range(len(levels)):
            out[(name, i)] = (int((gamma == len(levels) - 1 - i).sum()), len(gamma))
    return out


def moved_levels(month: tuple[int, int], reference: tuple[int, int], tolerance: float,
                 z: float = Z) -> tuple[bool, float, float]:
    """Whether a level's share moved: ``month`` and ``reference`` are (pairs at the level, pairs);
    returns (moved, bits, standard errors)."""
    (k1, n1), (k2, n2) = month, reference
    p1, p2 = k1 / n1, k2 / n2
    bits = abs(math.log2((p1 + EPS) / (p2 + EPS)))
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    errors = abs(p1 - p2) / se if se > 0 else 0.0
    return bits > tolerance and errors > z, bits, errors


def _read(d: Path, columns: list[str] | None = None) -> pa.Table:
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in sorted(d.glob("*.parquet"))])


def _drawn(t: pa.Table, key: str, drawn: np.ndarray) -> pa.Table:
    """The rows of ``t`` whose ``key`` is each of ``drawn`` in turn (a key drawn twice: twice).
    The table is first cut to the drawn keys: a hash table of its every key (700,000
    signatures at 200,000 persons) cost 0.15 s per lookup."""
    distinct = pa.array(sorted_unique(drawn))
    t = t.filter(pc.is_in(t.column(key), value_set=distinct))
    return t.take(pc.index_in(pa.array(drawn), value_set=t.column(key)))


def _sample(link: Path, weights: pa.Table, rng) -> tuple[tuple[pa.Table, pa.Table] | None,
                                                          tuple[pa.Table, pa.Table] | None]:
    """The m and u pairs (left rows, right rows) of SAMPLE rows drawn from ``weights``
    (unique_id, rows), with the links and register of ``link`` (a link directory)."""
    rows = weights.column("rows").to_numpy().astype(float)
    if not len(rows) or rows.sum() <= 0:
        return None, None
    drawn = rng.choice(weights.column("unique_id").to_numpy(), SAMPLE, p=rows / rows.sum())
    sigs = _drawn(_read(link / "signatures").select(LINK_COLUMNS.names), "unique_id", drawn)
    links = _drawn(_read(link / "links", ["signature", "register_nir", "status"]), "signature", drawn)
    reg = _read(link / "register").select(LINK_COLUMNS.names)
    pos = pc.index_in(links.column("register_nir"), value_set=reg.column("nir"))
    ok = pc.fill_null(pc.and_(pc.equal(links.column("status"), "linked"), pc.is_valid(pos)), False)
    m = (sigs.filter(ok), reg.take(pos.filter(ok))) if (pc.sum(ok).as_py() or 0) >= MIN_PAIRS else None
    u = (sigs, reg.take(pa.array(rng.integers(0, reg.num_rows, sigs.num_rows)))) if reg.num_rows else None
    return m, u


def _compare(model: ModelSpec, parts: list[tuple[pa.Table, pa.Table] | None], tf) -> list[pa.Table | None]:
    """Each part's pairs compared by the model, all in one Splink call: its fixed cost (~0.3 s,
    a linker and its SQL built) paid once, not once per sample and side."""
    present = [p for p in parts if p is not None]
    if not present:
        return [None] * len(parts)
    table = _pairs(model, pa.concat_tables([p[0] for p in present], promote_options="permissive"),
                   pa.concat_tables([p[1] for p in present], promote_options="permissive"), tf)
    ids = table.column("unique_id_l").to_numpy()  # left row i of the concatenation: ``_pairs``' key
    out, start = [], 0
    for p in parts:
        if p is None:
            out.append(None)
            continue
        out.append(table.filter(pa.array((ids >= start) & (ids < start + p[0].num_rows))))
        start += p[0].num_rows
    return out


def drift_check(work: Path, previous: Path, model: ModelSpec, tf: dict[str, pa.Table], *, tolerance: float,
                z: float = Z, seed: int = 42) -> dict[str, Any]:
    """Compare this month's rows (their signatures and rows in ``work/month/``, written by
    ``_increment.merge_signatures``) with the previous job's (``previous``: its link directory)."""
    rng = np.random.default_rng(seed)
    month = _sample(work, _read(work / "month"), rng)
    ref = _sample(previous, _read(previous / "links", ["signature", "rows"]).rename_columns(["unique_id", "rows"]),
                  rng)
    month_m, month_u, ref_m, ref_u = _compare(model, [*month, *ref], tf)
    month, ref = (month_m, month_u), (ref_m, ref_u)
    out: dict[str, Any] = {"tolerance_bits": tolerance, "z": z, "sample_rows": SAMPLE,
                           "pairs_m": 0 if month[0] is None else month[0].num_rows,
                           "pairs_u": 0 if month[1] is None else month[1].num_rows,
                           "reference_pairs_m": 0 if ref[0] is None else ref[0].num_rows,
                           "reference_pairs_u": 0 if ref[1] is None else ref[1].num_rows, "moved": [],
                           "retrain_advised": False}
    found: list[dict[str, Any]] = []
    for which, a, b in (("m", month[0], ref[0]), ("u", month[1], ref[1])):
        if a is None or b is None or a.num_rows < MIN_PAIRS or b.num_rows < MIN_PAIRS:
            continue
        ca, cb = _counts(model, a), _counts(model, b)
        for comp in model.splink["comparisons"]:
            levels = [lv for lv in comp["comparison_levels"] if not lv.get("is_null_level")]
            for i, lv in enumerate(levels):
                key = (comp["output_column_name"], i)
                if not ca[key][1] or not cb[key][1]:
                    continue
                moved, bits, errors = moved_levels(ca[key], cb[key], tolerance, z)
                model_p = lv.get(f"{which}_probability")
                found.append({"comparison": key[0], "level": lv.get("label_for_charts", str(i)), "which": which,
                              "model": None if model_p is None else round(float(model_p), 6),
                              "estimate": round(ca[key][0] / ca[key][1], 6),
                              "reference": round(cb[key][0] / cb[key][1], 6), "bits": round(bits, 3),
                              "standard_errors": round(errors, 2), "moved": moved})
    out["checked"] = bool(found)
    out["moved"] = sorted((lv for lv in found if lv.pop("moved")), key=lambda lv: -lv["bits"])
    out["max_bits"] = max((lv["bits"] for lv in found), default=None)
    out["retrain_advised"] = bool(out["moved"])
    return out
