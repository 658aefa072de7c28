"""Settings of the signals stage and the schemas of its case datasets.

Every setting has a documented default (README, "Signals"); each case row carries, in its
``settings`` column, the values of the settings its rule read (JSON, keys sorted).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import pyarrow as pa

__all__ = ["SignalSettings", "PERSON_RULES", "RULES", "RULE_SETTINGS", "CASE_SCHEMAS", "settings_label", "VALID"]

PERSON_RULES = ("income_after_death", "identity_conflict", "possible_pension_non_take_up",
                "low_resources_no_minimum")
RULES = ("income_after_death", "nir_shared", "identity_conflict", "possible_pension_non_take_up",
         "low_resources_no_minimum", "declarant_quality")
VALID = ("valid", "valid_temporary")


@dataclass(frozen=True)
class SignalSettings:
    """Thresholds and windows of the rules (job file ``[signals]``; defaults documented in the README)."""

    as_of_month: str | None = None  # YYYY-MM judged by the non-take-up and low-resources rules; None: latest resource month
    death_grace_months: int = 0  # income of the months after death + this many is a case
    pension_window_months: int = 12  # no pension declared in this many months up to as_of
    pension_kinds: tuple[str, ...] = ("pension",)
    low_resources_age: int = 65
    low_resources_window_months: int = 12
    minimum_benefit_kind: str = "minimum_old_age_benefit"
    min_declarant_rows: int = 100  # declarants with fewer rows are not ranked
    declarant_excess_ratio: float = 2.0  # ranked on the evidence that their problem share exceeds this x the population's
    max_record_ids: int = 20

    def check(self) -> list[tuple[str, str]]:
        errors = []
        if self.as_of_month is not None:
            try:
                y, m = (int(x) for x in self.as_of_month.split("-"))
                if not (1990 <= y <= 2100 and 1 <= m <= 12):
                    raise ValueError
            except (ValueError, AttributeError):
                errors.append(("signals.as_of_month", f"expected YYYY-MM, got {self.as_of_month!r}"))
        for name in ("death_grace_months", "min_declarant_rows"):
            if getattr(self, name) < 0:
                errors.append((f"signals.{name}", f"must be >= 0, got {getattr(self, name)}"))
        if not 1.0 <= self.declarant_excess_ratio <= 100.0:
            errors.append(("signals.declarant_excess_ratio", f"must be within [1, 100], got {self.declarant_excess_ratio}"))
        for name in ("pension_window_months", "low_resources_window_months", "max_record_ids", "low_resources_age"):
            if getattr(self, name) < 1:
                errors.append((f"signals.{name}", f"must be >= 1, got {getattr(self, name)}"))
        return errors

    def as_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


# the settings each rule reads: written into every case row of the rule
RULE_SETTINGS = {
    "income_after_death": ("death_grace_months",),
    "identity_conflict": (),
    "nir_shared": (),
    "possible_pension_non_take_up": ("as_of_month", "pension_window_months", "pension_kinds"),
    "low_resources_no_minimum": ("as_of_month", "low_resources_age", "low_resources_window_months",
                                 "minimum_benefit_kind"),
    "declarant_quality": ("min_declarant_rows", "declarant_excess_ratio"),
}


def settings_label(rule: str, s: SignalSettings, as_of: int | None = None) -> str:
    values = {k: getattr(s, k) for k in RULE_SETTINGS[rule]}
    if "as_of_month" in values and as_of is not None:
        values["as_of_month"] = f"{as_of // 12:04d}-{as_of % 12 + 1:02d}"
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}, sort_keys=True,
                      separators=(",", ":"))


_COMMON = [pa.field("person", pa.string(), nullable=False), pa.field("rule", pa.string(), nullable=False),
           pa.field("period", pa.date32(), nullable=False), pa.field("score", pa.float64(), nullable=False),
           pa.field("settings", pa.string(), nullable=False), pa.field("rows", pa.int32(), nullable=False),
           pa.field("record_ids", pa.list_(pa.int64()), nullable=False)]
CASE_SCHEMAS = {
    "income_after_death": pa.schema(_COMMON + [
        pa.field("death_date", pa.date32(), nullable=False), pa.field("first_period", pa.date32(), nullable=False),
        pa.field("last_period", pa.date32(), nullable=False), pa.field("months_after_death", pa.int16(), nullable=False),
        pa.field("amount", pa.float64(), nullable=False), pa.field("career_rows", pa.int32(), nullable=False),
        pa.field("resource_rows", pa.int32(), nullable=False)]),
    "identity_conflict": pa.schema(_COMMON + [
        pa.field("nir_owner", pa.string(), nullable=False), pa.field("first_period", pa.date32(), nullable=False),
        pa.field("last_period", pa.date32(), nullable=False), pa.field("amount", pa.float64(), nullable=False),
        pa.field("link_method", pa.string())]),
    "nir_shared": pa.schema(_COMMON + [
        pa.field("persons", pa.int32(), nullable=False), pa.field("other_persons", pa.list_(pa.string()), nullable=False)]),
    "possible_pension_non_take_up": pa.schema(_COMMON + [
        pa.field("birth_year", pa.int16(), nullable=False), pa.field("age_months", pa.int16(), nullable=False),
        pa.field("legal_age_months", pa.int16(), nullable=False), pa.field("quarters", pa.int32(), nullable=False),
        pa.field("quarters_required", pa.int16(), nullable=False), pa.field("full_rate_by", pa.string(), nullable=False)]),
    "low_resources_no_minimum": pa.schema(_COMMON + [
        pa.field("age_months", pa.int16(), nullable=False), pa.field("income_12m", pa.float64(), nullable=False),
        pa.field("ceiling_12m", pa.float64(), nullable=False), pa.field("months_with_income", pa.int16(), nullable=False)]),
}
