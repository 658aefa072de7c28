"""The signal rules on one person bucket: rows of some persons in, case tables out.

A bucket holds every row of its persons (the attach stage's person buckets), so each
person-level rule is decided inside it, with no exchange between tasks. Each function takes
Arrow tables and returns one case table per rule, sorted by person; every case row carries
the rule's settings (``settings``) and the record ids of its evidence (at most
``max_record_ids``). Rules that cross persons (``nir_shared``, ``declarant_quality``) have
partial tables per bucket (engine/stages/_signals_partials.py), summed by the stage.

The rules are plain vectorised numpy and pyarrow.compute over the bucket (one sort or hash
per rule, no per-person Python loop): nothing in them is a hot loop for Numba.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nirlink.engine.io._money import cents_of
from nirlink.engine.reference._tables import aspa_table, cohort_table
from nirlink.kernels._dates import first_day_of_month, month_index
from nirlink.kernels._segments import sorted_unique

from ._signals_settings import CASE_SCHEMAS, PERSON_RULES, RULES, VALID, SignalSettings, settings_label

__all__ = ["SignalSettings", "PERSON_RULES", "RULES", "CASE_SCHEMAS", "person_signals", "Register",
           "register_file_table", "settings_label"]

def register_file_table(t: pa.Table) -> pa.Table:
    """The register as the signal tasks map it: rows sorted by the NIR's bytes, the NIR also as a
    fixed-width key (``nir_key``: a task finds its few NIRs by binary search on the mapped file,
    with no hash of the whole register), numbers without nulls (0 = unknown, death -1 = alive) so
    that they map as numpy views, not copies."""
    nir = pc.fill_null(_arr(t.column("nir")), "")
    width = max(1, int(pc.max(pc.binary_length(nir)).as_py() or 1))
    keys = _fixed_keys(nir, width)
    order = np.argsort(keys, kind="stable")
    t, keys = t.take(pa.array(order)), keys[order]
    return pa.table({
        "nir": _arr(t.column("nir")), "owner": _arr(t.column("owner")),
        "nir_key": pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(keys), [None, pa.py_buffer(keys.tobytes())]),
        "birth_year": pc.fill_null(_arr(t.column("birth_year")), 0).cast(pa.int32()),
        "birth_month": pc.fill_null(_arr(t.column("birth_month")), 0).cast(pa.int32()),
        "death_day": pc.fill_null(pc.cast(_arr(t.column("death_date")), pa.int32()), -1),
    })


def _fixed_keys(values: pa.Array, width: int) -> np.ndarray:
    """Strings as numpy fixed-width bytes (their UTF-8; longer ones cut, so the caller masks them)."""
    raw = pc.fill_null(pc.cast(values, pa.binary()), b"").to_numpy(zero_copy_only=False)
    return raw.astype(f"S{width}") if len(raw) else np.zeros(0, f"S{width}")


@dataclass
class Register:
    """What the rules need of the register, sorted by NIR: each NIR's person (its cluster's
    representative when the register holds the person twice), birth year and month, death date.
    Built on the memory-mapped register file, it copies nothing of it: lookups are binary
    searches on ``keys`` and reads at the positions found."""

    nir: pa.Array
    owner: pa.Array
    keys: np.ndarray  # fixed-width bytes of each NIR, sorted
    birth_year: np.ndarray  # 0 = unknown
    birth_month: np.ndarray  # 0 = unknown
    death_day: np.ndarray  # days since epoch, -1 = alive

    @classmethod
    def from_table(cls, t: pa.Table) -> Register:
        """From the register file's table (``register_file_table``), or from a plain table of nir,
        owner, birth_year, birth_month, death_date (converted first)."""
        if "nir_key" not in t.column_names:
            t = register_file_table(t)
        key = _plain(t.column("nir_key"))
        width = key.type.byte_width
        keys = np.frombuffer(key.buffers()[1], dtype=f"S{width}", count=len(key), offset=key.offset * width) \
            if len(key) else np.zeros(0, f"S{width}")

        def numbers(name):
            return _plain(t.column(name)).to_numpy(zero_copy_only=False)

        return cls(nir=_arr(t.column("nir")), owner=_arr(t.column("owner")), keys=keys,
                   birth_year=numbers("birth_year"), birth_month=numbers("birth_month"),
                   death_day=numbers("death_day"))

    def find(self, values) -> np.ndarray:
        """Row of each value in the register, -1 when absent (or null)."""
        values = _arr(values)
        if len(values) == 0 or len(self.keys) == 0:
            return np.full(len(values), -1, np.int64)
        width = self.keys.dtype.itemsize
        fits = pc.fill_null(pc.less_equal(pc.binary_length(values), width), False).to_numpy(zero_copy_only=False)
        wanted = _fixed_keys(values, width)
        pos = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        # numpy's fixed-width bytes ignore trailing NULs: the lengths must agree too
        same = pc.equal(pc.binary_length(values), pc.binary_length(self.nir.take(pa.array(pos))))
        same = pc.fill_null(same, False).to_numpy(zero_copy_only=False)
        return np.where(fits & same & (self.keys[pos] == wanted), pos, -1).astype(np.int64)


def _plain(col) -> pa.Array:
    """One array; dictionary columns (as read with ``read_dictionary``) stay dictionaries, with
    their chunks' dictionaries unified."""
    if isinstance(col, pa.ChunkedArray):
        if pa.types.is_dictionary(col.type) and col.num_chunks > 1:
            col = col.unify_dictionaries()
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def _arr(col) -> pa.Array:
    col = _plain(col)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col


