"""Settings of the synthetic data: sizes, periods and the noise model's rates
(nirlink.synth.*), validated with every error at once."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from nirlink.engine import _config
from nirlink.kernels import InputError

__all__ = ["NoiseRates", "SynthParams"]


def _key(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True)
class NoiseRates:
    missing_nir: float = 0.03
    wrong_key: float = 0.01
    transposed_digits: float = 0.005
    other_person_nir: float = 0.003
    nir_without_key: float = 0.005
    name_typo: float = 0.03
    first_name_typo: float = 0.02
    accents_lost: float = 0.3
    names_swapped: float = 0.01
    usage_name: float = 0.5
    all_first_names: float = 0.2
    day_month_swapped: float = 0.01
    birth_year_off: float = 0.01
    case_and_spacing: float = 0.05

    def scaled(self, factor: float) -> NoiseRates:
        """Every error rate times ``factor`` (capped at 1); behaviours (usage name, all first names) unchanged."""
        keep = {"usage_name", "all_first_names"}
        return NoiseRates(**{f.name: getattr(self, f.name) if f.name in keep else min(1.0, getattr(self, f.name) * factor)
                             for f in fields(self)})


@dataclass(frozen=True)
class SynthParams:
    seed: int = 0
    career_rows_per_person: float = 37
    resource_rows_per_person: float = 90
    first_career_year: int = 1990
    last_career_year: int = 2025
    first_resource_month: str = "2019-01"
    last_resource_month: str = "2025-12"
    born_abroad_share: float = 0.08
    overseas_share: float = 0.03
    unknown_month_share: float = 0.005
    temporary_share: float = 0.03
    register_duplicate_rate: float = 0.01
    employers_per_1000_persons: float = 40
    dead_income_rate: float = 0.3  # persons dying in the resource window paid 1-6 months after death
    non_take_up_rate: float = 0.05  # persons past the full-rate age with no pension row
    minimum_benefit_rate: float = 0.5  # persons 65+ under the ASPA ceiling who receive the minimum benefit
    bad_declarant_rate: float = 0.01  # employers with bad practices
    bad_declarant_noise_scale: float = 8.0  # their NIR error rates, times this
    noise: NoiseRates = field(default_factory=NoiseRates)

    @classmethod
    def from_config(cls, **overrides: Any) -> SynthParams:
        """Parameters from dask.config ``nirlink.synth`` with keyword overrides."""
        conf = dict(_config.get("synth") or {})
        noise_conf = dict(conf.pop("noise", {}) or {})
        kwargs = {}
        for f in fields(cls):
            if f.name == "noise":
                continue
            if _key(f.name) in conf:
                kwargs[f.name] = conf[_key(f.name)]
        noise = NoiseRates(**{f.name: float(noise_conf[_key(f.name)]) for f in fields(NoiseRates) if _key(f.name) in noise_conf})
        kwargs["noise"] = noise
        kwargs.update(overrides)
        params = cls(**kwargs)
        params.check()
        return params

    def check(self) -> None:
        errors = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("share") or f.name.endswith("rate"):
                if not 0 <= v <= 1:
                    errors.append(f"{_key(f.name)} must be within [0, 1], got {v!r}")
        for f in fields(self.noise):
            v = getattr(self.noise, f.name)
            if not 0 <= v <= 1:
                errors.append(f"noise.{_key(f.name)} must be within [0, 1], got {v!r}")
        if sum(getattr(self.noise, k) for k in ("missing_nir", "wrong_key", "transposed_digits", "other_person_nir",
                                                  "nir_without_key")) > 1:
            errors.append("the NIR noise rates (missing, wrong key, transposed, other person, without key) sum above 1")
        nir_rates = sum(getattr(self.noise, k) for k in ("missing_nir", "wrong_key", "transposed_digits",
                                                          "other_person_nir", "nir_without_key"))
        if self.bad_declarant_noise_scale < 1 or nir_rates * self.bad_declarant_noise_scale > 1:
            errors.append("bad-declarant-noise-scale must be >= 1 and keep the NIR noise rates times it within 1")
        if self.temporary_share > self.born_abroad_share or self.unknown_month_share > self.born_abroad_share:
            errors.append("temporary-share and unknown-month-share must not exceed born-abroad-share")
        if self.born_abroad_share + self.overseas_share > 1:
            errors.append("born-abroad-share + overseas-share must not exceed 1")
        if not 1990 <= self.first_career_year <= self.last_career_year <= 2026:
            errors.append("careers must lie within 1990-2026 (the reference tables) with first <= last")
        for name in ("first_resource_month", "last_resource_month"):
            text = getattr(self, name)
            try:
                y, m = (int(x) for x in text.split("-"))
                if not (1990 <= y <= 2026 and 1 <= m <= 12):
                    raise ValueError
            except ValueError:
                errors.append(f"{_key(name)} must be YYYY-MM within 1990-2026, got {text!r}")
        if self.career_rows_per_person < 0 or self.resource_rows_per_person < 0:
            errors.append("rows per person must be >= 0")
        if errors:
            raise InputError("invalid synthetic data settings: " + "; ".join(errors))


