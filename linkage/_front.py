"""The general front (`nirlink link`): any model file, one dataset (deduplication) or two (link).

Two phases. ``prepare`` works in this process on the tables the engine read and checks
everything before any output is written or any worker is asked for anything: the number of
inputs against the model's link type, the record ids (present, unique), every SQL piece of
the model compiled on empty tables shaped like the inputs (_model_sql.compile_errors). It
gives each record an internal id, the rank of its id as given in sorted order (so Splink's
``l.unique_id < r.unique_id`` orients a deduplication's pairs as it would on the ids
themselves, and the smallest internal id of a cluster is its smallest id), and computes the
blocking keys that are expressions (``substr(surname, 1, 3)``) as columns, so scoring can
partition both sides on them. ``run`` trains an untrained model (on the ids as given, so u
sampling, which Splink seeds on the ids, picks the pairs a plain Splink run picks), scores
(in this process in one Splink call, or across the cluster partitioned on each rule group's
key: _scoring.score_rules), decides (_front_decide) and writes every output with the ids
as given. Term frequencies are counted on both inputs together, as Splink does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nirlink.kernels import InputError, ModelError, SpecError

from ._config import LinkConfig
from ._model import Blocking, ModelSpec, save_model
from ._model_sql import compile_errors, is_identifier, model_columns
from ._splink import PREDICTION_SCHEMA, predict_all, tf_tables, train
from ._tasks import Progress

__all__ = ["Side", "Prepared", "FrontOptions", "prepare", "run", "train_on", "save_charts", "SIDE_NAMES"]

SIDE_NAMES = ("left", "right")  # the two inputs of a link, in the outputs (source_dataset)
# Splink's names for inputs registered without one (its source_dataset): training uses them, so
# u sampling, which hashes source_dataset with the ids, picks the pairs a plain Splink run picks
SPLINK_NAMES = ("__splink__input_table_0", "__splink__input_table_1")


@dataclass
class Side:
    name: str  # "left" / "right"
    path: str
    ids: pa.Array  # the ids as given, sorted: internal id k is ids[k]
    order: np.ndarray  # the input's row of internal id k
    table: pa.Table  # unique_id (internal id), the model's columns, derived blocking keys
    train: pa.Table  # unique_id (the id as given), the model's columns, in input order


@dataclass
class Prepared:
    model: ModelSpec
    scoring: ModelSpec  # the model with its expression keys replaced by the derived key columns
    sides: list[Side]
    id_column: str
    derived_keys: dict[str, str]  # derived column -> the key expression it holds

    @property
    def dedupe(self) -> bool:
        return len(self.sides) == 1

    @property
    def rows(self) -> int:
        return sum(s.table.num_rows for s in self.sides)


@dataclass
class FrontOptions:
    threshold: float | None = None  # clusters / best match (default: the model's decision.threshold)
    decision: str | None = None  # "clusters" or "best-match" (default: the model's, else clusters)
    margin: float | None = None  # best match: bits the best candidate must lead the runner-up by
    min_probability: float = 0.01  # pairs below it are not kept (the prediction floor)
    config: LinkConfig = dataclasses.field(default_factory=LinkConfig)
    threads: int = 0  # DuckDB threads when running in this process (0: every core)
    charts: bool = True


def _rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask) + 1
    return ", ".join(str(r) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")


def _ids(path: str, table: pa.Table, id_column: str) -> tuple[pa.Array, np.ndarray]:
    ids = table.column(id_column).combine_chunks()
    if ids.null_count:
        raise InputError(f"{path}: column {id_column!r} (the record id) is empty on {ids.null_count} row(s) "
                         f"(data rows {_rows(~np.asarray(ids.is_valid()))})")
    order = pc.sort_indices(ids).to_numpy()
    sorted_ids = ids.take(pa.array(order))
    same = np.asarray(pc.equal(sorted_ids.slice(1), sorted_ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)) \
        if len(ids) > 1 else np.zeros(0, bool)
    if same.any():
        raise InputError(f"{path}: column {id_column!r} (the record id) is not unique: {int(same.sum())} "
                         f"duplicate value(s)")
    return sorted_ids, order


def _hashable(typ: pa.DataType) -> str | None:
    if pa.types.is_integer(typ):
        return "int"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "str"
    return None


def _derive_keys(model: ModelSpec, schemas: list[pa.Schema]) -> tuple[ModelSpec, dict[str, str]]:
    """The model with every blocking key that is not a plain column of a type the partitioner
    hashes (text, integer; the same on both sides) replaced by a derived text column."""
    derived: dict[str, str] = {}
    by_expr: dict[str, str] = {}

    def name_of(expr: str) -> str:
        if expr not in by_expr:
            by_expr[expr] = f"__key{len(by_expr)}"
            derived[by_expr[expr]] = expr
        return by_expr[expr]

    rules = []
    for b in model.blocking:
        left, right = [], []
        for a, c in zip(b.left_keys, b.right_keys):
            kinds = {_hashable(s.field(k).type) if k in s.names else None for s in schemas for k in (a, c)}
            if is_identifier(a) and is_identifier(c) and len(kinds) == 1 and None not in kinds:
                left.append(a)
                right.append(c)
            else:
                left.append(name_of(a))
                right.append(name_of(c))
        rules.append(Blocking(b.name, tuple(left), tuple(right), b.condition, b.fallback))
    return dataclasses.replace(model, blocking=tuple(rules)), derived


def _with_keys(table: pa.Table, derived: dict[str, str]) -> pa.Table:
    if not derived:
        return table
    import duckdb

    con = duckdb.connect()
    try:
        con.register("t", table)
        sql = ", ".join(f'CAST(({expr}) AS VARCHAR) AS "{name}"' for name, expr in derived.items())
        keys = con.sql(f"SELECT {sql} FROM t").to_arrow_table()
    finally:
        con.close()
    for name in derived:
        table = table.append_column(name, keys.column(name).cast(pa.string()))
    return table


def prepare(model: ModelSpec, inputs: list[tuple[str, pa.Table]], *, id_column: str | None = None) -> Prepared:
    """Check the model against the inputs (each a path and its table: the id column and the
    model's columns) and build the internal tables; raises before anything is written."""
    id_column = id_column or model.id_column
    if len(inputs) not in (1, 2):
        raise InputError("link: give one input (deduplication) or two (link)")
    if len(inputs) == 1 and model.link_type != "dedupe_only":
        raise ModelError(f"model {model.name!r} is a {model.link_type} model: it needs two inputs")
    if len(inputs) == 2 and model.link_type != "link_only":
        raise ModelError(f"model {model.name!r} is a {model.link_type} model: it needs one input")
    columns = [c for c in model_columns(model) if c != id_column]
    tables = [t.select([id_column, *columns]) for _, t in inputs]
    if len(tables) == 2:
        for c in columns:
            lt, rt = tables[0].schema.field(c).type, tables[1].schema.field(c).type
            if lt != rt:
                raise InputError(f"column {c!r} is {lt} in {inputs[0][0]} but {rt} in {inputs[1][0]}: declare its "
                                 "type in the model's columns")
    schemas = [t.select(columns).schema for t in tables]
    errors = compile_errors(model, schemas[0], schemas[-1])
    if errors:
        raise SpecError(errors, source=f"model {model.name!r}")
    scoring, derived = _derive_keys(model, schemas)
    id_types = {t.schema.field(id_column).type for t in tables}
    sides = []
    for (path, _), table, name in zip(inputs, tables, SIDE_NAMES):
        sorted_ids, order = _ids(path, table, id_column)
        body = table.drop_columns([id_column])
        internal = body.take(pa.array(order)).add_column(0, "unique_id", pa.array(np.arange(len(order), dtype=np.int64)))
        given = table.column(id_column)
        if len(id_types) > 1:
            given = pc.cast(given, pa.string())
        sides.append(Side(name, path, sorted_ids, order, _with_keys(internal, derived),
                          body.add_column(0, "unique_id", given)))
    return Prepared(model, scoring, sides, id_column, derived)


def _sample(table: pa.Table, max_rows: int, seed: int) -> pa.Table:
    if table.num_rows <= max_rows:
        return table
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, max_rows, replace=False))
    return table.take(pa.array(idx))