def _on_values(col, fn) -> pa.Array:
    """``fn`` on a string column, computed once per distinct value for a dictionary column."""
    col = _plain(col)
    if pa.types.is_dictionary(col.type):
        return fn(col.dictionary).take(col.indices)
    return fn(col)


def _flags(col, values) -> np.ndarray:
    """Rows whose value is one of ``values`` (null: False)."""
    out = _on_values(col, lambda v: pc.is_in(v, value_set=pa.array(list(values), pa.string())))
    return pc.fill_null(out, False).to_numpy(zero_copy_only=False)


_DICT = pa.dictionary(pa.int32(), pa.string())


def _as_dict(col) -> pa.Array:
    col = _plain(col)
    if pa.types.is_dictionary(col.type):
        return col if col.type == _DICT else col.cast(_DICT)
    return pc.dictionary_encode(col.cast(pa.string()))


def _np(col, fill=0) -> np.ndarray:
    return pc.fill_null(_arr(col), fill).to_numpy(zero_copy_only=False)


def _days(col) -> np.ndarray:
    return _np(pc.cast(_arr(col), pa.int32()), -1).astype(np.int64)


def _month_dates(months) -> pa.Array:
    return pa.array(first_day_of_month(np.asarray(months, np.int64)), pa.int32()).cast(pa.date32())


def _record_lists(group: np.ndarray, record_id: np.ndarray, n_groups: int, limit: int) -> pa.Array:
    """Per group (rows sorted by group, then record id), its first ``limit`` record ids."""
    order = np.lexsort((record_id, group))
    g, r = group[order], record_id[order]
    starts = np.searchsorted(g, np.arange(n_groups))
    rank = np.arange(len(g)) - starts[g]
    keep = rank < limit
    counts = np.bincount(g[keep], minlength=n_groups)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(r[keep], pa.int64()))


def _rows(career: pa.Table | None, resource: pa.Table | None) -> dict[str, np.ndarray | pa.Array]:
    """Career and resource rows as one set of columns: person, record id, month, kind, amount,
    declared NIR and its status, link method, and which source each row comes from."""
    parts = []
    for source, t in (("career", career), ("resource", resource)):
        if t is None or t.num_rows == 0:
            continue
        day = _days(t.column("start_date" if source == "career" else "period"))
        amount = cents_of(t.column("gross_salary" if source == "career" else "amount")) / 100.0
        parts.append({
            "person": _as_dict(t.column("person")), "record_id": _np(t.column("record_id"), -1).astype(np.int64),
            "day": day, "month": month_index(day, day >= -719162),
            "kind": _as_dict(t.column("kind")), "amount": np.nan_to_num(amount),
            **{c: _as_dict(t.column(c)) if c in t.column_names else pa.nulls(t.num_rows, _DICT)
               for c in ("nir", "nir_status", "link_method")},
            "is_career": np.full(t.num_rows, source == "career"),
        })
    if not parts:
        return {}
    out: dict[str, Any] = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        out[k] = _plain(pa.chunked_array(vals, type=_DICT)) if isinstance(vals[0], pa.Array) else np.concatenate(vals)
    return out


