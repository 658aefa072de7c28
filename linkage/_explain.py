"""Why a signature linked or did not: its candidates, and for each the comparison levels and
the match weight each contributes, from the prior to the final weight (a waterfall).

Works from a published link directory alone: the decision (``links/``), the best candidates
the decision kept (``candidates/``), the signature and register rows (``signatures/``,
``register/``), the trained model (``model.json``) and the term-frequency tables the scoring
used (``tf/``). The pairs are compared again by Splink with the same settings and tables, in
one small DuckDB session: the weights are the scoring's own (tests check them equal to the
stored match weights), nothing of the link stage re-runs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nirlink.kernels import InputError

from ._model import ModelSpec, load_model
from ._prepare import LINK_COLUMNS, RECORD_INPUT_COLUMNS, signature_ids

__all__ = ["compare_pairs", "comparison_columns", "waterfall", "explain_signature", "signatures_of_records", "save_tf", "load_tf"]

PAIR_KEY = "pair_key"


def save_tf(tf: dict[str, pa.Table], directory: Path) -> None:
    """Term-frequency tables of one model, one Parquet file per column."""
    directory.mkdir(parents=True, exist_ok=True)
    for column, table in tf.items():
        pq.write_table(table, directory / f"{column}.parquet")


def load_tf(directory: Path) -> dict[str, pa.Table]:
    return {p.stem: pq.read_table(p) for p in sorted(directory.glob("*.parquet"))}


def compare_pairs(model: ModelSpec, left: pa.Table, right: pa.Table, tf: dict[str, pa.Table], *,
                  threads: int = 1, memory_limit: str | None = None, chart: bool = False,
                  show_values: bool = False) -> tuple[pa.Table, str | None]:
    """Splink's whole comparison of the pairs (left row, right row) that share ``pair_key``:
    every comparison's level (``gamma_<name>``), its match weight (``mw_<name>``) and TF
    adjustment (``mw_tf_adj_<name>``), the compared values (``<column>_l`` / ``_r``), the
    final ``match_weight`` and ``match_probability``. With ``chart``, also Splink's own
    waterfall chart of the pairs as a self-contained HTML page (its chart library inline, so
    it reads offline), identity values left out of it unless ``show_values``."""
    from ._splink import duckdb_connection, make_linker

    settings = model.settings()
    settings["retain_intermediate_calculation_columns"] = True
    settings["retain_matching_columns"] = True
    settings["additional_columns_to_retain"] = [PAIR_KEY]
    rule = f"l.{PAIR_KEY} = r.{PAIR_KEY}"
    with duckdb_connection(threads=threads, memory_limit=memory_limit) as con:
        linker, frames = make_linker(con, settings, [left, right], tf)
        # the rule twice: Splink 5's fast path (see _splink._predict)
        df = linker.inference.predict_between(frames[0], frames[1], blocking_rules_to_generate_predictions=[rule, rule],
                                              warning_mode="never")
        table = df.as_pyarrow_table()
        html = None
        if chart and table.num_rows:
            html = linker.visualisations.waterfall_chart(table.to_pylist(), filter_nulls=False,
                                                         remove_sensitive_data=not show_values).to_html(inline=True)
        return table, html


def _level_labels(settings: dict[str, Any]) -> list[dict[int, str]]:
    """Per comparison: Splink's comparison vector value -> level label (null level: -1; the
    other levels count down from the first to 0 for ELSE)."""
    out = []
    for comp in settings["comparisons"]:
        levels = comp["comparison_levels"]
        non_null = [lv for lv in levels if not lv.get("is_null_level")]
        labels = {len(non_null) - 1 - i: lv.get("label_for_charts", "") for i, lv in enumerate(non_null)}
        labels[-1] = next((lv.get("label_for_charts", "null") for lv in levels if lv.get("is_null_level")), "null")
        out.append(labels)
    return out


def comparison_columns(model: ModelSpec) -> dict[str, list[str]]:
    """The columns each comparison's levels read (``l.<column>`` in their SQL), in order."""
    out = {}
    for comp in model.comparisons:
        cols: list[str] = []
        for lv in comp.levels:
            for col in re.findall(r"\bl\.([A-Za-z_][A-Za-z0-9_]*)", lv.sql):
                if col not in cols:
                    cols.append(col)
        out[comp.name] = cols
    return out


