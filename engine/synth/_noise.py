"""The noise model: what declarants get wrong about a person, drawn once per identity version.

Every rate is a probability per identity version (a person as one employer or payer
declares them; see VersionSpace). NIR errors are mutually exclusive (one uniform draw
picks at most one); name and date errors are independent of each other. Settings and
their meaning: engine/nirlink.yaml, `nirlink.synth.noise`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nirlink.kernels import format_dates, format_nir
from nirlink.kernels._text import first_token

from ._typos import (ALPHABET, CASING, KEYBOARD, STRIP_ACCENTS, SWAPPED, TYPO_FIRST, TYPO_LAST, _strip,
                     noisy_names)

__all__ = ["DeclaredIdentities", "declare", "NIR_NOISE", "strip_accents"]

NIR_NOISE = ("missing-nir", "wrong-key", "transposed-digits", "other-person-nir", "nir-without-key")
_ALPHABET, _KEYBOARD = ALPHABET, KEYBOARD  # the rules below are the kernel's reference (tests)


@functools.lru_cache(maxsize=1 << 16)
def strip_accents(text: str) -> str:
    return _strip(text)


def _typo(u0: float, u1: float, u2: float, text: str) -> str:
    """One typo drawn from three uniforms: the operation, the position, the character."""
    if len(text) < 2:
        return text + "E"
    op = int(u0 * 4)
    i = int(u1 * len(text))
    if op == 0:  # insert
        return text[:i] + _ALPHABET[int(u2 * len(_ALPHABET))] + text[i:]
    if op == 1:  # delete
        return text[:i] + text[i + 1:]
    if op == 2:  # substitute, by a keyboard neighbour when there is one
        c = text[i]
        pool = _KEYBOARD.get(c, _ALPHABET)
        return text[:i] + pool[int(u2 * len(pool))] + text[i + 1:]
    i = min(i, len(text) - 2)  # transpose with the next character
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def _case_spacing(u: float, text: str) -> str:
    op = int(u * 4)
    if op == 0:
        return text.lower()
    if op == 1:
        return text.title()
    if op == 2:
        return text.replace(" ", "  ").replace("-", " - ", 1) if (" " in text or "-" in text) else " " + text + " "
    return text + "."


@dataclass
class DeclaredIdentities:
    """Per identity version, an index into each column's dictionary (-1 = null)."""

    nir_idx: np.ndarray
    nir_dict: pa.Array
    last_idx: np.ndarray
    last_dict: pa.Array
    first_idx: np.ndarray
    first_dict: pa.Array
    birth_idx: np.ndarray
    birth_dict: pa.Array
    nir_noise: np.ndarray  # int8 per version: 0 none, 1.. index+1 in NIR_NOISE
    other_person: np.ndarray  # int64 per version: the person whose NIR an other-person-nir version carries, else -1


