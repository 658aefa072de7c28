"""Expectation maximisation of a model's m with its sessions as parallel tasks.

Splink runs a recipe's EM sessions (one per blocking rule) one after the other: each starts
from the m the previous ones left, and a level's m is the median of what the sessions that
could estimate it found. Here every session is a task that starts from the same point (the
fixed levels, the u and the prior from the deterministic rules) and returns what it found;
the m are then the same medians, taken over the sessions in the recipe's order. Only the
starting point of the later sessions differs from Splink's sequence, and EM converges from
either (the weights agree within a few hundredths of a bit: tests/test_training.py).
"""

from __future__ import annotations

import copy
import statistics
from typing import Any

import pyarrow as pa

from ._model import ModelSpec

__all__ = ["em_session", "combine_sessions"]


def em_session(model: ModelSpec, index: int, left: pa.Table, right: pa.Table | None, tf: dict[str, pa.Table], *,
               threads: int = 1, memory_limit: str | None = None, fixed_u: dict[str, dict[str, float]] | None = None,
               u: dict[str, list[float | None]] | None = None,
               names: tuple[str, str] = ("records", "register")) -> dict[str, Any]:
    """EM session ``index`` of the recipe from the common starting point: ``start`` (the Splink
    settings it started from) and ``m`` (per comparison, per level: the m the session found,
    None where it could not estimate it: a comparison the blocking rule uses, a level no pair
    fell into, a fixed m)."""
    from ._splink import em_rule, start_training

    tables = [left] if right is None else [left, right]
    with start_training(model, tables, tf, threads=threads, memory_limit=memory_limit, fixed_u=fixed_u, u=u or {},
                        names=names) as linker:
        start = linker.misc.save_model_to_json()
        linker.training.estimate_parameters_using_expectation_maximisation(
            em_rule(model.training["em_blocking"][index]), record_sample_proportion=1.0)
        found: dict[str, list[float | None]] = {}
        for comp in linker._settings_obj.comparisons:
            found[comp.output_column_name] = [_trained_m(lv) for lv in comp.comparison_levels]
    start.pop("linker_uid", None)
    return {"start": start, "m": found}


def _trained_m(level) -> float | None:
    if level.is_null_level:
        return None
    values = [r["probability"] for r in level._trained_m_probabilities]
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(values[-1]) if values else None


def combine_sessions(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """The trained settings from the sessions' results (in the recipe's order): the common
    starting point with each level's m the median of the sessions' estimates (Splink's rule),
    the starting m where no session estimated it."""
    if not sessions:
        raise ValueError("no EM session to combine")
    settings = copy.deepcopy(sessions[0]["start"])
    for s in sessions[1:]:
        if s["start"] != sessions[0]["start"]:
            raise RuntimeError("EM sessions did not start from the same settings")
    for comp in settings.get("comparisons", []):
        name = comp["output_column_name"]
        for j, lv in enumerate(comp["comparison_levels"]):
            if lv.get("is_null_level") or lv.get("fix_m_probability"):
                continue
            values = [s["m"][name][j] for s in sessions if s["m"][name][j] is not None]
            if values:
                lv["m_probability"] = statistics.median(values)
    return settings