def term_frequencies(model: ModelSpec, tables: list[pa.Table]) -> dict[str, pa.Table]:
    """Term frequencies counted on every input together, as Splink counts them."""
    cols = model.tf_columns()
    if not cols:
        return {}
    return tf_tables(model, pa.concat_tables([t.select(cols) for t in tables]))


def train_on(model: ModelSpec, left: pa.Table, right: pa.Table | None, *, threads: int = 1,
             tf: dict[str, pa.Table] | None = None) -> dict[str, Any]:
    """Train ``model`` in this process on (a bounded sample of) the data; sets model.splink.
    Both tables carry ``unique_id`` (the ids as given) and the model's columns."""
    t = model.training
    max_rows = int(t.get("sample_max_register_rows", 300_000))
    seed = int(t.get("seed", 42))
    tf = tf if tf is not None else term_frequencies(model, [left] if right is None else [left, right])
    sl = _sample(left, max_rows, seed)
    sr = _sample(right, max_rows, seed) if right is not None else None
    # no rescaling of the prior: each side is a uniform random draw of its own, so the matching
    # pairs and all pairs shrink alike (by the product of the two shares, or the share squared
    # for a deduplication) and the share of pairs that match is the data's. (The job's training
    # samples birth years on both sides at once, keeping each sampled record's match: there the
    # prior is rescaled, linkage/_training.py.)
    model.splink = train(model, sl, sr, tf, threads=threads, names=SPLINK_NAMES)
    return {"sample_left_rows": sl.num_rows, "sample_right_rows": sr.num_rows if sr is not None else None,
            "probability_two_random_records_match": model.splink["probability_two_random_records_match"]}


