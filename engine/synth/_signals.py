"""Cases planted for the signals stage, and their truth.

Planting draws from its own random stream (``SeedSequence([seed, block, 14])``, and for the
employers ``[seed, 14]``, the same in every block), so the rest of a block is unchanged by it;
the planted rows are made with the others, by the resource kernel (``planting_plan`` says what it
plants for each person). What is planted (rates are settings, ``nirlink.synth.*``):

- ``dead-income-rate``: of the persons who die within the resource window and have resource
  rows, this share keep receiving their last monthly payment 1-6 months after the death month.
  (The career model makes no row starting after the death month, though it places short
  periods anywhere in the year: engine/synth/_expand.py.)
- ``non-take-up-rate``: of the persons alive at the last resource month and past the age of
  the automatic full rate of their cohort, this share have no ``pension`` row at all.
- ``minimum-benefit-rate``: of the persons aged 65+ at the last resource month whose last
  12 months of resources are below the ASPA ceiling, this share receive the minimum benefit
  (``minimum_old_age_benefit`` rows topping each month up to the monthly ceiling).
- ``bad-declarant-rate``: round(rate x employers) employers declare badly: their identity
  versions draw the NIR noise at ``bad-declarant-noise-scale`` times the normal rates (0.424
  of their persons instead of 0.053 at the default rates). They are drawn among the larger half
  of the employer pool: an employer declares each person's identity once and repeats it, so
  the evidence is its number of persons, and the smaller half declare 30-75 persons each (at
  any size from 10,000 persons), where 40% of problem persons cannot be told from chance among
  thousands of declarants (the scorecard's z, engine/stages/_signals_scorecard.py, of a bad
  declarant of 30 persons falls to ~2 two standard deviations below its mean, a level a few
  of 4,000 small good declarants reach by chance).
- shared NIRs come from the noise model's ``other-person-nir`` (a valid NIR of another person).

Truth (``truth/signals/part-<block>.parquet``: rule, true person, declarant): each
person-level rule applied to the true data of the block (every row with its true person, the
true register), so that the stage's precision and recall measure what linkage does to the
signals; and the planted bad employers (``declarant_quality``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

from nirlink.engine.reference._tables import aspa_table, cohort_table
from nirlink.kernels._dates import month_index

__all__ = ["bad_employers", "planting_plan", "signal_truth", "TRUTH_SCHEMA"]

PENSION, MINIMUM = 1, 5  # indices in _records.RESOURCE_KINDS
TRUTH_SCHEMA = pa.schema([pa.field("rule", pa.string(), nullable=False), pa.field("person", pa.string()),
                          pa.field("declarant", pa.string())])


def _month(days) -> np.ndarray:
    """Absolute month index (year * 12 + month - 1) of day counts since 1970-01-01."""
    return month_index(np.asarray(days))


def bad_employers(seed: int, n_employers: int, rate: float) -> np.ndarray:
    """Pool indices of the employers with bad practices (the same in every block): exactly
    round(rate x employers), drawn among the larger half of the pool (indices below
    n_employers / 2: the pool's employers are drawn with decreasing probability, so these
    declare the most persons, 75 and more of them from 10,000 persons up)."""
    k = int(round(rate * n_employers))
    larger = max(1, n_employers // 2)
    if k <= 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 14]))
    return np.sort(rng.choice(larger, size=min(k, larger), replace=False)).astype(np.int64)


def _ages(persons, as_of: int) -> np.ndarray:
    bm = np.where((persons.birth_month >= 1) & (persons.birth_month <= 12), persons.birth_month, 1).astype(np.int64)
    return as_of - (persons.birth_year.astype(np.int64) * 12 + bm - 1)


def _alive(persons, as_of: int) -> np.ndarray:
    d = persons.death_ordinal
    return (d < 0) | (_month(np.maximum(d, 0)) > as_of)


def planting_plan(rng, persons, *, p, first_month: int, last_month: int):
    """What the planting does to each person's resources, drawn from the planting's stream
    (the rows are made by engine/synth/_expand.py's ``draw_resources``): whether their base
    pension is dropped (non-take-up), their death month and for how many months their last
    payment goes on after it (0: none; the kernel plants it only for a person who has rows),
    whether their low resources are topped up, and the yearly ceiling of the top-up."""
    n = len(persons)
    death = persons.death_ordinal
    dm = np.where(death >= 0, _month(np.maximum(death, 0)), -1).astype(np.int64)
    u_dead, k, u_take_up, u_minimum = rng.random(n), rng.integers(1, 7, n), rng.random(n), rng.random(n)
    # income after death: the last payment repeated 1-6 months after the death month
    dead = (dm >= first_month) & (dm < last_month) & (u_dead < p.dead_income_rate)
    dead_months = np.where(dead, np.minimum(k, last_month - dm), 0).astype(np.int64)
    # non-take-up: past the full-rate age, alive, no pension row at all
    ct = cohort_table()
    age = _ages(persons, last_month)
    by = np.clip(persons.birth_year, 1900, 2030)
    alive = _alive(persons, last_month)
    drop_pension = alive & (age >= ct.full_rate_age(by, persons.birth_month)) & (u_take_up < p.non_take_up_rate)
    # minimum benefit: top up the low resources of some persons aged 65+
    ceiling = aspa_table().yearly_ceiling([last_month])[0]
    top_up = alive & (age >= 65 * 12) & (u_minimum < p.minimum_benefit_rate) & (not np.isnan(ceiling))
    return drop_pension, dm, dead_months, top_up, 0.0 if np.isnan(ceiling) else float(ceiling)


@njit(nogil=True, cache=True)
def _in_order(person, period) -> bool:
    """Whether the rows are sorted by person, then period."""
    for i in range(1, person.shape[0]):
        if person[i] < person[i - 1] or (person[i] == person[i - 1] and period[i] < period[i - 1]):
            return False
    return True


@njit(nogil=True, cache=True)
def _person_facts(n, death_month, person, month, kind, amount, career_person, career_month, window_after):
    """Per person, from the rows of a block: income after the death month (resource or career
    row), any row, a pension and a minimum benefit in the window (months after
    ``window_after``), and the window's income in cents (summed in row order)."""
    after = np.zeros(n, np.bool_)
    has_rows = np.zeros(n, np.bool_)
    pension = np.zeros(n, np.bool_)
    minimum = np.zeros(n, np.bool_)
    income = np.zeros(n, np.float64)
    for i in range(person.shape[0]):
        p = person[i]
        has_rows[p] = True
        if month[i] > death_month[p]:
            after[p] = True
        if month[i] > window_after:
            income[p] += np.rint(amount[i] * 100)
            if kind[i] == PENSION:
                pension[p] = True
            elif kind[i] == MINIMUM:
                minimum[p] = True
    for i in range(career_person.shape[0]):
        p = career_person[i]
        has_rows[p] = True
        if career_month[i] > death_month[p]:
            after[p] = True
    return after, has_rows, pension, minimum, income


def signal_truth(persons, careers_person, careers_start, res: dict, versions_person, nir_noise, other_person,
                 used, *, last_month: int, bad_sirets: pa.Array | None) -> pa.Table:
    """The person-level rules on the true data of a block, and the planted bad declarants."""
    n = len(persons)
    out_rule, out_person = [], []

    def add(rule, mask):
        idx = np.flatnonzero(mask)
        out_rule.extend([rule] * len(idx))
        out_person.append(idx)

    death = persons.death_ordinal
    dm = np.where(death >= 0, _month(np.maximum(death, 0)), np.iinfo(np.int64).max)
    r_month = _month(res["period"])
    after, has_rows, pension, minimum, income = _person_facts(
        n, dm, np.ascontiguousarray(res["person"]), r_month, np.ascontiguousarray(res["kind"]),
        np.ascontiguousarray(res["amount"], np.float64), np.ascontiguousarray(careers_person),
        _month(careers_start), last_month - 12)
    add("income_after_death", after)
    # other-person NIR: the declaring person (identity_conflict) and the NIR's owner (nir_shared)
    op = (nir_noise == 4) & used
    add("identity_conflict", np.bincount(versions_person[op], minlength=n) > 0)
    owners = other_person[op]
    add("nir_shared", (np.bincount(owners[owners >= 0], minlength=n) > 0) & has_rows)
    alive = _alive(persons, last_month)
    age = _ages(persons, last_month)
    ct = cohort_table()
    by = np.clip(persons.birth_year, 1900, 2030)
    # the quarters path of the full rate cannot occur here: careers from 1990 give at most 144
    # quarters, fewer than any cohort needs; the age path is what the synthetic data exercise
    add("possible_pension_non_take_up", alive & (age >= ct.legal_age(by, persons.birth_month))
        & (age >= ct.full_rate_age(by, persons.birth_month)) & ~pension)
    ceiling = aspa_table().yearly_ceiling([last_month])[0]
    if not np.isnan(ceiling):
        income = income / 100
        add("low_resources_no_minimum", alive & (age >= 65 * 12) & (income < ceiling) & ~minimum)
    idx = np.concatenate(out_person) if out_person else np.zeros(0, np.int64)
    persons_col = persons.nir.take(pa.array(idx.astype(np.int64)))
    rule = pa.array(out_rule, pa.string())
    decl = pa.nulls(len(idx), pa.string())
    if bad_sirets is not None and len(bad_sirets):
        rule = pa.concat_arrays([rule, pa.array(["declarant_quality"] * len(bad_sirets))])
        persons_col = pa.concat_arrays([persons_col, pa.nulls(len(bad_sirets), pa.string())])
        decl = pa.concat_arrays([decl, bad_sirets.cast(pa.string())])
    return pa.table({"rule": rule, "person": persons_col, "declarant": decl}, schema=TRUTH_SCHEMA)
