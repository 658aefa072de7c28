"""The declarant scorecard's ranking: which declarants declare clearly worse than the others.

A declarant gets a person's identity wrong once and repeats it on every row it sends for that
person, so the unit of evidence is the person, not the row. Per declarant, k of its n persons
(distinct persons it declared, plus one per ingest reject, which names nobody) have a problem
row (NIR missing or not valid, or the row not linked). p0 is the pooled share of problem
persons over the ranked declarants, and the reference share is p_ref = ratio x p0
(``declarant_excess_ratio``, 2 by default): the question asked of each declarant is "is its
problem share above twice the population's?", not "is it above the population's?", so a very
large declarant with a slight, harmless excess (its persons come back in several spells, each
a new chance of error) does not outrank a small one that gets 40% of its persons wrong. The
score is the signed root of the likelihood-ratio statistic of the binomial test of k among n
against p_ref,

    z = sign(k - n p_ref) * sqrt(2 n KL(k/n || p_ref)),
    KL(q || p) = q ln(q / p) + (1 - q) ln((1 - q) / (1 - p)),

the deviance of the declarant's own share against the reference: exp(-z^2 / 2) bounds the
probability of a share at least this high by chance when the declarant's true share is p_ref
(Chernoff), so a declarant of 4 persons with 2 problems does not outrank one of 400 with 160,
and a large declarant rises as soon as its excess is clear. Declarants at or under the
reference get z <= 0.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["excess_z", "rank_scorecard"]


def _xlogy(x: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """x * ln(ratio) with 0 * ln(anything) = 0."""
    pos = x > 0
    return np.where(pos, x * np.log(np.where(pos, ratio, 1.0)), 0.0)


def excess_z(k, n, p0: float) -> np.ndarray:
    """Signed root of the binomial likelihood-ratio statistic of k problems among n against the
    rate p0 (0 < p0 < 1): positive when k / n > p0; 0 for n = 0."""
    k = np.asarray(k, np.float64)
    n = np.asarray(n, np.float64)
    if not 0.0 < p0 < 1.0:
        return np.zeros(np.broadcast(k, n).shape)
    nn = np.maximum(n, 1.0)
    q = np.clip(k / nn, 0.0, 1.0)
    kl = _xlogy(q, q / p0) + _xlogy(1.0 - q, (1.0 - q) / (1.0 - p0))
    z = np.sign(q - p0) * np.sqrt(np.maximum(2.0 * nn * kl, 0.0))
    return np.where(n > 0, z, 0.0)


def rank_scorecard(card: pa.Table, min_rows: int, ratio: float = 2.0) -> tuple[pa.Table, float | None]:
    """Add ``excess_z`` and ``rank`` to the per-declarant table (columns rows, rejects, persons,
    problem_persons, settings; ``settings`` stays last), ranking the declarants with at least ``min_rows`` rows + rejects (rank 1 =
    the clearest excess; ties by declarant id), the others unranked; sorted by rank then
    declarant; z is against ``ratio`` x p0 (capped below 1). Returns the table and p0 (None
    when nothing is ranked)."""
    rows = pc.fill_null(card.column("rows"), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    rejects = pc.fill_null(card.column("rejects"), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    n = pc.fill_null(card.column("persons"), 0).to_numpy(zero_copy_only=False).astype(np.int64) + rejects
    k = pc.fill_null(card.column("problem_persons"), 0).to_numpy(zero_copy_only=False).astype(np.int64) + rejects
    eligible = rows + rejects >= min_rows
    p0 = float(k[eligible].sum() / n[eligible].sum()) if eligible.any() and n[eligible].sum() else None
    z = excess_z(k, n, min(ratio * p0, 0.999)) if p0 else np.zeros(len(n))
    z = np.round(z, 9)  # the same order whatever the platform's last bits
    names = card.column("declarant").to_pylist()
    order = sorted(range(len(names)), key=lambda i: (not eligible[i], -z[i] if eligible[i] else 0.0, names[i]))
    rank = np.zeros(len(names), np.int64)
    r = 0
    for i in order:
        if eligible[i]:
            r += 1
            rank[i] = r
    settings = card.column("settings")
    out = card.drop_columns(["settings"]).append_column("excess_z", pa.array(z, pa.float64()))
    out = out.append_column("rank", pa.array(rank, pa.int64(), mask=~eligible)).append_column("settings", settings)
    return out.take(pa.array(order, pa.int64())), p0