def save_charts(model: ModelSpec, directory: str | Path, stem: str) -> list[str]:
    """Splink's match-weights and m/u charts as self-contained HTML files beside the model."""
    if not model.trained:
        return []
    from splink.internals.settings_creator import SettingsCreator

    settings = SettingsCreator.from_path_or_dict(model.settings()).get_settings("duckdb")
    out = []
    for name, chart in (("match_weights", settings.match_weights_chart()),
                        ("m_u_parameters", settings.m_u_parameters_chart())):
        path = Path(directory) / f"{stem}.{name}.html"
        path.write_text(chart.to_html(inline=True), encoding="utf-8")
        out.append(str(path))
    return out


def _write_parts(table: pa.Table, directory: Path, rows_per_part: int) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i, start in enumerate(range(0, max(table.num_rows, 1), rows_per_part)):
        f = directory / f"part-{i:05d}.parquet"
        pq.write_table(table.slice(start, rows_per_part), f)
        files.append(str(f))
    return files


def _given_pairs(prep: Prepared, pred: pa.Table) -> pa.Table:
    """Scored pairs with the ids as given (``<id>_l`` from the left input, ``<id>_r`` from the right)."""
    left, right = prep.sides[0], prep.sides[-1]
    return pa.table({f"{prep.id_column}_l": left.ids.take(pred.column("unique_id_l")),
                     f"{prep.id_column}_r": right.ids.take(pred.column("unique_id_r")),
                     "match_weight": pred.column("match_weight"),
                     "match_probability": pred.column("match_probability"), "rule": pred.column("rule")})


def _score(prep: Prepared, tf, opts: FrontOptions, work: Path, client, progress) -> tuple[list[str], dict]:
    """Scored pairs (internal ids) as Parquet files under ``work``, and what scoring did."""
    cfg = opts.config
    threads = opts.threads or os.cpu_count() or 1
    left = prep.sides[0].table
    right = prep.sides[1].table if not prep.dedupe else None
    if client is None and left.num_rows <= cfg.rows_per_scoring_task:
        pred = predict_all(prep.scoring, left, right, tf, threads=threads, threshold=opts.min_probability)
        f = work / "scored" / "part-00000.parquet"
        f.parent.mkdir(parents=True)
        pq.write_table(pred, f)
        per_rule = np.bincount(pred.column("rule").to_numpy(), minlength=len(prep.model.blocking))
        return [str(f)], {"tasks": 1, "pairs": pred.num_rows,
                          "pairs_per_rule": {b.name: int(n) for b, n in zip(prep.model.blocking, per_rule)}}
    from ._scoring import score_rules

    floor_cfg = LinkConfig(signature_buckets=cfg.signature_buckets, rows_per_scoring_task=cfg.rows_per_scoring_task,
                           duckdb_threads=cfg.duckdb_threads if client is not None else threads,
                           duckdb_memory_limit=cfg.duckdb_memory_limit, prediction_floor=opts.min_probability,
                           evidence_floor=None)
    rows = max(1, cfg.rows_per_scoring_task)
    left_files = _write_parts(left, work / "left", rows)
    right_files = _write_parts(right, work / "right", rows) if right is not None else None
    info = score_rules(work, prep.scoring, tf, floor_cfg, left_files=left_files, right_files=right_files,
                       out=work / "scored", schema=left.schema, client=client, progress=progress)
    info["pairs_per_rule"] = {m.name: info["pairs_per_rule"][s.name]
                              for m, s in zip(prep.model.blocking, prep.scoring.blocking)}
    info.pop("partition_groups", None)
    return sorted(str(p) for p in (work / "scored").glob("*.parquet")), info


