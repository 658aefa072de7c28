"""The signals stage's cases against the truth of a synthetic dataset (``nirlink evaluate --signals``).

Person-level rules: a case's person (a register NIR, possibly a duplicate's) is mapped to its
true person through the truth's register rows; precision = cases whose true person is in the
rule's truth / cases, recall = truth persons found / truth persons. The declarant scorecard:
among the ranked declarants (at least ``min_declarant_rows`` rows), the planted bad ones are
compared with the top k of the ranking, k = their number, and with the top 1% (1% of the
ranked declarants, rounded: the synthetic data plants round(1%) of its employers, and the
ranked declarants are those employers and four payers, so at the default rate both sets have
the same size and the top 1% equals the planted set when the ranking is right).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels import InputError

__all__ = ["evaluate_signals"]

PERSON_RULES = ("income_after_death", "nir_shared", "identity_conflict", "possible_pension_non_take_up",
                "low_resources_no_minimum")


def _scores(found: set, truth: set) -> dict[str, Any]:
    tp = len(found & truth)
    return {"cases": len(found), "truth": len(truth), "true_positives": tp,
            "false_positives": len(found) - tp, "false_negatives": len(truth) - tp,
            "precision": tp / len(found) if found else (1.0 if not truth else 0.0),
            "recall": tp / len(truth) if truth else 1.0}


def evaluate_signals(signals_dir: str | Path, data_dir: str | Path) -> dict[str, Any]:
    """Precision and recall per rule of a signals stage output against a synthetic dataset's truth
    (``data_dir``: the directory nirlink synth wrote, or its ``truth/``)."""
    signals_dir, data_dir = Path(signals_dir), Path(data_dir)
    if data_dir.name == "truth":
        data_dir = data_dir.parent
    if (signals_dir / "signals" / "_manifest.json").exists():
        signals_dir = signals_dir / "signals"
    truth_dir = data_dir / "truth_signals"
    if not (signals_dir / "_manifest.json").exists():
        raise InputError(f"{signals_dir}: not a signals stage output (no _manifest.json)")
    if not truth_dir.exists() or not any(truth_dir.glob("*.parquet")):
        raise InputError(f"{truth_dir}: no signals truth (a dataset written by nirlink synth with signal planting)")
    truth = pq.read_table(truth_dir)
    reg = pq.read_table(data_dir / "truth", columns=["source", "register_nir", "true_nir"])
    reg = reg.filter(pc.equal(reg.column("source"), "register"))
    true_of = dict(zip(reg.column("register_nir").to_pylist(), reg.column("true_nir").to_pylist()))
    report: dict[str, Any] = {"rules": {}}
    for rule in PERSON_RULES:
        expected = set(truth.filter(pc.equal(truth.column("rule"), rule)).column("person").to_pylist())
        path = signals_dir / rule
        persons = pq.read_table(path, columns=["person"]).column("person").to_pylist() if path.exists() else []
        found = {true_of.get(p, p) for p in persons}
        report["rules"][rule] = _scores(found, expected)
    card_path = signals_dir / "declarant_scorecard"
    if card_path.exists():
        card = pq.read_table(card_path, columns=["declarant", "rank"])
        ranked = card.filter(pc.is_valid(card.column("rank"))).sort_by("rank")
        order = ranked.column("declarant").to_pylist()
        planted = set(truth.filter(pc.equal(truth.column("rule"), "declarant_quality")).column("declarant")
                      .to_pylist())
        eligible = planted & set(order)
        k = len(eligible)
        top1 = max(1, math.floor(0.01 * len(order) + 0.5)) if order else 0  # 1% of the ranked, rounded
        report["declarants"] = {
            "ranked": len(order), "planted": len(planted), "planted_ranked": k,
            "top_k": _scores(set(order[:k]), eligible),
            "top_1_percent": {**_scores(set(order[:top1]), eligible), "size": top1},
        }
    return report