def declare(rng: np.random.Generator, persons, version_person: np.ndarray, used: np.ndarray, noise, *,
            heavy: np.ndarray | None = None, heavy_scale: float = 1.0,
            heavy_rng: np.random.Generator | None = None) -> DeclaredIdentities:
    """Draw the declared identity of every version (noise applies to the used ones); the
    ``heavy`` versions (those of declarants with bad practices) draw their NIR errors at
    ``heavy_scale`` times the rates, from ``heavy_rng`` (the main stream is unchanged)."""
    n = len(persons)
    v = len(version_person)
    vp = version_person
    rates = np.array([getattr(noise, k.replace("-", "_")) for k in NIR_NOISE])
    u = rng.random(v)
    cat = np.searchsorted(np.cumsum(rates), u, side="right")  # len(rates) = no NIR noise
    if heavy is not None and heavy.any():
        cat[heavy] = np.searchsorted(np.cumsum(rates * heavy_scale), heavy_rng.random(int(heavy.sum())), side="right")
    nir_noise = np.where(cat < len(rates), cat + 1, 0).astype(np.int8)
    nir_noise[~used] = 0

    # --- NIR ---
    has_dup = persons.dup_body[vp] >= 0
    use_dup = has_dup & (rng.random(v) < 0.5)  # people with two numbers declare either
    nir_idx = np.where(use_dup, n + vp, vp).astype(np.int64)
    body = np.where(use_dup, persons.dup_body[vp], persons.body[vp])
    key = np.where(use_dup, persons.dup_key[vp], persons.key[vp]).astype(np.int64)
    cors = persons.corsica[vp]
    custom = nir_noise >= 2
    nir_idx[nir_noise == 1] = -1
    cbody, ckey, ccors = body[custom].copy(), key[custom].copy(), cors[custom].copy()
    ctype = nir_noise[custom]
    with_key = np.ones(len(cbody), bool)
    # wrong key: any other key
    wk = ctype == 2
    ckey[wk] = 1 + (ckey[wk] - 1 + rng.integers(1, 97, int(wk.sum()))) % 97
    # transposed digits (body positions i, i+1 from the left; Corsica's letters untouched)
    tr = np.flatnonzero(ctype == 3)
    for attempt in range(6):
        if len(tr) == 0:
            break
        pos = rng.integers(0, 12, len(tr))
        pos = np.where((ccors[tr] > 0) & ((pos == 4) | (pos == 5) | (pos == 6)), 7, pos)
        p1 = 10 ** (12 - pos)
        p2 = 10 ** (11 - pos)
        d1 = (cbody[tr] // p1) % 10
        d2 = (cbody[tr] // p2) % 10
        ok = d1 != d2
        done = tr[ok]
        cbody[done] = cbody[done] - d1[ok] * p1[ok] - d2[ok] * p2[ok] + d2[ok] * p1[ok] + d1[ok] * p2[ok]
        tr = tr[~ok]
    # another person's NIR
    op = np.flatnonzero(ctype == 4)
    other_person = np.full(v, -1, np.int64)
    if len(op) and n > 1:
        shift = rng.integers(1, n, len(op))
        other = (vp[custom][op] + shift) % n
        cbody[op], ckey[op], ccors[op] = persons.body[other], persons.key[other], persons.corsica[other]
        other_person[np.flatnonzero(custom)[op]] = other
    with_key[ctype == 5] = False
    nir_custom = format_nir(cbody, ccors, ckey, with_key=with_key)
    nir_idx[custom] = 2 * n + np.arange(int(custom.sum()))
    # the dictionary must hold no null: persons without a duplicate get '' (never referenced)
    nir_dict = pa.concat_arrays([_plain(persons.nir), pc.fill_null(_plain(persons.dup_nir), ""), nir_custom])

    # --- dates ---
    y = persons.birth_year[vp].astype(np.int64)
    m = persons.birth_month[vp].astype(np.int64)
    d = persons.birth_day[vp].astype(np.int64)
    swap = used & (rng.random(v) < noise.day_month_swapped) & (m > 0) & (d > 0) & (d <= 12) & (d != m)
    off = used & (rng.random(v) < noise.birth_year_off)
    cd = swap | off
    yy = y[cd] + np.where(off[cd], np.where(rng.random(int(cd.sum())) < 0.5, -1, 1), 0)
    mm = np.where(swap[cd], d[cd], m[cd])
    dd = np.where(swap[cd], m[cd], d[cd])
    birth_idx = vp.astype(np.int64).copy()
    birth_idx[cd] = n + np.arange(int(cd.sum()))
    birth_dict = pa.concat_arrays([_plain(persons.birth_date), format_dates(yy, mm, dd)])

    # --- names ---
    # the persons' names as Arrow arrays: per-person tests and splits without a Python loop
    last_name = pa.array(persons.last_name, pa.string())
    usage_name = pa.array(persons.usage_name, pa.string())
    first_names = pa.array(persons.first_names, pa.string())
    has_usage = usage_name.is_valid().to_numpy(zero_copy_only=False)[vp]
    declare_usage = has_usage & (rng.random(v) < noise.usage_name)
    several = pc.match_substring(first_names, " ").to_numpy(zero_copy_only=False)
    all_first = (rng.random(v) < noise.all_first_names) & several[vp]
    last_idx = np.where(declare_usage, n + vp, vp).astype(np.int64)
    first_idx = np.where(all_first, n + vp, vp).astype(np.int64)
    typo_l = used & (rng.random(v) < noise.name_typo)
    typo_f = used & (rng.random(v) < noise.first_name_typo)
    swapped = used & (rng.random(v) < noise.names_swapped)
    casing = used & (rng.random(v) < noise.case_and_spacing)
    accents = used & (rng.random(v) < noise.accents_lost)
    last_base = pa.concat_arrays([last_name, pc.coalesce(usage_name, last_name)])
    first_base = pa.concat_arrays([first_token(first_names), first_names])
    has_accent_f = ~pc.string_is_ascii(first_base).to_numpy(zero_copy_only=False)
    accents &= has_accent_f[first_idx]
    drawn = typo_l | typo_f | swapped | casing  # the versions whose noise draws from rng
    touched = np.flatnonzero(drawn | accents)
    # the typos' and case changes' choices: uniforms drawn at once, one row per drawn version;
    # the strings edited by one kernel pass (_typos.py, the rules of _typo and _case_spacing)
    is_drawn = drawn[touched]
    u = rng.random((int(is_drawn.sum()), 8))
    draw_row = np.where(is_drawn, np.cumsum(is_drawn) - 1, -1)
    flags = (typo_l[touched] * TYPO_LAST | typo_f[touched] * TYPO_FIRST | swapped[touched] * SWAPPED
             | casing[touched] * CASING | accents[touched] * STRIP_ACCENTS).astype(np.int8)
    custom_last, custom_first = noisy_names(last_base, first_base, last_idx[touched], first_idx[touched], flags,
                                            draw_row, u)
    last_idx[touched] = 2 * n + np.arange(len(touched))
    first_idx[touched] = 2 * n + np.arange(len(touched))
    last_dict = pa.concat_arrays([last_base, custom_last])
    first_dict = pa.concat_arrays([first_base, custom_first])
    return DeclaredIdentities(nir_idx, nir_dict, last_idx, last_dict, first_idx, first_dict, birth_idx, birth_dict,
                              nir_noise, other_person)


def _plain(arr):
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
