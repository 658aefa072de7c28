"""Job files (TOML): what an operator writes, validated before anything runs.

Every problem is collected with its field path and raised at once as a SpecError. See the
README ("Job files") for the format; `nirlink job check FILE` runs this validation alone.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nirlink.engine.io._readers import UNREAD_FILE, CsvOptions, InputSpec, expand_paths, unread_files
from nirlink.engine.io._schemas import COLUMNS, INPUT_KINDS
from nirlink.kernels import SpecError

__all__ = ["JobSpec", "load_job", "parse_job", "STAGES", "DEFAULT_STAGES", "review_month_problem"]

STAGES = ("ingest", "link", "attach", "aggregate", "signals", "export")
DEFAULT_STAGES = ("ingest", "link", "attach", "aggregate", "export")  # signals is asked for by name


@dataclass(frozen=True)
class LinkageOptions:
    model: str | None = None
    register_model: str | None = None
    threshold: float | None = None
    margin: float | None = None
    none_weight: float | None = None
    decisions: str | None = None  # clerical decisions (CSV), honoured as method "clerical"


@dataclass(frozen=True)
class OutputOptions:
    directory: str = ""
    pseudonymise: bool = False
    key_env: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class ClusterOptions:
    address: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | None = None


@dataclass(frozen=True)
class JobSpec:
    name: str
    path: str
    stages: tuple[str, ...]
    inputs: tuple[InputSpec, ...]
    linkage: LinkageOptions = field(default_factory=LinkageOptions)
    first_review_month: str = "2021-01"
    output: OutputOptions = field(default_factory=OutputOptions)
    signals: Any = None  # SignalSettings (engine/stages/_signals_rules.py) when [signals] or the stage is given
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    text: str = ""
    increment: Any = None  # IncrementOptions (engine/jobs/_increment.py) when the job continues a previous one

    @property
    def directory(self) -> Path:
        return Path(self.output.directory)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


_TOP = {"job", "inputs", "linkage", "aggregate", "signals", "output", "cluster", "increment"}
_JOB = {"name", "stages"}
_INPUT = {"name", "kind", "paths", "format", "columns", "csv"}
_CSV = {"separator", "encoding", "decimal", "quote"}
_LINKAGE = {"model", "register_model", "threshold", "margin", "none_weight", "decisions"}
_AGGREGATE = {"first_review_month"}
_OUTPUT = {"directory", "pseudonymise", "key_env", "key_file"}
_CLUSTER = {"address", "workers", "threads_per_worker", "memory_limit"}


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "a table"}


def _toml_text(value: Any) -> str:
    """A value as it reads in TOML (true, "text", [1, 2]), not as Python spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value).replace("'", '"') if isinstance(value, (str, list)) else repr(value)


class _Checker:
    def __init__(self):
        self.errors: list[tuple[str, str]] = []

    def err(self, path: str, msg: str) -> None:
        self.errors.append((path, msg))

    def keys(self, table: Any, allowed: set[str], path: str) -> dict:
        if not isinstance(table, dict):
            self.err(path, f"expected a table, got {type(table).__name__}")
            return {}
        for k in table:
            if k not in allowed:
                self.err(f"{path}.{k}" if path else k, f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return table

    def typed(self, table: dict, key: str, typ, path: str, *, required: bool = False, default=None):
        full = f"{path}.{key}" if path else key
        if key not in table:
            if required:
                self.err(full, "missing")
            return default
        value = table[key]
        ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            names = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in (typ if isinstance(typ, tuple) else (typ,)))
            self.err(full, f"expected {names}, got {_toml_text(value)}")
            return default
        return value


def _base(path: Path) -> Path:
    return path.parent if path.name else Path(".")


