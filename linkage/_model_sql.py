"""The SQL inside a model: which columns it reads, blocking keys that are expressions, and
every piece compiled on empty DuckDB tables before any data is scored.

Levels are written on ``l.<col>`` / ``r.<col>`` (nirlink's form) or on ``"<col>_l"`` /
``"<col>_r"`` (the form Splink's comparison library and settings use); blocking keys are
column names or SQL expressions on one record's columns (``substr(surname, 1, 3)``). SQL is
parsed with sqlglot (Splink's own parser) in the DuckDB dialect.

``compile_errors`` binds every level condition, blocking rule, key expression and training
rule of a model against empty tables shaped like the inputs, so a misspelt column or an
unknown function is reported in one line naming the comparison and level with DuckDB's own
message, before any partition is written or any worker is asked to score.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pyarrow as pa

from ._model import ModelSpec, _suffix_form

__all__ = ["columns_of", "key_columns", "qualify", "split_blocking_rule", "compile_errors", "is_identifier",
           "model_columns", "em_rule_sql"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_identifier(text: str) -> bool:
    return bool(_IDENT.fullmatch(text))


@lru_cache(maxsize=4096)
def _parse(sql: str):
    import sqlglot

    return sqlglot.parse_one(sql, read="duckdb")


def columns_of(sql: str) -> set[str]:
    """Columns a level condition or a blocking rule reads: ``l.x`` / ``r.x``, ``"x_l"`` / ``"x_r"``."""
    from sqlglot import exp

    if sql.strip().upper() == "ELSE":
        return set()
    try:
        tree = _parse(sql)
    except Exception:  # noqa: BLE001 - unparsable SQL is reported by compile_errors, with DuckDB's message
        return set(re.findall(r"\b[lr]\.([A-Za-z_][A-Za-z0-9_]*)", sql))
    out = set()
    for col in tree.find_all(exp.Column):
        if col.table in ("l", "r"):
            out.add(col.name)
        elif not col.table and re.fullmatch(r".+_[lr]", col.name):
            out.add(col.name[:-2])
    return out


def key_columns(expr: str) -> set[str]:
    """Columns a blocking-key expression (on one record's columns) reads."""
    from sqlglot import exp

    if is_identifier(expr):
        return {expr}
    try:
        return {c.name for c in _parse(expr).find_all(exp.Column)}
    except Exception:  # noqa: BLE001
        return set()


def qualify(expr: str, side: str) -> str:
    """``expr`` with every column read from table ``side`` (``l`` or ``r``)."""
    if is_identifier(expr):
        return f"{side}.{expr}"
    from sqlglot import exp

    tree = _parse(expr).copy()
    for col in tree.find_all(exp.Column):
        col.set("table", exp.to_identifier(side))
    return tree.sql(dialect="duckdb")


def split_blocking_rule(sql: str) -> tuple[list[str], list[str], str]:
    """(left keys, right keys, residual condition) of a blocking rule: its top-level equalities
    between an expression on ``l`` and one on ``r`` are keys; the other conjuncts are kept as a
    condition on the pairs the keys bring together."""
    from sqlglot import exp

    tree = _parse(sql)
    conjuncts, stack = [], [tree]
    while stack:
        node = stack.pop()
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.And):
            stack.extend([node.right, node.left])
        else:
            conjuncts.append(node)
    left, right, rest = [], [], []

    def side(node) -> str | None:
        tables = {c.table for c in node.find_all(exp.Column)}
        return tables.pop() if len(tables) == 1 and tables <= {"l", "r"} else None

    def bare(node) -> str:
        node = node.copy()
        for c in node.find_all(exp.Column):
            c.set("table", None)
        return node.sql(dialect="duckdb")

    for c in conjuncts:
        if isinstance(c, exp.EQ) and {side(c.left), side(c.right)} == {"l", "r"}:
            a, b = (c.left, c.right) if side(c.left) == "l" else (c.right, c.left)
            left.append(bare(a))
            right.append(bare(b))
        else:
            rest.append(c.sql(dialect="duckdb"))
    return left, right, " AND ".join(f"({r})" for r in rest)


