"""What a synthetic dataset says of itself (its ``_synth.json``): a base written by
`nirlink synth --persons`, or a monthly increment written by `--increment-of`; months as
``YYYY-MM`` parsed strictly.

A chain is base -> increment 1 -> increment 2 ...: each increment names the dataset it
builds on (``increment_of``, an absolute path) and its month, later than the month the
dataset it builds on ends with (a base's last month of careers and resources, an
increment's own month).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from nirlink.kernels import InputError

from ._params import NoiseRates, SynthParams

__all__ = ["Described", "describe", "parse_month", "format_month", "month_tag"]

_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
SYNTH_FILE = "_synth.json"


def parse_month(text: str, *, what: str = "--month") -> int:
    """Months since year 0 (year * 12 + month - 1) of a ``YYYY-MM`` string; anything else
    (``2026-1``, ``2026-13``, ``2026-01-01``, blanks) is refused naming ``what``."""
    m = _MONTH.fullmatch(text) if isinstance(text, str) else None
    if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) == 0:
        raise InputError(f"{what} must be a month as YYYY-MM (e.g. 2026-01), got {text!r}")
    return int(m.group(1)) * 12 + int(m.group(2)) - 1


def format_month(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def month_tag(month: int) -> int:
    """The block number of an increment's rows and identity versions: above any base block
    (bases have fewer than 65,536 blocks), one per month, so record ids stay unique in a chain."""
    return (1 << 16) + month


@dataclass(frozen=True)
class Described:
    root: Path  # absolute
    summary: dict[str, Any]
    params: SynthParams
    base_persons: int  # persons of the base (the employer pool's size depends on it)
    last_month: int  # the month the dataset ends with (parse_month's index)
    increment_of: Path | None
    month: int | None  # an increment's month

    @property
    def register_files(self) -> list[str]:
        return sorted(p.name for p in (self.root / "register").glob("part-*.parquet"))

    def chain(self) -> list[Described]:
        """The base, then every increment up to this dataset."""
        out = [self]
        while out[0].increment_of is not None:
            out.insert(0, describe(out[0].increment_of, what=f"the dataset {out[0].root} builds on"))
            if len(out) > 10_000:
                raise InputError(f"{self.root}: its chain of increments does not end with a base")
        return out


def _params(raw: dict[str, Any], path: Path) -> SynthParams:
    try:
        noise = NoiseRates(**raw.get("noise", {}))
        known = {f.name for f in fields(SynthParams)} - {"noise"}
        return SynthParams(**{k: v for k, v in raw.items() if k in known}, noise=noise)
    except TypeError as e:
        raise InputError(f"{path}: 'params' does not describe nirlink synth's settings ({e})") from None


def describe(root: str | os.PathLike, *, what: str = "--increment-of") -> Described:
    """Read ``root/_synth.json``; a clear error naming ``what`` when ``root`` is missing or not
    a dataset nirlink synth wrote."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise InputError(f"{what}: {root} does not exist or is not a directory")
    path = root / SYNTH_FILE
    if not path.is_file():
        raise InputError(f"{what}: {root} is not a synthetic dataset written by nirlink synth (no {SYNTH_FILE})")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{what}: {path} cannot be read as JSON ({e})") from None
    missing = [k for k in ("params", "persons", "seed") if k not in summary]
    if not isinstance(summary, dict) or missing:
        raise InputError(f"{what}: {path} lacks {', '.join(missing) or 'its fields'} (not written by nirlink synth)")
    for name in ("register", "career", "resource", "truth"):
        if not (root / name).is_dir():
            raise InputError(f"{what}: {root} has no {name}/ directory (not a complete synthetic dataset)")
    params = _params(summary["params"], path)
    if summary.get("increment_of"):
        month = parse_month(summary.get("month", ""), what=f"{path}: month")
        return Described(root, summary, params, int(summary["base_persons"]), month,
                         Path(summary["increment_of"]), month)
    if summary.get("union_of"):  # a union (engine/synth/_union.py) ends with its last increment's month
        last = parse_month(summary.get("last_month", ""), what=f"{path}: last_month")
        return Described(root, summary, params, int(summary["base_persons"]), last, None, None)
    last = max(parse_month(params.last_resource_month, what=f"{path}: last-resource-month"),
               params.last_career_year * 12 + 11)
    return Described(root, summary, params, int(summary["persons"]), last, None, None)
