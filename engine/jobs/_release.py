"""Intermediate outputs released once the stages that read them have published, and the job
directory's size tracked as the stages go.

Each stage's output is a dataset other stages read (``READERS``). Once every stage of the
job that reads it has published, its data files go, unless ``nirlink.jobs.keep`` names its
stage; its ``_manifest.json`` and ``_fingerprint.json`` stay (a re-run still knows the
stage is up to date) and ``_released.json`` records what went. A re-run that must run a
stage whose input was released runs the producing stage again first (``resume_from``).
The job's last reader of an output may also remove its files as it reads them (``consume``:
the attach stage the ingested rows, the aggregate stage the person buckets, the export
stage the aggregate output), and the last reader of a named part of an output may remove
it once read (``consume_parts``: the link stage the ingested register and the declared rows'
identities); the output is marked released before the first file goes, so a run that stops
half-way is followed by one that runs its producer again.
The outputs no stage of the job reads (the export, or the last stage of a shorter job) are
the job's results: never released.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

from nirlink.engine import _config
from nirlink.engine.io._datasets import read_json, write_json

__all__ = ["READERS", "released", "release_after", "resume_from", "directory_bytes", "keep_setting", "MARKER",
           "consume", "consume_parts", "DiskRecord", "keeps_increment_inputs"]

MARKER = "_released.json"
KEEPABLE = ("ingest", "link", "attach", "aggregate", "signals")
# (stage, part of its output or None for the rest of it) -> the stages that read it
READERS: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("ingest", "rejects"): ("signals", "export"),
    ("ingest", "register"): ("link", "signals"),  # the register input (the signals stage reads it by that name)
    # each signature's identity once per part file: the signatures' input, and without the
    # attach stage the aggregate stage's (each row's own NIR as its person)
    ("ingest", "identities"): ("link", "aggregate"),
    ("ingest", None): ("link", "attach", "aggregate"),
    ("link", None): ("attach", "signals", "export"),
    ("attach", None): ("aggregate", "signals"),
    ("aggregate", None): ("signals", "export"),
    # the signals stage's case datasets stay: analysts and the report read them
}
_KEEP_FILES = {"_manifest.json", "_fingerprint.json", MARKER}


def keep_setting() -> set[str]:
    """The stages whose outputs ``nirlink.jobs.keep`` keeps (``all``, ``none`` or a comma list);
    ``increment`` stands for what a later increment of the job reads: the link, attach and
    aggregate outputs, the link stage's candidate pairs with them (it is in the set too)."""
    value = str(_config.get("jobs.keep", "link") or "none").strip()
    if value == "all":
        return {*KEEPABLE, "increment"}
    keep = {s.strip() for s in value.split(",") if s.strip() and s.strip() != "none"}
    return keep | {"link", "attach", "aggregate"} if "increment" in keep else keep


def keeps_increment_inputs() -> bool:
    """Whether the job keeps what only a later increment reads (``nirlink.jobs.keep`` names
    ``increment``, or ``all``): the link stage's candidate pairs (``deterministic/``,
    ``predictions/``) and the aggregate stage's career accumulators (``career_person_year_state``),
    which are then written at all."""
    return "increment" in keep_setting()


def _readers(stage: str, part: str | None, stages: tuple[str, ...]) -> list[str]:
    readers = [s for s in READERS.get((stage, part), ()) if s in stages]
    if stage == "ingest" and part in (None, "identities") and "attach" in stages:
        readers = [s for s in readers if s != "aggregate"]  # the aggregate stage reads the attach stage then
    if stage == "ingest" and part == "identities" and not readers:
        readers = _readers(stage, None, stages)  # no link stage: they go with the rows
    return readers


def released(job_dir: Path, stage: str) -> list[str]:
    """The parts of ``stage``'s output released (``"*"``: everything but ``rejects`` when listed apart)."""
    marker = Path(job_dir) / stage / MARKER
    return list(read_json(marker)["released"]) if marker.exists() else []


def _part_name(part: str | None) -> str:
    return part if part is not None else "*"


def _remove(out: Path, part: str | None, others: list[str]) -> None:
    if part is not None:
        shutil.rmtree(out / part, ignore_errors=True)
        return
    for p in out.iterdir():
        if p.name in _KEEP_FILES or p.name in others:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def release_after(job_dir: Path, stages: tuple[str, ...], published: set[str]) -> list[str]:
    """Release every output whose readers in ``stages`` have all published (``published``: the
    stages published or found up to date so far); returns ``stage/part`` of what went."""
    keep = keep_setting()
    gone = []
    for (stage, part), _ in READERS.items():
        if stage not in stages or stage in keep or stage not in published:
            continue
        readers = _readers(stage, part, stages)
        out = Path(job_dir) / stage
        done = released(job_dir, stage)
        if not readers or not set(readers) <= published or not out.is_dir():
            continue
        others = [p for (s, p) in READERS if s == stage and p is not None]
        _remove(out, part, others)
        if _part_name(part) not in done:
            write_json(out / MARKER, {"released": sorted({*done, _part_name(part)}),
                                      "why": "read by no later stage of the job (nirlink.jobs.keep keeps it)"})
            gone.append(f"{stage}/{_part_name(part)}")
    return gone