def person_signals(career: pa.Table | None, resource: pa.Table | None, quarters: pa.Table | None,
                   register: Register, settings: SignalSettings, *, as_of: int | None) -> dict[str, pa.Table]:
    """The four person-level rules on the rows of one bucket (rows without a person are
    ignored here; ``quarters``: the aggregate's career_person table of these persons)."""
    rows = _rows(career, resource)
    out = {rule: CASE_SCHEMAS[rule].empty_table() for rule in PERSON_RULES}
    if not rows:
        return out
    has_person = pc.is_valid(rows["person"]).to_numpy(zero_copy_only=False)
    if not has_person.all():
        keep = pa.array(has_person)
        rows = {k: (v.filter(keep) if isinstance(v, pa.Array) else v[has_person]) for k, v in rows.items()}
    if len(rows["record_id"]) == 0:
        return out
    enc = rows["person"]
    used, codes = np.unique(enc.indices.to_numpy(zero_copy_only=False), return_inverse=True)
    values = enc.dictionary.take(pa.array(used))
    order = pc.array_sort_indices(values).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    pidx = rank[codes]
    persons = values.take(pa.array(order))
    reg = register.find(persons)
    known = reg >= 0
    n = len(persons)

    def take(a, fill):
        return np.where(known, a[np.maximum(reg, 0)], fill).astype(np.int64)

    ctx = {"pidx": pidx, "persons": persons, "n": n, "death": take(register.death_day, -1),
           "birth_year": take(register.birth_year, 0), "birth_month": take(register.birth_month, 0)}
    out["income_after_death"] = _income_after_death(rows, ctx, settings)
    out["identity_conflict"] = _identity_conflict(rows, ctx, register, settings)
    if as_of is not None:
        q = np.zeros(n, np.int64)
        if quarters is not None and quarters.num_rows:
            pos = pc.fill_null(pc.index_in(persons, value_set=_arr(quarters.column("person"))), -1)
            pos = pos.to_numpy(zero_copy_only=False).astype(np.int64)
            qv = _np(quarters.column("quarters"), 0).astype(np.int64)
            q = np.where(pos >= 0, qv[np.maximum(pos, 0)], 0)
        ctx["quarters"] = q
        out["possible_pension_non_take_up"] = _non_take_up(rows, ctx, settings, as_of)
        out["low_resources_no_minimum"] = _low_resources(rows, ctx, settings, as_of)
    return out