def waterfall(model: ModelSpec, pair: dict[str, Any]) -> dict[str, Any]:
    """From the prior to the final match weight, one step per comparison (and its TF
    adjustment): ``{"steps": [...], "match_weight", "match_probability"}``. The steps add up
    to the final weight; each step carries the values it compared (``values``: column ->
    [record, register]), which the caller shows or drops."""
    settings = model.settings()
    columns = comparison_columns(model)
    lam = float(settings["probability_two_random_records_match"])
    prior = math.log2(lam / (1 - lam))
    steps = [{"step": "prior", "level": f"probability two random records match {lam:.3g}", "weight": prior,
              "cumulative": prior}]
    total = prior
    for comp, labels in zip(settings["comparisons"], _level_labels(settings)):
        name = comp["output_column_name"]
        gamma = int(pair[f"gamma_{name}"])
        weight = float(pair.get(f"mw_{name}") or 0.0)
        tf_adj = pair.get(f"mw_tf_adj_{name}")
        tf_adj = float(tf_adj) if tf_adj is not None and not math.isnan(float(tf_adj)) else 0.0
        total += weight + tf_adj
        steps.append({"step": name, "level": labels.get(gamma, str(gamma)), "gamma": gamma, "weight": weight,
                      "tf_adjustment": tf_adj, "cumulative": total,
                      "values": {c: [pair.get(f"{c}_l"), pair.get(f"{c}_r")] for c in columns.get(name, [])}})
    return {"steps": steps, "match_weight": float(pair["match_weight"]),
            "match_probability": float(pair["match_probability"]), "sum_of_steps": total}


def _read(path: Path, where: str) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    try:
        return con.sql(f"select * from read_parquet('{path}') where {where}").to_arrow_table()
    finally:
        con.close()


def explain_signature(link_dir: str | Path, signature: int, *, tf_name: str = "identity", chart: bool = False,
                      show_values: bool = False) -> dict[str, Any]:
    """The decision on ``signature`` and, for each kept candidate, its comparison waterfall and
    the compared values (the caller masks NIRs and decides whether identity values are shown)."""
    link_dir = Path(link_dir)
    if not (link_dir / "links").exists():
        raise InputError(f"{link_dir}: not a published link stage (no links/)")
    sig = int(signature)
    link = _read(link_dir / "links" / "*.parquet", f"signature = {sig}").to_pylist()
    if not link:
        raise InputError(f"signature {sig} is not in {link_dir / 'links'}")
    manifest = json.loads((link_dir / "_manifest.json").read_text()) if (link_dir / "_manifest.json").exists() else {}
    record = _read(link_dir / "signatures" / "*.parquet", f"unique_id = {sig}")
    cand_dir = link_dir / "candidates"
    candidates = _read(cand_dir / "*.parquet", f"signature = {sig}").sort_by("rank") if cand_dir.exists() else None
    out: dict[str, Any] = {"signature": sig, "decision": link[0], "rule": manifest.get("decisions", {}),
                           "chart_html": None,
                           "deterministic_rule": manifest.get("deterministic", {}).get("rule"),
                           "record": record.to_pylist()[0] if record.num_rows else None, "candidates": []}
    if candidates is None or candidates.num_rows == 0 or record.num_rows == 0:
        return out
    model = load_model(link_dir / "model.json")
    ids = ",".join(str(int(i)) for i in candidates.column("register_id").to_pylist())
    register = _read(link_dir / "register" / "*.parquet", f"unique_id in ({ids})")
    names = LINK_COLUMNS.names
    left = record.select(names).append_column(PAIR_KEY, pa.array([sig], pa.int64()))
    right = register.select(names).append_column(PAIR_KEY, pa.array(np.full(register.num_rows, sig), pa.int64()))
    compared, out["chart_html"] = compare_pairs(model, left, right, load_tf(link_dir / "tf" / tf_name), chart=chart,
                                                show_values=show_values)
    pairs = {int(p["unique_id_r"]): p for p in compared.to_pylist()}
    for cand in candidates.to_pylist():
        pair = pairs.get(int(cand["register_id"]))
        out["candidates"].append({**cand, "waterfall": waterfall(model, pair) if pair else None})
    return out


def signatures_of_records(row_files: Sequence[str], record_ids: Sequence[int]) -> dict[int, list[tuple[str, int]]]:
    """record id -> [(file, signature)] for every row carrying it (a record id may stand in
    more than one input): the rows' ``signature`` column (ingested, attached, aggregated and
    exported rows), or the signature computed from their identity (rows ingested before the
    ingest stage stored it)."""
    wanted = pa.array(sorted({int(r) for r in record_ids}), pa.int64())
    found: dict[int, list[tuple[str, int]]] = {}
    for f in row_files:
        stored = "signature" in pq.read_schema(f).names
        t = pq.read_table(f, columns=["record_id", *(["signature"] if stored else RECORD_INPUT_COLUMNS)],
                          filters=[("record_id", "in", wanted.to_pylist())])
        if t.num_rows == 0:
            continue
        sigs = t.column("signature").to_pylist() if stored else signature_ids(t)
        for rid, sid in zip(t.column("record_id").to_pylist(), sigs):
            found.setdefault(int(rid), []).append((f, int(sid)))
    return found

