"""u of the declared-NIR levels counted exactly on the register instead of sampled.

Random-pair sampling almost never meets two NIR bodies one edit apart (at 200k persons, u of
"one edit or transposition" is about 8e-8: 3M sampled pairs see none, and Splink then uses a
default u that made the level weigh -4 bits instead of +16). Counting the pairs of a register
sample against the whole register, joined on the segments of the body, gives the same value
on every run (seed to seed within 0.1 bit at 200k persons).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._model import ModelSpec

__all__ = ["exact_u", "exact_u_counts", "exact_u_from_counts"]

# the body's three segments (sex-year-month, place, order): two bodies within two substitutions
# or one transposition of each other agree on at least one of them
_BODY_SEGMENTS = ((1, 5), (6, 5), (11, 3))
# the characters two bodies of the 'same sex, year, month, department' level share
_PREFIX = 7


# the register rows a sample is counted against at most: a uniform draw of them beyond. The
# pairs counted grow with sample x register rows: 2.6 s for 5,000 rows against 200,000 at
# 200k persons, which at 7.8M persons would have been about 100 s in one task. The rarest
# level counted (one edit or transposition) had 83 pairs at 5,000 x 200,000: enough.
EXACT_U_REGISTER_ROWS = 250_000


def exact_u(model: ModelSpec, comparison: str, reg_files: list[str], *, sample: int, seed: int,
            threads: int = 1, memory_limit: str | None = None,
            register_rows: int = EXACT_U_REGISTER_ROWS) -> dict[str, Any]:
    """u of every level of a comparison on ``nir_body``, counted exactly instead of sampled:
    ``sample`` register rows against the whole register (all pairs of distinct rows), each
    pair put in its first level. Only pairs agreeing on one of the body's three segments are
    enumerated; the levels above ELSE (equal, one edit or transposition, two edits, same first
    7 characters) all imply such an agreement (a level needing two shifted edits could escape:
    such pairs are counted as ELSE). Two register rows never share a body, so the 'body exact'
    level's u among non-matches comes from another person's NIR being declared: m(ELSE) / N.
    A level with no pair gets half a pair. The sample is counted against at most
    ``register_rows`` register rows (a uniform draw of them in a larger register): the pairs are
    then sample x drawn rows, less the sample's rows drawn too. In one process;
    ``exact_u_counts`` on parts of the sample (parallel tasks) and ``exact_u_from_counts`` give
    the same result."""
    counts = exact_u_counts(model, comparison, reg_files, sample=sample, seed=seed, threads=threads,
                            memory_limit=memory_limit, register_rows=register_rows)
    return exact_u_from_counts(model, comparison, [counts])


def exact_u_counts(model: ModelSpec, comparison: str, reg_files: list[str], *, sample: int, seed: int,
                   part: tuple[int, int] = (0, 1), threads: int = 1, memory_limit: str | None = None,
                   register_rows: int = EXACT_U_REGISTER_ROWS) -> dict[str, Any]:
    """The pairs of part ``part[0]`` of ``part[1]`` of the register sample (split on a hash of
    the row id) in each level of the comparison, and the pairs compared: integer counts, which
    add up exactly over the parts whatever their number or the order they finish in."""
    from ._splink import duckdb_connection

    levels = _levels(model, comparison)
    cases = " ".join(f"when {lv.sql.replace('l.', 'a.').replace('r.', 'b.')} then {i}"
                     for i, lv in enumerate(levels) if lv.sql.strip().upper() != "ELSE")
    index, parts = int(part[0]), int(part[1])
    with duckdb_connection(threads=threads, memory_limit=memory_limit) as con:
        con.execute(f"create table r as select unique_id, nir_body from read_parquet({reg_files!r}) "
                    "where nir_body is not null")
        n = con.execute("select count(*) from r").fetchall()[0][0]
        con.execute(f"create table s as select * from (select * from r order by hash(unique_id + {int(seed)}) "
                    f"limit {int(sample)}) where hash(unique_id) % {parts} = {index}")
        k = con.execute("select count(*) from s").fetchall()[0][0]
        if n > register_rows:  # the rows counted against: a uniform draw (another seed than the sample's)
            con.execute(f"create table d as select * from r order by hash(unique_id + {int(seed) + 1}) "
                        f"limit {int(register_rows)}")
        else:
            con.execute("create view d as select * from r")
        drawn = con.execute("select count(*) from d").fetchall()[0][0]
        both = con.execute("select count(*) from s join d using (unique_id)").fetchall()[0][0]
        sampled, drawn_rows = con.sql("select unique_id, nir_body from s").to_arrow_table(), \
            con.sql("select unique_id, nir_body from d").to_arrow_table()
        a, b = _strings(sampled), _strings(drawn_rows)
        if a is None or b is None:  # a body not ASCII: DuckDB compares characters
            counts = _counted_in_sql(con, cases)
        else:
            from nirlink.kernels._edits import near_pairs

            ia, ib = near_pairs(a, b, _BODY_SEGMENTS, _PREFIX)
            con.register("pa", sampled.select(["nir_body"]).take(ia))
            con.register("pb", drawn_rows.select(["nir_body"]).take(ib))
            counts = dict(con.execute(f"select level, count(*) from (select case {cases} else -1 end as level "
                                      "from pa a positional join pb b) where level >= 0 group by level").fetchall())
    return {"counts": {int(i): int(c) for i, c in counts.items()}, "register_rows": int(n), "sample_rows": int(k),
            "pairs": int(k) * int(drawn) - int(both)}


def _strings(table) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(ids, bytes, offsets) of a (unique_id, nir_body) table for kernels/_edits.py, None when
    a body holds a non-ASCII byte."""
    from nirlink.kernels._arrow import string_buffers

    ids = np.asarray(table.column("unique_id").to_numpy(), dtype=np.int64)
    offsets, data, _ = string_buffers(table.column("nir_body"))
    if len(ids) and (data[offsets[0]:offsets[-1]] >= 0x80).any():
        return None
    return ids, data, offsets