def run(prep: Prepared, out: str | Path, *, options: FrontOptions | None = None, client=None,
        progress: Progress | None = None) -> dict[str, Any]:
    """Train (when untrained), score, decide; write ``model.json``, ``pairs/`` and ``clusters/``
    or ``links/`` under ``out`` (which must exist). ``client=None`` runs in this process."""
    from ._front_decide import best_match, clusters

    opts = options or FrontOptions()
    out = Path(out)
    model = prep.model
    info: dict[str, Any] = {"rows": [s.table.num_rows for s in prep.sides], "mode": "dedupe" if prep.dedupe else "link"}
    tf = term_frequencies(model, [s.table for s in prep.sides])
    if not model.trained:
        # in this process with every core, on a cluster too: the records are here already, and
        # one DuckDB with all threads trains faster than one single-threaded worker task
        tables = [s.train for s in prep.sides]
        with _splink_errors("training"):
            info["training"] = train_on(model, tables[0], tables[1] if len(tables) > 1 else None,
                                        threads=opts.threads or os.cpu_count() or 1, tf=tf)
        prep.scoring.splink = model.splink
    save_model(model, out / "model.json")
    info["charts"] = [Path(p).name for p in save_charts(model, out, "model")] if opts.charts else []
    work = out / ".work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        with _splink_errors("scoring"):
            files, info["scoring"] = _score(prep, tf, opts, work, client, progress)
        pred = pa.concat_tables([pq.read_table(f) for f in files]) if files else PREDICTION_SCHEMA.empty_table()
        pairs = _given_pairs(prep, pred)
        rows = max(1, opts.config.rows_per_scoring_task) * 5
        _write_parts(pairs, out / "pairs", rows)
        rule = opts.decision or model.decision.get("rule", "clusters")
        rule = "clusters" if rule == "evidence" else rule
        if rule == "best-match" and prep.dedupe:
            raise ModelError("--decision best-match links two inputs: a deduplication makes clusters")
        thr = opts.threshold if opts.threshold is not None else float(model.decision.get("threshold", 0.9))
        if rule == "best-match":
            margin = opts.margin if opts.margin is not None else float(model.decision.get("margin", 1.0))
            table, summary = best_match(prep, pred, threshold=thr, margin=margin)
            _write_parts(table, out / "links", rows)
            info["decision"] = {"rule": rule, "threshold": thr, "margin": margin, **summary}
        else:
            table, summary = clusters(prep, pred, threshold=thr)
            _write_parts(table, out / "clusters", rows)
            info["decision"] = {"rule": "clusters", "threshold": thr, **summary}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info["min_probability"] = opts.min_probability
    return info


def _masked(text: str) -> str:
    """``text`` cut at its first quote of either kind (a value may itself hold a quote:
    'O'NEIL'; DuckDB quotes a date it cannot convert in double quotes, a string in single ones,
    and may repeat the value unquoted after it), then every run of 4 or more digits (with the
    separators of a date or a NIR between them) masked too: a value may be unquoted."""
    text = re.sub(r"""['"].*""", "'...'", text)
    return re.sub(r"\d(?:[\d/. -]*\d){3,}", "#", text)


@contextlib.contextmanager
def _splink_errors(step: str):
    """Splink's errors in one line with the database's own message (Splink wraps it after the
    whole SQL it ran), as a ModelError; anything else unchanged. Quoted values are masked: a
    runtime error may quote a record's field (a name)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is Splink's
        if type(exc).__name__ != "SplinkException":
            raise
        text = str(exc)
        cause = text.split("Error was:", 1)[1] if "Error was:" in text else text
        lines = [ln.strip() for ln in cause.strip().splitlines() if ln.strip() and not ln.startswith("LINE ")]
        message = _masked(" ".join(lines))[:500]
        raise ModelError(f"{step}: Splink failed: {message} (values masked)") from None