def parse_job(text: str, *, path: str = "job.toml", check_files: bool = True) -> JobSpec:
    """Parse and validate a job file's text; relative paths are relative to the file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([("", f"not valid TOML: {exc}")], source=path) from None
    c = _Checker()
    base = _base(Path(path))
    c.keys(data, _TOP, "")
    job = c.keys(data.get("job", {}), _JOB, "job")
    name = c.typed(job, "name", str, "job", required=True, default="job")
    if isinstance(name, str) and (not name or not all(ch.isalnum() or ch in "-_." for ch in name)
                                  or not name[0].isalnum()):
        # it begins every job id: an id beginning with '-' reads as an option on a command line
        c.err("job.name", f"use letters, digits, '-', '_' or '.' only, first a letter or digit, got {name!r}")
    stages = c.typed(job, "stages", list, "job", default=list(DEFAULT_STAGES))
    if isinstance(stages, list) and not stages:
        c.err("job.stages", f"at least one stage (of: {', '.join(STAGES)}); leave the key out for the default")
    stages = [s for s in stages if isinstance(s, str)] if stages else []
    for i, s in enumerate(stages):
        if s not in STAGES:
            c.err(f"job.stages[{i}]", f"unknown stage {s!r} (expected one of: {', '.join(STAGES)})")
    order = [s for s in STAGES if s in stages]
    if stages and stages != order:
        c.err("job.stages", f"stages must follow the order {', '.join(STAGES)}")

    raw_inputs = data.get("inputs", [])
    if not isinstance(raw_inputs, list) or not raw_inputs:
        c.err("inputs", "at least one [[inputs]] table is required")
        raw_inputs = [] if not isinstance(raw_inputs, list) else raw_inputs
    inputs: list[InputSpec] = []
    names = []
    for i, raw in enumerate(raw_inputs):
        p = f"inputs[{i}]"
        raw = c.keys(raw, _INPUT, p)
        iname = c.typed(raw, "name", str, p, required=True, default=f"input{i}")
        if iname and (not all(ch.isalnum() or ch in "-_." for ch in iname) or iname[0] in "._" or iname in ("rejects", "identities")):
            c.err(f"{p}.name", "use letters, digits, '-', '_' or '.' only, not first '.' or '_', not 'rejects' or "
                               "'identities' "
                               f"(it names directories), got {iname!r}")
        kind = c.typed(raw, "kind", str, p, required=True, default="career")
        if kind not in INPUT_KINDS:
            c.err(f"{p}.kind", f"must be one of {', '.join(INPUT_KINDS)}, got {kind!r}")
            kind = "career"
        if iname in names:
            c.err(f"{p}.name", f"duplicate input name {iname!r}")
        names.append(iname)
        paths = c.typed(raw, "paths", list, p, required=True, default=[])
        if isinstance(paths, list) and not paths and "paths" in raw:
            c.err(f"{p}.paths", "at least one file, directory or pattern")
        resolved = []
        for j, item in enumerate(paths):
            if not isinstance(item, str):
                c.err(f"{p}.paths[{j}]", f"expected a string, got {item!r}")
                continue
            full = item if os.path.isabs(item) else str(base / item)
            resolved.append(full)
            if check_files:
                _, missing = expand_paths([full])
                if missing:
                    c.err(f"{p}.paths[{j}]", f"no file matches {full}")
                for f in unread_files([full]):
                    c.err(f"{p}.paths[{j}]", f"{f.name}: {UNREAD_FILE}")
        fmt = c.typed(raw, "format", str, p, default="auto")
        if fmt not in ("auto", "parquet", "csv"):
            c.err(f"{p}.format", f"must be auto, parquet or csv, got {fmt!r}")
        columns = c.typed(raw, "columns", dict, p, default={})
        known = {col.name for col in COLUMNS.get(kind, ())}
        mapping = []
        for k, v in (columns or {}).items():
            if k not in known:
                c.err(f"{p}.columns.{k}", f"not a {kind} column (expected one of: {', '.join(sorted(known))})")
            elif not isinstance(v, str) or not v:
                c.err(f"{p}.columns.{k}", f"expected the source column name, got {v!r}")
            else:
                mapping.append((k, v))
        csv_raw = c.keys(raw.get("csv", {}), _CSV, f"{p}.csv")
        sep = c.typed(csv_raw, "separator", str, f"{p}.csv", default="auto")
        if sep not in ("auto", ";", ",", "\t", "|"):
            c.err(f"{p}.csv.separator", f"must be auto, ';', ',', tab or '|', got {sep!r}")
        enc = c.typed(csv_raw, "encoding", str, f"{p}.csv", default="auto")
        if enc not in ("auto", "utf-8", "latin-1"):
            c.err(f"{p}.csv.encoding", f"must be auto, utf-8 or latin-1, got {enc!r}")
        dec = c.typed(csv_raw, "decimal", str, f"{p}.csv", default="auto")
        if dec not in ("auto", ".", ","):
            c.err(f"{p}.csv.decimal", f"must be auto, '.' or ',', got {dec!r}")
        quote = c.typed(csv_raw, "quote", str, f"{p}.csv", default='"')
        if len(quote or "") != 1:
            c.err(f"{p}.csv.quote", f"must be one character, got {quote!r}")
        inputs.append(InputSpec(iname, kind, tuple(resolved), fmt if fmt in ("auto", "parquet", "csv") else "auto",
                                tuple(mapping), CsvOptions(sep, enc, dec, quote or '"')))
    kinds = {i.kind for i in inputs}
    if any(s in order for s in ("link", "attach")) and "register" not in kinds:
        c.err("inputs", "the link stage needs an input of kind 'register'")

    lk = c.keys(data.get("linkage", {}), _LINKAGE, "linkage")
    model = c.typed(lk, "model", str, "linkage")
    reg_model = c.typed(lk, "register_model", str, "linkage")
    for key, value in (("model", model), ("register_model", reg_model)):
        if value is not None:
            full = value if os.path.isabs(value) else str(base / value)
            if check_files and not os.path.isfile(full):
                c.err(f"linkage.{key}", f"model file {full} not found")
            if key == "model":
                model = full
            else:
                reg_model = full
    decisions = c.typed(lk, "decisions", str, "linkage")
    if decisions is not None:
        decisions = decisions if os.path.isabs(decisions) else str(base / decisions)
        if check_files and not os.path.isfile(decisions):
            c.err("linkage.decisions", f"decisions file {decisions} not found")
    threshold = c.typed(lk, "threshold", float, "linkage")
    if threshold is not None and not 0 < threshold < 1:
        c.err("linkage.threshold", f"must be within (0, 1), got {threshold!r}")
    margin = c.typed(lk, "margin", float, "linkage")
    if margin is not None and margin < 0:
        c.err("linkage.margin", f"must be >= 0 (bits of match weight), got {margin!r}")
    none_weight = c.typed(lk, "none_weight", float, "linkage")

    ag = c.keys(data.get("aggregate", {}), _AGGREGATE, "aggregate")
    frm = c.typed(ag, "first_review_month", str, "aggregate", default="2021-01")
    problem = review_month_problem(frm)
    if problem:
        c.err("aggregate.first_review_month", problem)

    signals = _signal_settings(c, data.get("signals", {}))
    if "signals" in order:
        for needed in ("link", "attach", "aggregate"):
            if needed not in order:
                c.err("job.stages", f"the signals stage needs the {needed} stage")

    out = c.keys(data.get("output", {}), _OUTPUT, "output")
    directory = c.typed(out, "directory", str, "output", required=True, default="")
    if directory and not os.path.isabs(directory):
        directory = str(base / directory)
    if directory and check_files:
        for problem in _output_problems(directory, [p for i in inputs for p in i.paths]):
            c.err("output.directory", problem)
    pseud = c.typed(out, "pseudonymise", bool, "output", default=False)
    key_env = c.typed(out, "key_env", str, "output")
    key_file = c.typed(out, "key_file", str, "output")
    if key_file and not os.path.isabs(key_file):
        key_file = str(base / key_file)
    if pseud:
        if not key_env and not key_file:
            c.err("output.pseudonymise", "needs output.key_env (an environment variable) or output.key_file")
        elif key_file and check_files and not os.path.isfile(key_file):
            c.err("output.key_file", f"key file {key_file} not found")
        elif check_files or not key_file:
            # resolved here, where the job is checked, run or submitted: a missing or short key
            # stops the job before its first stage (the key itself is read again by whoever runs it)
            from nirlink.engine.stages._export import load_key
            from nirlink.kernels import InputError

            try:
                load_key(key_env=key_env, key_file=key_file)
            except InputError as exc:
                c.err("output.key_file" if key_file else "output.key_env", str(exc))

    cl = c.keys(data.get("cluster", {}), _CLUSTER, "cluster")
    address = c.typed(cl, "address", str, "cluster")
    workers = c.typed(cl, "workers", int, "cluster")
    if workers is not None and workers < 1:
        c.err("cluster.workers", f"must be >= 1, got {workers}")
    threads = c.typed(cl, "threads_per_worker", int, "cluster")
    if threads is not None and threads < 1:
        c.err("cluster.threads_per_worker", f"must be >= 1, got {threads}")
    memory = c.typed(cl, "memory_limit", str, "cluster")
    if address and (workers or threads or memory):
        c.err("cluster", "workers, threads_per_worker and memory_limit size a local cluster; not with an address")

    from ._increment import parse_increment

    increment = parse_increment(c, data.get("increment"), base, check_files=check_files, output=directory)
    if increment is not None and not {"link", "attach", "aggregate"} <= set(order):
        c.err("job.stages", "an increment ([increment]) runs the link, attach and aggregate stages")
    if c.errors:
        raise SpecError(c.errors, source=path)
    return JobSpec(
        name=name, path=path, stages=tuple(order), inputs=tuple(inputs),
        linkage=LinkageOptions(model, reg_model, threshold, margin, none_weight, decisions), first_review_month=frm,
        output=OutputOptions(directory, pseud, key_env, key_file), signals=signals,
        cluster=ClusterOptions(address, workers, threads, memory), text=text, increment=increment,
    )


def review_month_problem(text: str) -> str | None:
    """Why ``text`` is not a first review month (None when it is one). Reviews are quarterly,
    in January, April, July and October: any other month is refused, not moved."""
    try:
        y, m = (int(x) for x in text.split("-"))
    except (ValueError, AttributeError):
        return f"expected YYYY-MM, got {text!r}"
    if not (1990 <= y <= 2100 and 1 <= m <= 12):
        return f"expected YYYY-MM (years 1990-2100), got {text!r}"
    if m not in (1, 4, 7, 10):
        start = m - (m - 1) % 3
        after = f"{y}-{start + 3:02d}" if start < 10 else f"{y + 1}-01"
        return (f"reviews are quarterly, in January, April, July and October: give {y}-{start:02d} or {after}, "
                f"got {text!r}")
    return None


def _inside(child: str, parent: str) -> bool:
    return os.path.commonpath([child, parent]) == parent


def _output_problems(directory: str, input_paths: list[str]) -> list[str]:
    """An output directory that is a file, or that overlaps an input (each run would ingest
    its own outputs again, or replace its inputs)."""
    problems = []
    out = os.path.realpath(directory)
    probe = out
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if os.path.exists(probe) and not os.path.isdir(probe):
        what = "is" if probe == out else f"lies under {probe}, which is"
        problems.append(f"{directory} {what} an existing file, not a directory")
    for pattern in input_paths:
        glob_at = next((i for i, ch in enumerate(pattern) if ch in "*?["), None)
        if glob_at is None:
            src = os.path.realpath(pattern)
            if _inside(out, src) and os.path.isdir(src):
                problems.append(f"{directory} is inside the input directory {pattern}: each run would read its own "
                                "outputs again")
            elif _inside(src, out):
                problems.append(f"the input {pattern} is inside {directory}: the job would read what it writes")
            continue
        static = os.path.realpath(os.path.dirname(pattern[:glob_at]) or ".")
        if _inside(out, static) and _reaches(pattern, static, out):
            problems.append(f"{directory} is where the input pattern {pattern} reads: each run would read its "
                            "own outputs again")
        elif _inside(static, out):
            problems.append(f"the input pattern {pattern} reads inside {directory}: the job would read what it writes")
    return problems


def _reaches(pattern: str, static: str, out: str) -> bool:
    """Can the glob ``pattern`` (whose fixed part is the directory ``static``) match a file
    below the directory ``out``?"""
    rest = os.path.relpath(os.path.abspath(pattern), os.path.abspath(static)).split(os.sep)
    below = [] if out == static else os.path.relpath(out, static).split(os.sep)
    if "**" in rest[:len(below) + 1]:
        return all(fnmatch.fnmatch(b, r) for b, r in zip(below, rest[:rest.index("**")]))
    return len(rest) > len(below) and all(fnmatch.fnmatch(b, r) for b, r in zip(below, rest))


def _signal_settings(c: _Checker, raw: Any):
    """The [signals] table: every key a SignalSettings field, of its type."""
    from dataclasses import fields

    from nirlink.engine.stages._signals_settings import SignalSettings

    raw = c.keys(raw, SignalSettings.names(), "signals")
    values = {}
    for f in fields(SignalSettings):
        default = f.default
        typ = (list if isinstance(default, tuple) else str if f.name == "as_of_month"
               else type(default))
        value = c.typed(raw, f.name, typ, "signals")
        if value is None:
            continue
        if isinstance(default, tuple):
            if not all(isinstance(v, str) for v in value):
                c.err(f"signals.{f.name}", f"expected a list of strings, got {value!r}")
                continue
            value = tuple(value)
        values[f.name] = value
    settings = SignalSettings(**values)
    for path, msg in settings.check():
        c.err(path, msg)
    return settings


def load_job(path: str | os.PathLike, *, check_files: bool = True) -> JobSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([("", "job file not found")], source=str(path)) from None
    except UnicodeDecodeError:
        raise SpecError([("", "job file is not UTF-8 text")], source=str(path)) from None
    return parse_job(text, path=str(path.resolve()), check_files=check_files)