def _counted_in_sql(con, cases: str) -> dict[int, int]:
    """The level counts of the pairs of ``s`` and ``d`` in DuckDB alone (the edit distance of
    every pair agreeing on a segment: ~4x the time of near_pairs at 200,000 persons)."""
    seg = [f"substr(a.nir_body, {p}, {w}) = substr(b.nir_body, {p}, {w})" for p, w in _BODY_SEGMENTS]
    # each pair once: joined on the first segment it agrees on
    joins = " union all ".join(
        f"select case {cases} else -1 end as level from s a join d b on {seg[i]} and a.unique_id <> b.unique_id"
        + "".join(f" and not {seg[j]}" for j in range(i))
        # every level above ELSE is within two edits or shares the first 7 characters
        + f" where substr(a.nir_body, 1, {_PREFIX}) = substr(b.nir_body, 1, {_PREFIX}) "
          "or levenshtein(a.nir_body, b.nir_body) <= 2"
        for i in range(len(seg)))
    return dict(con.execute(f"select level, count(*) from ({joins}) where level >= 0 group by level").fetchall())


def exact_u_from_counts(model: ModelSpec, comparison: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The u of the comparison's levels from the counts of all the sample's parts."""
    levels = _levels(model, comparison)
    n = parts[0]["register_rows"]
    k = sum(p["sample_rows"] for p in parts)
    counts: dict[int, int] = {}
    for p in parts:
        for i, c in p["counts"].items():
            counts[int(i)] = counts.get(int(i), 0) + int(c)
    pairs = float(max(sum(p["pairs"] for p in parts), 1))
    u: dict[str, float] = {}
    else_label = None
    for i, lv in enumerate(levels):
        if lv.sql.strip().upper() == "ELSE":
            else_label = lv.label
            continue
        u[lv.label] = max(counts.get(i, 0), 0.5) / pairs
    m_else = model.training.get("m_fixed", {}).get(comparison, {}).get(else_label, 0.003)
    exact = levels[0].label
    u[exact] = max(counts.get(0, 0) / pairs, m_else / max(n, 1))
    if else_label is not None:
        u[else_label] = 1.0 - sum(u.values())
    return {"u": u, "pairs": pairs, "pairs_counted": {levels[i].label: int(c) for i, c in sorted(counts.items())},
            "register_rows": n, "sample_rows": k}


def _levels(model: ModelSpec, comparison: str):
    comp = next(c for c in model.comparisons if c.name == comparison)
    return [lv for lv in comp.levels if not lv.null]
