"""Splink on DuckDB, one connection per call: sessions, term frequencies, training, scoring.

Every Dask task that runs Splink opens its own DuckDB connection with its threads and
memory limit set and the progress bar off, registers its partition of each side and the
term-frequency tables computed once on the whole register, and closes it afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dask.config
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nirlink.kernels import ModelError

from ._model import ModelSpec

__all__ = ["duckdb_connection", "tf_tables", "make_linker", "train", "fix_levels", "fill_null_u", "predict_rules",
           "predict_all", "rule_sql", "PREDICTION_SCHEMA",
           "start_training", "finish_training", "em_rule"]

PREDICTION_SCHEMA = pa.schema([
    pa.field("unique_id_l", pa.int64(), nullable=False),
    pa.field("unique_id_r", pa.int64(), nullable=False),
    pa.field("match_weight", pa.float64(), nullable=False),
    pa.field("match_probability", pa.float64(), nullable=False),
    pa.field("rule", pa.int16(), nullable=False),
])


@contextlib.contextmanager
def duckdb_connection(*, threads: int = 1, memory_limit: str | None = None,
                      temp_directory: str | None = None) -> Iterator[Any]:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {int(threads)}")
        con.execute("SET enable_progress_bar = false")
        if memory_limit:
            con.execute(f"SET memory_limit = '{memory_limit}'")
        if temp_directory:
            con.execute(f"SET temp_directory = '{temp_directory}'")
        yield con
    finally:
        con.close()


def tf_tables(model: ModelSpec, reference: pa.Table) -> dict[str, pa.Table]:
    """Term frequencies of the model's TF columns, computed on the whole ``reference`` side
    (the register): the same table is handed to every task, so weights do not depend on
    how the data is partitioned."""
    out = {}
    for col in model.tf_columns():
        values = pc.drop_null(reference.column(col))
        if len(values) == 0:
            out[col] = pa.table({col: pa.array([], pa.string()), f"tf_{col}": pa.array([], pa.float64())})
            continue
        counts = pc.value_counts(values)
        v = counts.field("values")
        c = counts.field("counts").to_numpy().astype(np.float64)
        order = pc.array_sort_indices(v)
        out[col] = pa.table({col: v.take(order), f"tf_{col}": pa.array(c / c.sum()).take(order)})
    return out


def _recording_api(con):
    """A Splink DuckDBAPI that records what it registers and every SQL statement it runs."""
    from splink import DuckDBAPI

    class RecordingDuckDBAPI(DuckDBAPI):
        def __init__(self, connection):
            super().__init__(connection=connection)
            self.statements: list[str] | None = None
            self.registered: dict[str, Any] = {}

        def _table_registration(self, input, table_name):  # noqa: A002 (Splink's signature)
            self.registered[table_name] = input
            return super()._table_registration(input, table_name)

        def _execute_sql_against_backend(self, final_sql):
            if self.statements is not None:
                self.statements.append(final_sql)
            return super()._execute_sql_against_backend(final_sql)

    return RecordingDuckDBAPI(con)


def make_linker(con, settings: dict[str, Any], tables: list[pa.Table], tf: dict[str, pa.Table], *,
                names: tuple[str, str] = ("records", "register")):
    """A Splink Linker on ``con`` over the given tables (left, right) with registered TF tables.
    ``names`` are the tables' dataset names (Splink's source_dataset: u sampling hashes them
    with the record ids)."""
    from splink import Linker

    db_api = _recording_api(con)
    frames = [db_api.register(t, dataset_display_name=name) for t, name in zip(tables, names)]
    linker = Linker(frames if len(frames) > 1 else frames[0], settings, log_level=logging.WARNING,
                    validate_settings=False)
    for col, table in tf.items():
        linker.table_management.register_term_frequency_lookup(
            db_api.register(table, dataset_display_name=f"tf_lookup_{col}"), col)
    return linker, frames


def train(model: ModelSpec, left: pa.Table, right: pa.Table | None, tf: dict[str, pa.Table], *,
          threads: int = 1, memory_limit: str | None = None,
          fixed_u: dict[str, dict[str, float]] | None = None, u: dict[str, list[float | None]] | None = None,
          names: tuple[str, str] = ("records", "register"), prior_scale: float | None = None) -> dict:
    """Train the model on a sample and return its Splink settings (plain Splink loads them).

    u by random sampling, the probability that two random records match from deterministic
    rules (multiplied by ``prior_scale`` when given), m by expectation
    maximisation over the recipe's blocking rules. Levels of the recipe's ``m_fixed`` and of
    ``fixed_u`` (u counted outside Splink, see _exact_u) keep those values throughout.
    An EM blocking entry is a list of columns or expressions (Splink's block_on) or SQL.
    ``u``: the u of each comparison as ``estimate_u`` returns them, estimated elsewhere (by
    parallel tasks); by default they are estimated here.
    ``prior_scale``: see finish_training.
    """
    from ._u import estimate_us, set_u, u_comparisons

    t = model.training
    tables = [left] if right is None else [left, right]
    if u is None:
        base = fix_levels(model.splink_settings(), t.get("m_fixed", {}), fixed_u or {})
        wanted = u_comparisons(base)
        u = estimate_us(model, left, right, tf, wanted, threads=threads, memory_limit=memory_limit,
                        names=names) if wanted else {}
    with start_training(model, tables, tf, threads=threads, memory_limit=memory_limit, fixed_u=fixed_u, u=u,
                        names=names) as linker:
        for cols in t.get("em_blocking", []):
            linker.training.estimate_parameters_using_expectation_maximisation(em_rule(cols),
                                                                               record_sample_proportion=1.0)
        settings = linker.misc.save_model_to_json()
    return finish_training(model, settings, prior_scale)


def start_training(model: ModelSpec, tables: list[pa.Table], tf: dict[str, pa.Table], *, threads: int,
                   memory_limit: str | None, fixed_u: dict[str, dict[str, float]] | None,
                   u: dict[str, list[float | None]], names: tuple[str, str]):
    """A DuckDB connection and a Linker on ``tables`` whose settings hold the fixed levels, the
    given u and the prior from the recipe's deterministic rules: where EM starts (a context)."""
    from ._u import set_u

    t = model.training
    base = set_u(fix_levels(model.splink_settings(), t.get("m_fixed", {}), fixed_u or {}), u)

    @contextlib.contextmanager
    def ctx():
        with duckdb_connection(threads=threads, memory_limit=memory_limit) as con:
            linker, _ = make_linker(con, base, tables, tf, names=names)
            rules = t.get("deterministic_rules", [])
            if rules:
                linker.training.estimate_probability_two_random_records_match(
                    rules, recall=t.get("deterministic_recall", 0.8))
            yield linker
    return ctx()


def finish_training(model: ModelSpec, settings: dict, prior_scale: float | None = None) -> dict:
    """Trained Splink settings made a nirlink model's: m floors, u of unobserved levels, no
    random Linker name, and the prior multiplied by ``prior_scale`` when given: a sample that
    keeps every match of its records (the job's birth-year sample, linkage/_training.py) finds
    the prior of its own pairs, higher than the data's by the share of the records it holds."""
    t = model.training
    settings.pop("linker_uid", None)  # a random name of the Linker object: the model would differ run to run
    apply_m_floors(settings, t.get("m_floor", 0.0), t.get("m_floors", {}))
    fill_null_u(settings, float(t.get("u_max_pairs", 1e6)))
    if prior_scale is not None:
        settings["probability_two_random_records_match"] *= prior_scale
    return settings


def em_rule(cols):
    """An EM blocking entry as Splink takes it: SQL, or a list of columns / expressions (block_on)."""
    from splink import block_on

    return cols if isinstance(cols, str) else block_on(*cols)


def fix_levels(settings: dict, m_fixed: dict[str, dict[str, float]], u_fixed: dict[str, dict[str, float]]) -> dict:
    """Set and freeze (Splink's fix_m_probability / fix_u_probability) the m and u of the
    levels named in ``m_fixed[comparison][label]`` and ``u_fixed[comparison][label]``."""
    for comp in settings.get("comparisons", []):
        name = comp.get("output_column_name")
        for lv in comp["comparison_levels"]:
            if lv.get("is_null_level"):
                continue
            label = lv.get("label_for_charts")
            if label in m_fixed.get(name, {}):
                lv["m_probability"] = float(m_fixed[name][label])
                lv["fix_m_probability"] = True
            if label in u_fixed.get(name, {}):
                lv["u_probability"] = float(u_fixed[name][label])
                lv["fix_u_probability"] = True
    return settings


def fill_null_u(settings: dict, pairs: float) -> None:
    """A level no sampled random pair fell into gets u = 1 / (2 * pairs) (half a pair) instead
    of null: Splink would otherwise give it a default u and a meaningless weight (the NIR's
    'one edit' level weighed -4 bits with u null)."""
    for comp in settings.get("comparisons", []):
        for lv in comp["comparison_levels"]:
            if not lv.get("is_null_level") and lv.get("u_probability") is None:
                lv["u_probability"] = 0.5 / max(pairs, 1.0)


def apply_m_floors(settings: dict, default: float, per_level: dict[str, dict[str, float]]) -> None:
    """Raise trained m probabilities to floors, then renormalise each comparison.

    EM on a sample sees rare error modes (another person's NIR declared) too seldom and
    drives their m towards 0, which turns one wrong field into a veto. Floors come from the
    model's training recipe: ``m_floor`` for every level, ``m_floors[comparison][label]``
    for known operational error rates.
    """
    for comp in settings.get("comparisons", []):
        name = comp.get("output_column_name")
        levels = [lv for lv in comp["comparison_levels"] if not lv.get("is_null_level")]
        if not any(lv.get("m_probability") is not None for lv in levels):
            continue  # an untrained comparison
        # a level EM never saw among matches (m missing) is no impossible event either: it gets
        # the floor, like a level EM drove to 0 (Splink would otherwise weigh it as it pleases)
        specific = per_level.get(name, {})
        if any(lv.get("fix_m_probability") for lv in levels):
            continue  # m fixed by the recipe: neither floored nor renormalised
        for lv in levels:
            floor = max(default, specific.get(lv.get("label_for_charts"), 0.0))
            if lv.get("m_probability") is not None or floor > 0:
                lv["m_probability"] = max(lv.get("m_probability") or 0.0, floor)
        trained = [lv for lv in levels if lv.get("m_probability") is not None]
        total = sum(lv["m_probability"] for lv in trained)
        for lv in trained:
            lv["m_probability"] /= total


def rule_sql(model: ModelSpec, index: int) -> str:
    """Rule ``index`` excluding the pairs earlier rules produce (as Splink does when it runs
    all rules at once), so the union over rules holds every pair exactly once."""
    rule = model.blocking[index]
    sql = f"({rule.sql})"
    for earlier in model.blocking[:index]:
        sql += f" AND NOT COALESCE(({earlier.sql}), FALSE)"
    return sql


def _predictions(df) -> pa.Table:
    """Splink's predictions (a SplinkDataFrame or an Arrow table) in PREDICTION_SCHEMA, in pair
    order (left id, right id): Splink's SQL and its replay (``_integer_join_keys``) return the
    same pairs in different orders, and the files written from them must not differ from run to
    run. ``rule`` is Splink's match_key, the position of the first admitting rule in the call."""
    t = df.as_pyarrow_table() if hasattr(df, "as_pyarrow_table") else df
    keep = {
        "unique_id_l": pc.cast(t.column("unique_id_l"), pa.int64()),
        "unique_id_r": pc.cast(t.column("unique_id_r"), pa.int64()),
        "match_weight": pc.cast(t.column("match_weight"), pa.float64()),
        "match_probability": pc.cast(t.column("match_probability"), pa.float64()),
    }
    out = pa.table({**keep, "rule": pc.cast(t.column("match_key"), pa.int16())}, schema=PREDICTION_SCHEMA)
    return out.sort_by([("unique_id_l", "ascending"), ("unique_id_r", "ascending")])


@dataclass(frozen=True)
class _Plan:
    """What one Splink prediction ran: the tables it registered (by role: left, right, tf:<column>),
    the statements that built its tables, in order, and the table holding the predictions."""

    inputs: tuple[tuple[str, str], ...]
    statements: tuple[str, ...]
    output: str


_PLANS: dict[str, _Plan] = {}
_PLANS_LOCK = threading.Lock()
_MAX_PLANS = 64


def _plan_key(settings: dict, rules: list[str], left: pa.Table, right: pa.Table | None, tf: dict[str, pa.Table],
              threshold: float | None) -> str:
    parts = [json.dumps(settings, sort_keys=True, default=str), json.dumps(rules), repr(threshold),
             left.schema.to_string(show_schema_metadata=False),
             right.schema.to_string(show_schema_metadata=False) if right is not None else "dedupe",
             json.dumps({c: t.schema.to_string(show_schema_metadata=False) for c, t in sorted(tf.items())})]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _record_plan(db_api, statements: list[str], output: str, left, right, tf) -> _Plan | None:
    roles = []
    for name, obj in db_api.registered.items():
        role = "left" if obj is left else "right" if right is not None and obj is right else \
            next((f"tf:{c}" for c, t in tf.items() if t is obj), None)
        if role is None:
            return None  # a table we cannot name again: no plan, Splink runs every time
        roles.append((name, role))
    built = tuple(s for s in statements if s.lstrip()[:6].upper() in ("CREATE", "DROP T", "DROP V"))
    if all("source_dataset" not in t.column_names for t in (left, right) if t is not None):
        built = _integer_join_keys(built)
    return _Plan(tuple(roles), built, output)


# Splink joins its blocked pairs back to their records on text keys, ``source_dataset || '-__-'
# || unique_id``: unique across the several datasets a link_and_dedupe job may put on one side.
# Here each side is one table without a ``source_dataset`` column of its own (a record's may
# name one of several datasets in the table: then its plan keeps the text keys), so Splink gives
# each side one ``source_dataset`` value, and the key and the integer
# ``unique_id`` name the same rows and the integer joins alike, without a string built per
# record and per pair (a quarter of a scoring call's CPU at 3M persons: benchmarks/README.md,
# "Scoring"). Only the replayed SQL is rewritten, and only when every text key of the plan is
# one of the forms below (another Splink may write them otherwise: then the plan is replayed as
# Splink wrote it); tests compare replays with fresh Splink calls, for a link and a dedupe.
_TEXT_JOIN_KEY = re.compile(r"""\b([lr])\."source_dataset" \|\| '-__-' \|\| \1\."unique_id"(?=\s+(?:as join_key_\1|= b\.join_key_\1)\b)""")


def _integer_join_keys(statements: tuple[str, ...]) -> tuple[str, ...]:
    rewritten = tuple(_TEXT_JOIN_KEY.sub(r'\1."unique_id"', s) for s in statements)
    return statements if any("'-__-'" in s for s in rewritten) else rewritten


def _replay(plan: _Plan, left, right, tf, *, threads: int, memory_limit: str | None) -> pa.Table:
    tables = {"left": left, "right": right, **{f"tf:{c}": t for c, t in tf.items()}}
    with duckdb_connection(threads=threads, memory_limit=memory_limit) as con:
        for name, role in plan.inputs:
            con.register(name, tables[role])
        for sql in plan.statements:
            con.execute(sql)
        return _predictions(con.sql(f"select * from {plan.output}").to_arrow_table())


def _predict(model: ModelSpec, rules: list[str], left: pa.Table, right: pa.Table | None, tf: dict[str, pa.Table], *,
             threads: int, memory_limit: str | None, threshold: float | None) -> pa.Table:
    """Splink's prediction for ``rules``. Splink spends ~0.2-0.3 s per call building its
    settings and generating SQL, whatever the data; the SQL depends only on the model, the
    rules, the threshold and the column schemas. So the first call for such a key runs
    Splink and records the SQL it executes, and later calls in the process (the other
    partitions of a distributed scoring) run that same SQL on their own tables
    (``nirlink.linkage.reuse-splink-sql``; tests check the result equals Splink's)."""
    if not model.trained:
        raise ModelError(f"model {model.name!r} is not trained")
    if left.num_rows == 0 or (right is not None and right.num_rows == 0):
        return PREDICTION_SCHEMA.empty_table()
    if len(rules) == 1:
        # Splink 5 takes a slow path when given exactly one blocking rule: 57 s against 0.22 s
        # for the same 17k pairs of 20k x 30k records (measured; benchmarks/README.md). The
        # rule given twice is the fast path, and its second copy admits nothing new: every pair
        # it admits, the first copy produced, and Splink excludes earlier rules' pairs.
        rules = [rules[0], rules[0]]
    settings = model.settings()
    reuse = bool(dask.config.get("nirlink.linkage.reuse-splink-sql", True))
    key = _plan_key(settings, rules, left, right, tf, threshold) if reuse else None
    plan = _PLANS.get(key) if reuse else None
    if plan is not None:
        return _replay(plan, left, right, tf, threads=threads, memory_limit=memory_limit)
    with duckdb_connection(threads=threads, memory_limit=memory_limit) as con:
        tables = [left] if right is None else [left, right]
        linker, frames = make_linker(con, settings, tables, tf)
        db_api = linker._db_api
        db_api.statements = []
        if right is None:
            df = linker.inference.predict_within(frames[0], blocking_rules_to_generate_predictions=rules,
                                                 threshold_match_probability=threshold, warning_mode="never")
        else:
            df = linker.inference.predict_between(frames[0], frames[1], blocking_rules_to_generate_predictions=rules,
                                                  threshold_match_probability=threshold, warning_mode="never")
        result = _predictions(df)
        if reuse:
            plan = _record_plan(db_api, db_api.statements, df.physical_name, left, right, tf)
            if plan is not None:
                with _PLANS_LOCK:
                    if len(_PLANS) >= _MAX_PLANS:
                        _PLANS.clear()
                    _PLANS[key] = plan
        return result


def predict_rules(model: ModelSpec, rules: list[int], left: pa.Table, right: pa.Table | None,
                  tf: dict[str, pa.Table], *, threads: int = 1, memory_limit: str | None = None,
                  threshold: float | None = None) -> pa.Table:
    """Score the pairs that the blocking rules ``rules`` (and no earlier rule of the model)
    admit, in one Splink call; the ``rule`` column holds each pair's rule index in the model."""
    pred = _predict(model, [rule_sql(model, i) for i in rules], left, right, tf, threads=threads,
                    memory_limit=memory_limit, threshold=threshold)
    if pred.num_rows:
        # Splink's match_key is the rule's position in this call (a single rule given twice
        # only ever matches as its first copy)
        local = np.minimum(pred.column("rule").to_numpy(), len(rules) - 1)
        pred = pred.set_column(pred.column_names.index("rule"), "rule", pa.array(np.array(rules, np.int16)[local]))
    return pred


def predict_all(model: ModelSpec, left: pa.Table, right: pa.Table | None, tf: dict[str, pa.Table], *,
                threads: int = 1, memory_limit: str | None = None, threshold: float | None = None) -> pa.Table:
    """Splink in one process, every blocking rule at once (the reference for distributed scoring)."""
    return _predict(model, [b.sql for b in model.blocking], left, right, tf, threads=threads,
                    memory_limit=memory_limit, threshold=threshold)