def em_rule_sql(entry) -> str:
    """A training EM blocking entry (a list of columns / expressions, or SQL on l. and r.) as SQL."""
    if isinstance(entry, str):
        return entry
    return " AND ".join(f"{qualify(k, 'l')} = {qualify(k, 'r')}" for k in entry)


def model_columns(model: ModelSpec) -> dict[str, str]:
    """Every column the model reads, mapped to where (for messages), in a stable order."""
    out: dict[str, str] = {}
    for c in model.comparisons:
        for lv in c.levels:
            for col in sorted(columns_of(lv.sql)):
                out.setdefault(col, f"comparison {c.name!r}")
            if lv.tf_column:
                out.setdefault(lv.tf_column, f"comparison {c.name!r} (term frequencies)")
    for b in model.blocking:
        for k in (*b.left_keys, *b.right_keys):
            for col in sorted(key_columns(k)):
                out.setdefault(col, f"blocking rule {b.name!r}")
        for col in sorted(columns_of(b.condition) if b.condition else ()):
            out.setdefault(col, f"blocking rule {b.name!r}")
    t = model.training
    for i, rule in enumerate(t.get("deterministic_rules", [])):
        for col in sorted(columns_of(rule)):
            out.setdefault(col, f"training.deterministic_rules[{i}]")
    for i, entry in enumerate(t.get("em_blocking", [])):
        for col in sorted(columns_of(em_rule_sql(entry))):
            out.setdefault(col, f"training.em_blocking[{i}]")
    for col in model.columns:
        out.setdefault(col, "columns")
    return out


def _duckdb_message(exc: Exception) -> str:
    """DuckDB's message on one line, without the 'LINE 1: ...' excerpt of the statement."""
    lines = []
    for line in str(exc).splitlines():
        if line.startswith("LINE ") or not line.strip() or set(line.strip()) <= {"^"}:
            continue
        lines.append(line.strip())
    return " ".join(lines)


def _pairs_schema(left: pa.Schema, right: pa.Schema) -> pa.Schema:
    fields = [pa.field(f"{f.name}_l", f.type) for f in left] + [pa.field(f"{f.name}_r", f.type) for f in right]
    return pa.schema(fields)


def compile_errors(model: ModelSpec, left: pa.Schema, right: pa.Schema | None = None) -> list[tuple[str, str]]:
    """Bind every SQL piece of ``model`` on empty tables of these schemas: ``(where, DuckDB's message)``."""
    import duckdb

    right = right if right is not None else left
    errors: list[tuple[str, str]] = []
    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")
        con.register("__l", left.empty_table())
        con.register("__r", right.empty_table())
        con.register("__pairs", _pairs_schema(left, right).empty_table())

        def check(where: str, sql: str) -> None:
            try:
                con.execute(sql).fetchall()
            except duckdb.Error as exc:
                errors.append((where, _duckdb_message(exc)))

        for c in model.comparisons:
            for lv in c.levels:
                if lv.sql.strip().upper() != "ELSE":
                    check(f"comparison {c.name!r}, level {lv.label!r}",
                          f"SELECT CASE WHEN {_suffix_form(lv.sql)} THEN 1 END FROM __pairs LIMIT 0")
        for b in model.blocking:
            for side, table, keys in (("left", "__l", b.left_keys), ("right", "__r", b.right_keys)):
                for k in keys:
                    if not is_identifier(k):
                        check(f"blocking rule {b.name!r}, {side} key {k!r}", f"SELECT {k} FROM {table} LIMIT 0")
            check(f"blocking rule {b.name!r}", f"SELECT 1 FROM __l AS l JOIN __r AS r ON {b.sql} LIMIT 0")
        t = model.training
        for i, rule in enumerate(t.get("deterministic_rules", [])):
            check(f"training.deterministic_rules[{i}]", f"SELECT 1 FROM __l AS l JOIN __r AS r ON {rule} LIMIT 0")
        for i, entry in enumerate(t.get("em_blocking", [])):
            check(f"training.em_blocking[{i}]",
                  f"SELECT 1 FROM __l AS l JOIN __r AS r ON {em_rule_sql(entry)} LIMIT 0")
    finally:
        con.close()
    return errors
