"""How the report writes numbers: one function per kind of quantity, used by every section.

Counts with a thousands separator (``12,345``), seconds with one decimal (``5.9 s``, minutes
past 100 s: ``12 min 05 s``), shares as percentages with two decimals (``99.96 %``), euros
as whole amounts (``23,410 €``), probabilities with four significant digits, dates in the
machine's time zone with its offset.
"""

from __future__ import annotations

import html
import math
import time
from typing import Any

__all__ = ["Raw", "count", "seconds", "share", "euros", "probability", "decimal", "when", "cell", "table"]

_DASH = "–"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def count(v: Any) -> str:
    return _DASH if _missing(v) else f"{int(v):,}"


def seconds(v: Any) -> str:
    if _missing(v):
        return _DASH
    v = float(v)
    if v < 100:
        return f"{v:.1f} s"
    m, s = divmod(round(v), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def share(part: Any, whole: Any) -> str:
    if _missing(part) or _missing(whole) or not whole:
        return _DASH
    return f"{100.0 * float(part) / float(whole):.2f} %"


def euros(v: Any) -> str:
    return _DASH if _missing(v) else f"{round(float(v)):,} €"


def probability(v: Any) -> str:
    return _DASH if _missing(v) else f"{float(v):.4g}"


def decimal(v: Any, digits: int = 1) -> str:
    return _DASH if _missing(v) else f"{float(v):,.{digits}f}"


def when(ts: Any) -> str:
    """A Unix time as ``2026-12-02 00:40:49 +0100``."""
    if _missing(ts):
        return _DASH
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(float(ts)))


class Raw(str):
    """Already HTML: put in a cell as is."""


def cell(v: Any) -> str:
    """A table cell: ints as counts, floats with two decimals, text escaped, Raw as is."""
    if isinstance(v, Raw):
        return v
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return count(v)
    if isinstance(v, float):
        return decimal(v, 2)
    return html.escape(_DASH if v is None else str(v))


def table(headers: list[str], rows: list[list[Any]], *, css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers) if any(headers) else ""
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    cls = f" class='{css}'" if css else ""
    return f"<table{cls}>" + (f"<tr>{head}</tr>" if head else "") + f"{body}</table>"