def _alive_age(ctx, as_of: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Who is alive at the end of month ``as_of``, has a known birth year, and their age in months
    (an unknown birth month counts as January: the earliest the person can be that old)."""
    death = ctx["death"]
    death_month = month_index(death, death >= 0)
    alive = (death < 0) | (death_month > as_of)
    by, bm = ctx["birth_year"], ctx["birth_month"]
    bm = np.where((bm >= 1) & (bm <= 12), bm, 1)
    age = as_of - (by * 12 + bm - 1)
    return alive & (by > 0), age, by


def _income_after_death(rows, ctx, s: SignalSettings) -> pa.Table:
    death = ctx["death"]
    pidx = ctx["pidx"]
    d_row = death[pidx]
    death_month = month_index(d_row, d_row >= 0)
    after = (d_row >= 0) & (rows["month"] > death_month + s.death_grace_months)
    if not after.any():
        return CASE_SCHEMAS["income_after_death"].empty_table()
    p = pidx[after]
    cases, g = np.unique(p, return_inverse=True)
    k = len(cases)
    first, last = _month_span(g, rows["month"][after], k)
    amount = np.bincount(g, weights=rows["amount"][after], minlength=k)
    is_career = rows["is_career"][after]
    n_rows = np.bincount(g, minlength=k)
    career_rows = np.bincount(g, weights=is_career, minlength=k).astype(np.int32)
    dm = month_index(death[cases], np.ones(k, bool))
    return pa.table({
        "person": ctx["persons"].take(pa.array(cases)), "rule": pa.array(["income_after_death"] * k),
        "period": _month_dates(first), "score": pa.array(np.round(amount, 2)),
        "settings": pa.array([settings_label("income_after_death", s)] * k),
        "rows": pa.array(n_rows.astype(np.int32)),
        "record_ids": _record_lists(g, rows["record_id"][after], k, s.max_record_ids),
        "death_date": pa.array(death[cases].astype(np.int32)).cast(pa.date32()),
        "first_period": _month_dates(first), "last_period": _month_dates(last),
        "months_after_death": pa.array((last - dm).astype(np.int16)), "amount": pa.array(np.round(amount, 2)),
        "career_rows": pa.array(career_rows), "resource_rows": pa.array((n_rows - career_rows).astype(np.int32)),
    }, schema=CASE_SCHEMAS["income_after_death"])


def _month_span(g: np.ndarray, month: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last month of each of the ``k`` groups numbered by ``g``."""
    first = np.full(k, np.iinfo(np.int64).max)
    np.minimum.at(first, g, month)
    last = np.full(k, -1, np.int64)
    np.maximum.at(last, g, month)
    return first, last


def _identity_conflict(rows, ctx, register: Register, s: SignalSettings) -> pa.Table:
    cand = _flags(rows["nir_status"], VALID)
    if not cand.any():
        return CASE_SCHEMAS["identity_conflict"].empty_table()
    idx = np.flatnonzero(cand)
    nir = rows["nir"]  # a dictionary: each distinct NIR looked up once
    pos = pa.array(register.find(nir.dictionary)).take(nir.indices.take(pa.array(idx)))
    pos = pc.fill_null(pos, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    registered = pos >= 0
    idx, pos = idx[registered], pos[registered]
    owner = register.owner.take(pa.array(pos))
    person = ctx["persons"].take(pa.array(ctx["pidx"][idx]))
    differ = pc.not_equal(owner, person).to_numpy(zero_copy_only=False)
    idx, owner = idx[differ], owner.filter(pa.array(differ))
    if len(idx) == 0:
        return CASE_SCHEMAS["identity_conflict"].empty_table()
    # one case per (person, owner of the declared NIR)
    owner_code = pc.dictionary_encode(owner)
    okey = pc.array_sort_indices(owner_code.dictionary).to_numpy()
    orank = np.empty(len(okey), np.int64)
    orank[okey] = np.arange(len(okey))
    oc = orank[owner_code.indices.to_numpy(zero_copy_only=False)]
    key = ctx["pidx"][idx] * (len(okey) + 1) + oc
    keys, g = np.unique(key, return_inverse=True)
    k = len(keys)
    first, last = _month_span(g, rows["month"][idx], k)
    n_rows = np.bincount(g, minlength=k)
    amount = np.round(np.bincount(g, weights=rows["amount"][idx], minlength=k), 2)
    first_row = np.full(k, len(idx))
    np.minimum.at(first_row, g, np.arange(len(idx)))
    methods = _arr(rows["link_method"].take(pa.array(idx[first_row])))
    return pa.table({
        "person": ctx["persons"].take(pa.array(keys // (len(okey) + 1))), "rule": pa.array(["identity_conflict"] * k),
        "period": _month_dates(first), "score": pa.array(n_rows.astype(np.float64)),
        "settings": pa.array([settings_label("identity_conflict", s)] * k), "rows": pa.array(n_rows.astype(np.int32)),
        "record_ids": _record_lists(g, rows["record_id"][idx], k, s.max_record_ids),
        "nir_owner": owner_code.dictionary.take(pa.array(okey[keys % (len(okey) + 1)])),
        "first_period": _month_dates(first), "last_period": _month_dates(last), "amount": pa.array(amount),
        "link_method": methods,
    }, schema=CASE_SCHEMAS["identity_conflict"])


def _kind_mask(rows, kinds) -> np.ndarray:
    return _flags(rows["kind"], kinds)


def _non_take_up(rows, ctx, s: SignalSettings, as_of: int) -> pa.Table:
    ok, age, by = _alive_age(ctx, as_of)
    n = ctx["n"]
    in_table = (by >= 1900) & (by <= 2030)
    ok &= in_table
    ct = cohort_table()
    byc = np.where(in_table, by, 1950)
    bm = ctx["birth_month"]
    legal = ct.legal_age(byc, bm).astype(np.int64)
    full_age = ct.full_rate_age(byc, bm).astype(np.int64)
    required = ct.required_quarters(byc, bm).astype(np.int64)
    q = ctx["quarters"]
    by_quarters = q >= required
    by_age = age >= full_age
    window = (rows["month"] > as_of - s.pension_window_months) & (rows["month"] <= as_of)
    pension = window & _kind_mask(rows, s.pension_kinds) & ~rows["is_career"]
    has_pension = np.bincount(ctx["pidx"][pension], minlength=n) > 0
    case = ok & (age >= legal) & (by_quarters | by_age) & ~has_pension
    cases = np.flatnonzero(case)
    k = len(cases)
    # evidence: the person's rows in the window (what they did receive), most recent first
    sel = window & case[ctx["pidx"]]
    g = np.searchsorted(cases, ctx["pidx"][sel])
    n_rows = np.bincount(g, minlength=k)
    return pa.table({
        "person": ctx["persons"].take(pa.array(cases)), "rule": pa.array(["possible_pension_non_take_up"] * k),
        "period": _month_dates(np.full(k, as_of)), "score": pa.array((age[cases] - legal[cases]).astype(np.float64)),
        "settings": pa.array([settings_label("possible_pension_non_take_up", s, as_of)] * k),
        "rows": pa.array(n_rows.astype(np.int32)),
        "record_ids": _record_lists(g, rows["record_id"][sel], k, s.max_record_ids),
        "birth_year": pa.array(by[cases].astype(np.int16)), "age_months": pa.array(age[cases].astype(np.int16)),
        "legal_age_months": pa.array(legal[cases].astype(np.int16)), "quarters": pa.array(q[cases].astype(np.int32)),
        "quarters_required": pa.array(required[cases].astype(np.int16)),
        "full_rate_by": pa.array(np.where(by_quarters[cases], "quarters", "age").astype(object), pa.string()),
    }, schema=CASE_SCHEMAS["possible_pension_non_take_up"])


def _low_resources(rows, ctx, s: SignalSettings, as_of: int) -> pa.Table:
    ceiling = float(aspa_table().yearly_ceiling([as_of])[0])
    if np.isnan(ceiling):
        return CASE_SCHEMAS["low_resources_no_minimum"].empty_table()
    ok, age, _ = _alive_age(ctx, as_of)
    n = ctx["n"]
    window = (rows["month"] > as_of - s.low_resources_window_months) & (rows["month"] <= as_of) & ~rows["is_career"]
    p = ctx["pidx"][window]
    income = np.bincount(p, weights=np.round(rows["amount"][window] * 100), minlength=n) / 100.0
    minimum = np.bincount(ctx["pidx"][window & _kind_mask(rows, (s.minimum_benefit_kind,))], minlength=n) > 0
    pm = sorted_unique(p * 1_000_000 + rows["month"][window])
    months = np.bincount(pm // 1_000_000, minlength=n)
    # income is scaled to 12 months when the window is shorter or longer
    income_12m = income * 12.0 / s.low_resources_window_months
    case = ok & (age >= s.low_resources_age * 12) & (income_12m < ceiling) & ~minimum
    cases = np.flatnonzero(case)
    k = len(cases)
    sel = window & case[ctx["pidx"]]
    g = np.searchsorted(cases, ctx["pidx"][sel])
    return pa.table({
        "person": ctx["persons"].take(pa.array(cases)), "rule": pa.array(["low_resources_no_minimum"] * k),
        "period": _month_dates(np.full(k, as_of)),
        "score": pa.array(np.round(ceiling - income_12m[cases], 2)),
        "settings": pa.array([settings_label("low_resources_no_minimum", s, as_of)] * k),
        "rows": pa.array(np.bincount(g, minlength=k).astype(np.int32)),
        "record_ids": _record_lists(g, rows["record_id"][sel], k, s.max_record_ids),
        "age_months": pa.array(age[cases].astype(np.int16)), "income_12m": pa.array(np.round(income_12m[cases], 2)),
        "ceiling_12m": pa.array(np.full(k, ceiling)), "months_with_income": pa.array(months[cases].astype(np.int16)),
    }, schema=CASE_SCHEMAS["low_resources_no_minimum"])
