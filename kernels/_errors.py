"""The nirlink exception tree.

It lives in the lowest package (kernels/) so that every layer can raise it; engine/
re-exports it. Every category also subclasses the matching built-in, so callers that
only know Python's exceptions still catch them (``except ValueError`` catches a
``SchemaError``). All of them pickle: they cross Dask worker processes intact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "describe_error",
    "hide_quoted_values",
    "NirlinkError",
    "SpecError",
    "SchemaError",
    "InputError",
    "InputFileError",
    "ReferenceDataError",
    "ModelError",
    "ClusterError",
    "JobError",
    "StageError",
    "JobCancelled",
]


class NirlinkError(Exception):
    """Root of every error nirlink raises on purpose."""

    def __reduce__(self):
        # Exception pickles as cls(*self.args); subclasses with keyword state override.
        return (self.__class__, self.args)


class SpecError(NirlinkError, ValueError):
    """A job file or model file is invalid. Carries every problem found, with its field path.

    ``errors`` is a list of ``(path, message)``; ``str()`` lists them all, one per line,
    so an operator fixes the whole file in one pass.
    """

    def __init__(self, errors: Iterable[tuple[str, str]] | str, *, source: str | None = None):
        if isinstance(errors, str):
            errors = [("", errors)]
        self.errors: list[tuple[str, str]] = [(str(p), str(m)) for p, m in errors]
        self.source = source
        head = f"{source}: " if source else ""
        lines = [f"{p}: {m}" if p else m for p, m in self.errors]
        if len(lines) == 1:
            text = head + lines[0]
        else:
            text = head + f"{len(lines)} errors\n" + "\n".join("  " + line for line in lines)
        super().__init__(text)

    def __reduce__(self):
        return (_rebuild_spec_error, (self.errors, self.source))


def _rebuild_spec_error(errors, source):
    return SpecError(errors, source=source)


class SchemaError(NirlinkError, ValueError):
    """A dataset does not have the columns or types nirlink expects."""


class InputError(NirlinkError, ValueError):
    """A value handed to nirlink is not acceptable (wrapper argument checks, bad rows)."""


class InputFileError(NirlinkError, OSError):
    """An input file cannot be read at all (missing, truncated, wrong encoding)."""


class ReferenceDataError(NirlinkError, LookupError):
    """A value falls outside the reference tables (for example a year without a PASS)."""


class ModelError(NirlinkError, ValueError):
    """A linkage model is missing, malformed or untrained."""


class ClusterError(NirlinkError, ConnectionError):
    """The Dask cluster cannot be reached or behaves unexpectedly."""


class JobError(NirlinkError, RuntimeError):
    """A job cannot run or failed."""


class StageError(JobError):
    """A stage of a job failed; the message names the stage."""


class JobCancelled(JobError):
    """The job was cancelled by an operator."""


def check_amounts(values, rows, *, where: str, what: str) -> None:
    """Raise InputError naming the first row (among ``rows``, a boolean mask) whose amount is
    not a finite number or is negative: kernels sum amounts in cents and would silently
    carry a NaN or a negative value through every total."""
    import numpy as np

    bad = rows & ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{where}: {what} must be a finite number; {float(values[i])!r} at row {i} "
                         f"({int(bad.sum())} such rows)")
    neg = rows & (values < 0)
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise InputError(f"{where}: {what} must be >= 0; {float(values[i])!r} at row {i} ({int(neg.sum())} negative rows)")


def format_values(values: Sequence[object], limit: int = 5) -> str:
    """First few offending values for an error message (never more than ``limit``)."""
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    more = len(values) - limit
    return shown + (f" (and {more} more)" if more > 0 else "")


def describe_error(exc: BaseException) -> str:
    """How an exception reads to an operator: nirlink's own message; for an OS error its
    reason and the file; for anything else its first line, marked as unexpected. Never a
    Python class name (``ValueError: ...`` tells an operator nothing)."""
    if isinstance(exc, NirlinkError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror.lower()}{where}"
    text = hide_quoted_values(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    return f"unexpected failure: {text or 'no message'} (--debug or the job log's traceback shows where)"


def hide_quoted_values(text: str) -> str:
    """A library quoting the value it choked on (DuckDB: ``Could not convert string 'DUPUY'``)
    may be quoting a person's name or birth date: quoted identifiers (lower-case names, keys)
    and absolute paths stay, any other quoted text becomes '...'."""
    import re

    return re.sub(r"(['\"])(.*?)\1", lambda m: m.group(0) if re.fullmatch(r"[a-z_][a-z0-9_.-]*|/\S*", m.group(2))
                  else f"{m.group(1)}...{m.group(1)}", text)