def consume(job_dir: Path, producer: str, reader: str, stages: tuple[str, ...]) -> bool:
    """Whether ``reader`` may remove ``producer``'s files as it reads them: ``producer`` is not
    kept and ``reader`` is its last reader in the job. If so, ``producer`` is marked released
    first: a run that stops half-way leaves it marked, and a re-run runs it again."""
    readers = _readers(producer, None, stages)
    if producer in keep_setting() or producer not in stages or not readers or readers[-1] != reader:
        return False
    out = Path(job_dir) / producer
    if out.is_dir():
        write_json(out / MARKER, {"released": sorted({*released(job_dir, producer), "*"}),
                                  "why": f"removed by the {reader} stage as it read them (nirlink.jobs.keep keeps it)"})
    return True


def consume_parts(job_dir: Path, producer: str, reader: str, stages: tuple[str, ...]) -> tuple[str, ...]:
    """The parts of ``producer``'s output (``READERS``' named parts) that ``reader`` may remove
    once it has read them: ``producer`` is not kept and ``reader`` is the part's last reader in
    the job (the link stage: without a signals stage, the ingested ``register``, read by its
    first steps only). Each is marked released first, as
    ``consume`` does: a run that stops before publishing runs ``producer`` again."""
    if producer in keep_setting() or producer not in stages:
        return ()
    parts = tuple(p for (s, p) in READERS if s == producer and p is not None
                  and (readers := _readers(producer, p, stages)) and readers[-1] == reader)
    out = Path(job_dir) / producer
    parts = tuple(p for p in parts if (out / p).is_dir() and _sole_input_of_its_kind(out, p))
    if parts:
        write_json(out / MARKER, {"released": sorted({*released(job_dir, producer), *parts}),
                                  "why": f"removed by the {reader} stage once read (nirlink.jobs.keep keeps it)"})
    return parts


def _sole_input_of_its_kind(out: Path, part: str) -> bool:
    """Whether ``part`` of the output ``out`` holds what its name says: a part named as an
    input kind (``register``) only when it is the one input of that kind; otherwise the rows
    the part's readers need are elsewhere (an input ``people`` of kind register, or two of
    them), the reader removes nothing, and marking the part released would only make later
    re-runs ingest again."""
    manifest = out / "_manifest.json"
    inputs = read_json(manifest).get("inputs", {}) if manifest.exists() else {}
    of_kind = sorted(name for name, info in inputs.items() if info.get("kind") == part)
    return (not of_kind and part not in inputs) or of_kind == [part]


def _needs(stage: str, stages: tuple[str, ...]) -> list[tuple[str, str | None]]:
    return [(s, p) for (s, p) in READERS if s in stages and stage in _readers(s, p, stages)]


def resume_from(job_dir: Path, stages: tuple[str, ...], first_stale: int) -> int:
    """The first stage a re-run must run: ``first_stale`` (the first stage not up to date),
    or earlier when a stage from there on reads an output that was released (its producer
    runs again, and with it every later stage)."""
    start = first_stale
    changed = True
    while changed:
        changed = False
        for stage in stages[start:]:
            for producer, part in _needs(stage, stages):
                index = stages.index(producer)
                if index < start and _part_name(part) in released(job_dir, producer):
                    start, changed = index, True
    return start


def directory_bytes(root: Path) -> int:
    """Bytes of the files under ``root`` (hard links counted once), without the run records (``_job``)."""
    total, seen = 0, set()
    for here, dirs, files in os.walk(root):
        if Path(here) == Path(root):
            dirs[:] = [d for d in dirs if d != "_job"]
        for name in files:
            try:
                st = os.lstat(os.path.join(here, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


class DiskRecord:
    """The job directory's size after each stage (before and after its releases), its peak and
    its final size beside the input's, written to the run's ``disk.json`` as the stages go.
    The peak is the largest of the sizes at each publication and of samples taken every
    SAMPLE_SECONDS while a stage runs (stages that remove their inputs as they read them
    peak before they publish)."""

    SAMPLE_SECONDS = 1.0

    def __init__(self, job_dir: Path, input_paths: list[str], path: Path):
        from nirlink.engine.io._readers import expand_paths

        files, _ = expand_paths(list(input_paths))
        self.job_dir, self.path = Path(job_dir), Path(path)
        self.data = {"input_bytes": sum(f.stat().st_size for f in files), "peak_bytes": 0, "peak_stage": None,
                     "final_bytes": None, "stages": {}, "released": []}

    @contextlib.contextmanager
    def sampling(self, stage: str):
        """Sample the directory's size while ``stage`` runs."""
        stop, peak = threading.Event(), [0]

        def sample() -> None:
            while not stop.wait(self.SAMPLE_SECONDS):
                with contextlib.suppress(OSError):
                    peak[0] = max(peak[0], directory_bytes(self.job_dir))

        thread = threading.Thread(target=sample, daemon=True, name="nirlink-disk-sampler")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=30)
            self._sampled = (stage, peak[0])

    def stage_done(self, stage: str, stages: tuple[str, ...], published: set[str]) -> list[str]:
        size = directory_bytes(self.job_dir)
        sampled = self.__dict__.pop("_sampled", (None, 0))
        running = max(size, sampled[1]) if sampled[0] == stage else size
        gone = release_after(self.job_dir, stages, published)
        after = directory_bytes(self.job_dir)
        running = max(running, after)  # a release writes its record (_released.json) before it frees
        d = self.data
        if running > d["peak_bytes"]:
            d["peak_bytes"], d["peak_stage"] = running, stage
        d["stages"][stage] = {"peak_bytes": running, "bytes_at_publication": size, "bytes_after_release": after,
                              "released": gone}
        d["released"] += gone
        d["final_bytes"] = after
        n = d["input_bytes"] or 1
        d["peak_over_input"], d["final_over_input"] = round(d["peak_bytes"] / n, 3), round(after / n, 3)
        write_json(self.path, d)
        return gone
