"""Synthetic persons of one generation block: birth data, NIRs, names; the register rows.

NIRs are unique across blocks without any coordination: the slot digits of a NIR
(commune + order, or order alone for people born abroad) are split between blocks by
their residue modulo the number of blocks, so block b only ever uses slots s with
s % P == b. A person whose cell (sex, year, month, place) is full in their block is
redrawn (another month, then another place); nobody is ever given a duplicate number.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa

from nirlink.kernels import InputError, format_dates, format_nir, nir_key
from nirlink.linkage._geo import (
    COUNTRIES,
    COUNTRY_WEIGHTS,
    METRO_DEPARTMENTS,
    METRO_WEIGHTS,
    OVERSEAS,
    OVERSEAS_WEIGHTS,
)

from ._names import DECADES, first_names, surnames

__all__ = ["Persons", "make_persons", "register_table", "REGISTER_SCHEMA"]

GROUP_METRO, GROUP_OVERSEAS, GROUP_ABROAD = 0, 1, 2
# Slot space of each place group: commune (001-999) x order (001-999), commune (01-99) x
# order, order alone (the country code fills the commune digits).
SLOTS = np.array([999 * 999, 99 * 999, 999], dtype=np.int64)
# A fixed bijection of each slot space spreads a block's slots over communes and orders.
_SLOT_MULT = 7919  # prime, coprime with 999**2, 99*999 and 999

REGISTER_SCHEMA = pa.schema(
    [
        pa.field("nir", pa.string(), nullable=False),
        pa.field("sex", pa.int8(), nullable=False),
        pa.field("birth_date", pa.string(), nullable=False),
        pa.field("birth_place", pa.string(), nullable=False),
        pa.field("last_name", pa.string(), nullable=False),
        pa.field("usage_name", pa.string()),
        pa.field("first_names", pa.string(), nullable=False),
        pa.field("death_date", pa.date32()),
        pa.field("nir_kind", pa.string(), nullable=False),
    ]
)


@dataclass
class Persons:
    """Columns of the persons of one block (one entry per person)."""

    sex: np.ndarray  # int8 1/2
    birth_year: np.ndarray  # int16
    birth_month: np.ndarray  # int8, 0 = unknown
    birth_day: np.ndarray  # int8, 0 = unknown
    death_year: np.ndarray  # int16, 0 = alive
    death_ordinal: np.ndarray  # int32 days since epoch, -1 = alive
    place_group: np.ndarray  # int8
    body: np.ndarray  # int64 13-digit numeric body of the canonical NIR (Corsica as 19/18)
    corsica: np.ndarray  # int8 0 / 1=2A / 2=2B
    key: np.ndarray  # int8
    temporary: np.ndarray  # bool: canonical number is temporary
    dup_body: np.ndarray  # int64, -1 = no register duplicate; else the temporary body
    dup_key: np.ndarray  # int8
    last_name: np.ndarray  # object str
    usage_name: np.ndarray  # object str or None
    first_names: np.ndarray  # object str, space separated
    nir: pa.Array  # string, canonical NIR
    dup_nir: pa.Array  # string, temporary NIR of the duplicate (null when none)
    birth_date: pa.Array  # string 'YYYY-MM-DD' with 00 for unknown parts
    birth_place: pa.Array  # string, 5 characters

    def __len__(self) -> int:
        return len(self.sex)

    def part(self, start: int, stop: int) -> Persons:
        """Persons ``start`` .. ``stop`` - 1 of these (Arrow columns copied compact)."""
        rows = pa.array(np.arange(start, stop, dtype=np.int64))
        return Persons(**{f.name: v.take(rows) if isinstance(v, pa.Array) else v[start:stop]
                          for f in fields(self) for v in (getattr(self, f.name),)})


def _choice(rng, values, weights, n):
    return values[np.minimum(np.searchsorted(np.cumsum(weights), rng.random(n) * np.sum(weights)), len(values) - 1)]


def _birth_years(rng, n):
    # Cohorts 1935-2006, fewer of the oldest (a rough population pyramid).
    years = np.arange(1935, 2007)
    w = np.where(years < 1946, 0.55, 1.0) * np.where(years > 1995, 0.9, 1.0)
    return _choice(rng, years, w, n).astype(np.int16)


def _days_in_month(year, month):
    dim = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 1, 12) - 1]
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    return dim + ((month == 2) & leap)


def _draw_cells(rng, n, p, birth_year, redraw_level):
    """Place group, place code and NIR month code for n persons.

    redraw_level 0: the person's own draw; >= 3: forced to metropolitan France (the
    largest slot space), used for persons who could not be placed in their block.
    """
    u = rng.random(n)
    group = np.where(u < p.born_abroad_share, GROUP_ABROAD,
                     np.where(u < p.born_abroad_share + p.overseas_share, GROUP_OVERSEAS, GROUP_METRO)).astype(np.int8)
    if redraw_level >= 3:
        group[:] = GROUP_METRO
    dept = _choice(rng, METRO_DEPARTMENTS, METRO_WEIGHTS, n).astype(np.int64)
    corsica = np.zeros(n, np.int8)
    is_corse = dept == 20
    modern = is_corse & (birth_year >= 1976)
    corsica[modern] = np.where(rng.random(int(modern.sum())) < 0.5, 1, 2)
    overseas = _choice(rng, OVERSEAS, OVERSEAS_WEIGHTS, n).astype(np.int64)
    country = _choice(rng, COUNTRIES, COUNTRY_WEIGHTS, n).astype(np.int64)
    # place prefix as a number: metro dd (19/18 for 2A/2B), overseas 97x, abroad 99ccc
    place_prefix = np.where(group == GROUP_METRO, np.where(corsica == 1, 19, np.where(corsica == 2, 18, dept)),
                            np.where(group == GROUP_OVERSEAS, overseas, 99000 + country))
    corsica = np.where(group == GROUP_METRO, corsica, 0).astype(np.int8)
    return group, place_prefix, corsica


def make_persons(rng: np.random.Generator, n: int, *, block: int, n_blocks: int, p) -> Persons:
    """Draw ``n`` persons for block ``block`` of ``n_blocks`` (p: SynthParams)."""
    if n_blocks < 1 or not 0 <= block < n_blocks:
        raise InputError(f"block {block} outside 0..{n_blocks - 1}")
    sex = (1 + (rng.random(n) < 0.5)).astype(np.int8)
    birth_year = _birth_years(rng, n)
    birth_month = rng.integers(1, 13, n).astype(np.int8)
    birth_day = (1 + np.floor(rng.random(n) * _days_in_month(birth_year, birth_month))).astype(np.int8)

    group, place_prefix, corsica = _draw_cells(rng, n, p, birth_year, 0)
    # Temporary numbers: people born abroad only; unknown birth months: mostly abroad.
    abroad = group == GROUP_ABROAD
    share_abroad = max(p.born_abroad_share, 1e-12)
    temporary = abroad & (rng.random(n) < min(1.0, p.temporary_share / share_abroad))
    unknown_month = abroad & (rng.random(n) < min(1.0, p.unknown_month_share / share_abroad))
    birth_month = np.where(unknown_month, 0, birth_month).astype(np.int8)
    birth_day = np.where(unknown_month, 0, birth_day).astype(np.int8)
    month_code = birth_month.astype(np.int64)
    special = rng.integers(0, 23 + 50, n)  # 20-42 or 50-99
    month_code = np.where(unknown_month, np.where(special < 23, 20 + special, 50 + special - 23), month_code)

    sex_digit = np.where(temporary, np.where(rng.random(n) < 0.8, sex + 6, sex + 2), sex).astype(np.int64)
    yy = (birth_year % 100).astype(np.int64)

    taken = _Taken()  # cell -> slots of this block's share already used
    slot = _assign_slots(rng, block, n_blocks, p, sex_digit, yy, month_code, group, place_prefix, corsica, birth_year,
                         taken)
    group, place_prefix, corsica, slot = slot
    body = _body(sex_digit, yy, month_code, group, place_prefix, slot)
    key = nir_key(body)

    # Register duplicates: permanent persons born abroad who also kept a temporary number.
    eligible = abroad & ~temporary & (group == GROUP_ABROAD)
    share_eligible = max(float(eligible.mean()) if n else 0.0, 1e-12)
    dup = eligible & (rng.random(n) < min(1.0, p.register_duplicate_rate / share_eligible))
    dup_body = np.full(n, -1, np.int64)
    dup_key = np.zeros(n, np.int8)
    if dup.any():
        idx = np.flatnonzero(dup)
        dsex = (sex[idx] + 6).astype(np.int64)
        # The temporary number lives in its own cells (sex digit 7/8), so it never meets a
        # permanent number; its slot comes from the same per-block share.
        _, _, _, dslot = _assign_slots(rng, block, n_blocks, p, dsex, yy[idx], month_code[idx], group[idx],
                                       place_prefix[idx], corsica[idx], birth_year[idx], taken,
                                       fixed_place=True)
        # A duplicate whose temporary cell is full in this block is simply not created.
        placed = dslot >= 0
        idx, dsex, dslot = idx[placed], dsex[placed], dslot[placed]
        dup_body[idx] = _body(dsex, yy[idx], month_code[idx], group[idx], place_prefix[idx], dslot)
        dup_key[idx] = nir_key(dup_body[idx])

    death_year, death_ordinal = _deaths(rng, birth_year, p)
    last_name, usage_name, first = _names(rng, sex, birth_year, p)

    nir = format_nir(body, corsica, key)
    dup_nir = format_nir(np.where(dup_body >= 0, dup_body, 0), corsica, dup_key, valid=dup_body >= 0)
    birth_date = format_dates(birth_year, birth_month, birth_day)
    place_num = place_prefix * np.where(group == GROUP_ABROAD, 1, np.where(group == GROUP_OVERSEAS, 100, 1000))
    place_num = place_num + np.where(group == GROUP_METRO, slot // 999 + 1, np.where(group == GROUP_OVERSEAS, slot // 999 + 1, 0))
    birth_place = _place_strings(place_num, corsica)
    return Persons(
        sex=sex, birth_year=birth_year, birth_month=birth_month, birth_day=birth_day,
        death_year=death_year, death_ordinal=death_ordinal, place_group=group,
        body=body, corsica=corsica, key=key, temporary=temporary, dup_body=dup_body, dup_key=dup_key,
        last_name=last_name, usage_name=usage_name, first_names=first,
        nir=nir, dup_nir=dup_nir, birth_date=birth_date, birth_place=birth_place,
    )


def _body(sex_digit, yy, month_code, group, place_prefix, slot):
    order = np.where(group == GROUP_ABROAD, slot, slot % 999) + 1
    commune = np.where(group == GROUP_ABROAD, 0, slot // 999 + 1)
    # positions: s yy mm | place (5 digits) | order (3)
    place5 = np.where(group == GROUP_METRO, place_prefix * 1000 + commune,
                      np.where(group == GROUP_OVERSEAS, place_prefix * 100 + commune, place_prefix))
    return sex_digit * 10**12 + yy * 10**10 + month_code * 10**8 + place5 * 1000 + order


def _place_strings(place_num, corsica):
    from nirlink.kernels import format_digits

    arr = format_digits(place_num, 5)
    if not corsica.any():
        return arr
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8).copy()
    rows = np.flatnonzero(corsica)
    data[rows * 5] = ord("2")
    data[rows * 5 + 1] = np.where(corsica[rows] == 1, ord("A"), ord("B"))
    from nirlink.kernels._arrow import fixed_width_strings

    return fixed_width_strings(data, 5)


class _Taken:
    """Slots used per cell (cell -> count, 0 for a cell not seen) as sorted arrays: a block
    looks up and updates tens of thousands of cells at a time (a dict cost a Python call each)."""

    def __init__(self):
        self.cells = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)

    def get(self, cells: np.ndarray) -> np.ndarray:
        """The counts of ``cells`` (distinct)."""
        at = np.minimum(np.searchsorted(self.cells, cells), max(len(self.cells) - 1, 0))
        found = (self.cells[at] == cells) if len(self.cells) else np.zeros(len(cells), bool)
        return np.where(found, self.counts[at] if len(self.cells) else 0, 0).astype(np.int64)

    def set(self, cells: np.ndarray, counts: np.ndarray) -> None:
        """Set the counts of ``cells`` (distinct)."""
        keep = ~np.isin(self.cells, cells, assume_unique=True)
        merged = np.concatenate([self.cells[keep], cells])
        order = np.argsort(merged, kind="stable")
        self.cells = merged[order]
        self.counts = np.concatenate([self.counts[keep], counts])[order]


def _assign_slots(rng, block, n_blocks, p, sex_digit, yy, month_code, group, place_prefix, corsica, birth_year,
                  taken, fixed_place=False):
    """Give every person a slot of their cell from this block's share, redrawing the full ones.

    ``taken`` (cell -> slots used, a ``_Taken``) is shared by every call of one block. With
    ``fixed_place`` nobody is redrawn and unplaced persons keep slot -1.
    """
    n = len(sex_digit)
    group = group.copy()
    place_prefix = place_prefix.copy()
    corsica = corsica.copy()
    month_code = month_code.copy()
    slot = np.full(n, -1, np.int64)
    todo = np.arange(n)
    for level in range(6):
        if len(todo) == 0:
            break
        if level > 0 and not fixed_place:
            g, pp, cs = _draw_cells(rng, len(todo), p, birth_year[todo], level)
            group[todo], place_prefix[todo], corsica[todo] = g, pp, cs
        cell = (((sex_digit[todo] * 100 + yy[todo]) * 100 + month_code[todo]) * 1_000_000 + place_prefix[todo]) * 4 + group[todo]
        order = np.argsort(cell, kind="stable")
        sc = cell[order]
        start = np.r_[0, np.flatnonzero(sc[1:] != sc[:-1]) + 1]
        counts = np.diff(np.r_[start, len(sc)])
        rank = np.arange(len(sc)) - np.repeat(start, counts)
        base = taken.get(sc[start])
        rank = rank + np.repeat(base, counts)
        size = SLOTS[group[todo][order]]
        capacity = (size - block + n_blocks - 1) // n_blocks
        ok = rank < capacity
        # each cell starts at its own (hashed) place in the block's share, so that the
        # first person of every cell does not get the same commune and order
        start_c = (((sc.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33))).astype(np.int64)
        raw = block + ((start_c[ok] + rank[ok]) % capacity[ok]) * n_blocks
        slot[todo[order[ok]]] = (raw * _SLOT_MULT) % size[ok]
        placed = np.add.reduceat(ok.astype(np.int64), start) if len(start) else np.zeros(0, np.int64)
        taken.set(sc[start], base + placed)
        todo = np.sort(todo[order[~ok]])
        if fixed_place:
            break
    if len(todo) and not fixed_place:
        raise InputError(
            f"block {block}: {len(todo)} person(s) could not get a unique NIR; use fewer persons per "
            "cell (more blocks do not help: the slot space per cell is fixed)"
        )
    return group, place_prefix, corsica, slot


def _deaths(rng, birth_year, p):
    n = len(birth_year)
    p_dead = np.where(birth_year < 1950, 0.22, np.where(birth_year < 1970, 0.05, 0.01))
    dead = rng.random(n) < p_dead
    lo = np.maximum(birth_year.astype(np.int64) + 40, 1991)
    hi = np.full(n, 2025)
    year = (lo + np.floor(rng.random(n) * np.maximum(hi - lo + 1, 1))).astype(np.int16)
    dead &= lo <= hi
    day_of_year = rng.integers(0, 365, n)
    # years since 1970 (a plain integer array cast to datetime64[Y] counts from 1970, not from year 0)
    ordinal = ((year.astype(np.int64) - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
               + day_of_year)
    return np.where(dead, year, 0).astype(np.int16), np.where(dead, ordinal, -1).astype(np.int32)


def _names(rng, sex, birth_year, p):
    n = len(sex)
    sn = surnames()
    last = sn.names[sn.draw(rng, n)]
    # Usage (married) names: most women over 25 in the register, a few men.
    age = 2025 - birth_year.astype(np.int64)
    married = (age >= 25) & (rng.random(n) < np.where(sex == 2, 0.55, 0.02))
    usage = np.full(n, None, dtype=object)
    usage[married] = sn.names[sn.draw(rng, int(married.sum()))]
    # 1 to 4 first names (30/40/25/5%), drawn from the list of the person's sex and decade.
    count = np.searchsorted(np.array([0.30, 0.70, 0.95, 1.0]), rng.random(n), side="right") + 1
    decade = np.clip(1901 + 10 * ((birth_year.astype(np.int64) - 1901) // 10), DECADES[0], DECADES[-1])
    parts = np.empty((n, 4), dtype=object)
    parts[:] = ""
    for s in (1, 2):
        for d in DECADES:
            rows = np.flatnonzero((sex == s) & (decade == d))
            if len(rows) == 0:
                continue
            voc = first_names(s, d)
            draws = voc.names[voc.draw(rng, len(rows) * 4)].reshape(len(rows), 4)
            parts[rows] = draws
    # the person's first `count` names joined by spaces, in Arrow (a Python join per person
    # cost two thirds of these names)
    import pyarrow.compute as pc

    cols = [pa.array(parts[:, k], pa.string(), mask=count <= k if k else None) for k in range(4)]
    first = pc.binary_join_element_wise(*cols, " ", null_handling="skip").to_numpy(zero_copy_only=False)
    return last, usage, first


def register_table(persons: Persons) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Register rows: one per person, plus the temporary-number row of each duplicate.

    Returns the table, the person index of each row and a flag marking duplicate rows.
    """
    n = len(persons)
    dup = persons.dup_body >= 0
    order = np.concatenate([np.arange(n), np.flatnonzero(dup)])
    order = order[np.argsort(order, kind="stable")]  # the duplicate row right after its person
    is_dup_row = np.zeros(len(order), bool)
    is_dup_row[1:] = order[1:] == order[:-1]
    idx = pa.array(order)
    nir = pa.chunked_array([persons.nir]).combine_chunks().take(idx)
    dup_nir = persons.dup_nir.take(idx)
    import pyarrow.compute as pc

    nir = pc.if_else(pa.array(is_dup_row), dup_nir, nir)
    kind_temp = persons.temporary[order] | is_dup_row
    death = np.where(persons.death_ordinal[order] >= 0, persons.death_ordinal[order], 0).astype(np.int32)
    return pa.table(
        {
            "nir": nir,
            "sex": pa.array(persons.sex[order]),
            "birth_date": persons.birth_date.take(idx),
            "birth_place": persons.birth_place.take(idx),
            "last_name": pa.array(persons.last_name[order], pa.string()),
            "usage_name": pa.array(persons.usage_name[order], pa.string()),
            "first_names": pa.array(persons.first_names[order], pa.string()),
            "death_date": pa.array(death, pa.int32(), mask=persons.death_ordinal[order] < 0).cast(pa.date32()),
            "nir_kind": pa.array(np.where(kind_temp, "temporary", "permanent"), pa.string()),
        },
        schema=REGISTER_SCHEMA,
    ), order, is_dup_row
