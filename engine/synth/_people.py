"""Generic person records with known truth, for `nirlink link` examples, tests and benchmarks.

Each record has a string id, first name, surname, date of birth (YYYY-MM-DD), postcode (five
digits, leading zeros kept), city and email, and the id of the person it describes
(``person_id``, the truth). Names come from the same INSEE-derived vocabularies as the job's
synthetic data (_names.py), with the same Zipf law on the rank. Every copy of a person is
noisy: a typo (substitution, deletion, insertion or transposition) in a name, day and month
swapped or the year off by one, a person who moved (another postcode and city), missing
fields (empty in the file). Rates scale with ``noise``.

- link: two datasets; the right one holds a copy of ``overlap`` of the left persons and new
  persons; each dataset holds a person once.
- dedupe: one dataset; ``duplicates`` of the persons appear two to four times.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa

from ._names import DECADES, first_names, surnames

__all__ = ["people", "true_pairs"]

_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))
_SYLLABLES = ("ber", "mont", "ville", "lac", "roche", "saint", "val", "bourg", "clos", "pre", "fon", "mar", "sur",
              "bel", "char", "ger", "lan", "dor", "ai", "ne")


def _typo(rng: np.random.Generator, s: str) -> str:
    if len(s) < 2:
        return s
    i = int(rng.integers(0, len(s) - 1))
    kind = int(rng.integers(0, 4))
    c = str(rng.choice(_LETTERS))
    if kind == 0:
        return s[:i] + c + s[i + 1:]
    if kind == 1:
        return s[:i] + s[i + 1:]
    if kind == 2:
        return s[:i] + c + s[i:]
    return s[:i] + s[i + 1] + s[i] + s[i + 2:]


def _persons(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    sur = surnames()
    surname = sur.names[sur.draw(rng, n)]
    year = rng.integers(1940, 2006, n)
    month = rng.integers(1, 13, n)
    day = rng.integers(1, 29, n)
    sex = rng.integers(1, 3, n)
    first = np.empty(n, object)
    decade = np.clip(np.searchsorted(np.array(DECADES), year, side="right") - 1, 0, len(DECADES) - 1)
    for s in (1, 2):
        for d in np.unique(decade):
            idx = np.flatnonzero((sex == s) & (decade == d))
            if len(idx):
                voc = first_names(s, DECADES[d])
                first[idx] = voc.names[voc.draw(rng, len(idx))]
    # 5,000 postcodes, p(rank r) ~ 1 / (r + 50): the largest town holds ~0.4% of the people,
    # so a block on postcode grows with the data as a town's does
    weights = 1.0 / (np.arange(5000) + 50.0)
    ranks = np.searchsorted(np.cumsum(weights) / weights.sum(), rng.random(n), side="right")
    codes = (np.minimum(ranks, 4999) * 7919 + 1000) % 98000 + 1000  # 01000-98999, some with a leading zero
    return {"first_name": np.array([f.title() for f in first], object),
            "surname": np.array([s.title() for s in surname], object),
            "year": year, "month": month, "day": day, "postcode": codes, "email_n": rng.integers(1, 100, n)}


def _city(code: int) -> str:
    a, b = _SYLLABLES[code % len(_SYLLABLES)], _SYLLABLES[(code // len(_SYLLABLES)) % len(_SYLLABLES)]
    return f"{a.title()}{b}-{code // 1000:02d}"


def _records(rng: np.random.Generator, p: dict[str, np.ndarray], which: np.ndarray, noise: float,
             noisy: np.ndarray) -> dict[str, list]:
    """One record per entry of ``which`` (person indices); ``noisy`` marks copies that get noise."""
    out: dict[str, list] = {k: [] for k in ("first_name", "surname", "dob", "postcode", "city", "email")}
    r = rng.random((len(which), 10))
    for k, (i, nz) in enumerate(zip(which.tolist(), noisy.tolist())):
        rate = noise if nz else noise * 0.2
        first, sur = p["first_name"][i], p["surname"][i]
        y, m, d = int(p["year"][i]), int(p["month"][i]), int(p["day"][i])
        code = int(p["postcode"][i])
        email = f"{first.lower()}.{sur.lower()}{int(p['email_n'][i])}@example.org".replace(" ", "")
        if r[k, 0] < 0.12 * rate:
            sur = _typo(rng, sur)
        if r[k, 1] < 0.12 * rate:
            first = _typo(rng, first)
        if r[k, 2] < 0.03 * rate and d <= 12:
            m, d = d, m
        elif r[k, 2] < 0.06 * rate:
            y += 1 if r[k, 3] < 0.5 else -1
        if r[k, 4] < 0.15 * rate:
            code = int(rng.integers(1000, 99000))
        dob = f"{y:04d}-{m:02d}-{d:02d}"
        out["first_name"].append("" if r[k, 5] < 0.03 * rate else first)
        out["surname"].append("" if r[k, 6] < 0.02 * rate else sur)
        out["dob"].append("" if r[k, 7] < 0.03 * rate else dob)
        out["postcode"].append("" if r[k, 8] < 0.05 * rate else f"{code:05d}")
        out["city"].append("" if r[k, 8] < 0.05 * rate else _city(code))
        out["email"].append("" if r[k, 9] < 0.4 * rate + 0.1 else email)
    return out


def _table(rng, prefix: str, persons: np.ndarray, fields: dict[str, list]) -> pa.Table:
    n = len(persons)
    order = rng.permutation(n)
    ids = np.array([f"{prefix}{k:07d}" for k in rng.permutation(n)], object)
    cols = {"id": ids[order], **{k: np.array(v, object)[order] for k, v in fields.items()},
            "person_id": persons[order]}
    return pa.table({k: pa.array(v, pa.int64() if k == "person_id" else pa.string()) for k, v in cols.items()})


def people(records: int, *, mode: Literal["link", "dedupe"] = "link", seed: int = 0, overlap: float = 0.7,
           duplicates: float = 0.3, noise: float = 1.0) -> list[pa.Table]:
    """Tables of ``records`` person records in all (two for a link, one for a deduplication)."""
    rng = np.random.default_rng(seed)
    if mode == "link":
        n_left = records // 2
        n_right = records - n_left
        shared = min(int(round(overlap * n_left)), n_right)
        p = _persons(rng, n_left + n_right - shared)
        left_persons = np.arange(n_left)
        right_persons = np.concatenate([rng.choice(n_left, shared, replace=False),
                                        np.arange(n_left, n_left + n_right - shared)])
        left = _table(rng, "L", left_persons, _records(rng, p, left_persons, noise, np.zeros(n_left, bool)))
        right = _table(rng, "R", right_persons, _records(rng, p, right_persons, noise, np.ones(n_right, bool)))
        return [left, right]
    n_persons = max(1, int(records / (1 + 1.6 * duplicates)))
    extra = np.flatnonzero(rng.random(n_persons) < duplicates)
    copies = rng.integers(1, 4, len(extra))
    which = np.concatenate([np.arange(n_persons), np.repeat(extra, copies)])[:records]
    if len(which) < records:
        which = np.concatenate([which, rng.choice(n_persons, records - len(which))])
    p = _persons(rng, n_persons)
    noisy = np.arange(len(which)) >= n_persons
    return [_table(rng, "P", which, _records(rng, p, which, noise, noisy))]


def true_pairs(tables: list[pa.Table]) -> pa.Table:
    """Every pair of records of the same person (``id_l``, ``id_r``): across the two tables of a
    link, within the table of a deduplication (``id_l`` < ``id_r``)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("a", tables[0])
        con.register("b", tables[-1])
        cond = "" if len(tables) == 2 else "AND a.id < b.id"
        return con.sql(f"SELECT a.id AS id_l, b.id AS id_r FROM a JOIN b ON a.person_id = b.person_id {cond} "
                           "ORDER BY 1, 2").to_arrow_table()
    finally:
        con.close()
