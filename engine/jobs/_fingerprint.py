"""What a stage's published output depends on, as one hash: the fingerprint a re-run compares
to skip the stage (``_runner.py``). Parts: the nirlink version, the previous stage's manifest,
and what the stage reads - the job file's section for it, its raw inputs by size and time,
model files, the clerical decisions by content, for the export the key (hashed), for an
increment's link, attach and aggregate stages the previous job's manifest of that stage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from nirlink.engine.io._readers import expand_paths

from ._registry import version
from ._spec import JobSpec

__all__ = ["stage_fingerprint", "up_to_date_stage", "first_stale"]


# the layout of a stage's output, raised when it changes: output written by an earlier layout
# is then stale and its stage runs again (the nirlink version alone does not change within a
# source checkout). ingest 2: a declared row's identity in ingest/identities/ (2026-12-04)
OUTPUT_FORMATS = {"ingest": 2}


def _fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _files_fingerprint(paths) -> list:
    files, _ = expand_paths(list(paths))
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return out


def stage_fingerprint(spec: JobSpec, stage: str, previous: str, *, key: bytes | None = None) -> str:
    """The fingerprint of ``stage`` of ``spec`` after a previous stage whose manifest hashes to
    ``previous``; ``key``: the pseudonymisation key (export only)."""
    s = spec
    parts: dict[str, Any] = {"stage": stage, "nirlink": version(), "previous": previous}
    if stage in OUTPUT_FORMATS:
        parts["format"] = OUTPUT_FORMATS[stage]
    if stage == "ingest":
        parts["inputs"] = [[i.name, i.kind, i.format, list(i.columns), i.csv.__dict__, _files_fingerprint(i.paths)]
                           for i in s.inputs]
    elif stage == "link":
        parts["linkage"] = s.linkage.__dict__
        parts["models"] = [_files_fingerprint([p]) for p in (s.linkage.model, s.linkage.register_model) if p]
        if s.linkage.decisions:  # by content: an agent edits the file in place
            parts["decisions"] = hashlib.sha256(Path(s.linkage.decisions).read_bytes()).hexdigest()
    elif stage == "aggregate":
        parts["first_review_month"] = s.first_review_month
    elif stage == "signals":
        parts["signals"] = s.signals.as_json() if s.signals is not None else None
    elif stage == "export":
        parts["signals"] = "signals" in s.stages
        parts["pseudonymise"] = s.output.pseudonymise
        parts["key"] = hashlib.sha256(b"nirlink-key-check" + key).hexdigest() if key else None
    if s.increment is not None and stage in ("link", "attach", "aggregate"):
        # an increment's stage reads the previous job's output of the same stage
        theirs = s.increment.directory / stage / "_manifest.json"
        parts["increment"] = {**s.increment.as_json(),
                              "previous": hashlib.sha256(theirs.read_bytes()).hexdigest() if theirs.exists() else None}
    return _fingerprint(parts)


def up_to_date_stage(spec: JobSpec, stage: str, previous: str, key: bytes | None) -> tuple[bool, str]:
    """Whether ``stage``'s published output is up to date (its fingerprint matches and its
    manifest is there), and the fingerprint it must carry."""
    from nirlink.engine.io._datasets import read_json

    fp = stage_fingerprint(spec, stage, previous, key=key if stage == "export" else None)
    out = Path(spec.directory) / stage
    done = read_json(out / "_fingerprint.json") if (out / "_fingerprint.json").exists() else None
    return bool(done and done.get("fingerprint") == fp and (out / "_manifest.json").exists()), fp


def first_stale(spec: JobSpec, restart: bool, key: bytes | None) -> int:
    """The index of the first stage of ``spec`` whose output is not up to date (all: their count)."""
    previous = ""
    for index, stage in enumerate(spec.stages):
        if restart or not up_to_date_stage(spec, stage, previous, key)[0]:
            return index
        previous = hashlib.sha256((Path(spec.directory) / stage / "_manifest.json").read_bytes()).hexdigest()
    return len(spec.stages)
