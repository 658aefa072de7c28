"""Structured job logs (JSON lines), with every NIR masked.

A NIR is sensitive personal data: no log line ever carries one whole. Anything that looks
like a NIR (13 or 15 characters: sex digit, year, month, department incl. 2A/2B, commune,
order, optional key) keeps its first 3 characters; the rest becomes '*'.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["mask_nirs", "mask_fields", "JobLog", "private_opener"]

_NIR = re.compile(r"(?<![0-9A-Za-z])([1-8][0-9]{4}(?:[0-9]{2}|2[ABab])[0-9]{6})([0-9]{2})?(?![0-9A-Za-z])")


def mask_nirs(text: str) -> str:
    return _NIR.sub(lambda m: m.group(0)[:3] + "*" * (len(m.group(0)) - 3), text)


def mask_fields(value: Any) -> Any:
    if isinstance(value, str):
        return mask_nirs(value)
    if isinstance(value, dict):
        return {k: mask_fields(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_fields(v) for v in value]
    return value


def private_opener(path, flags):
    """Open (creating) with the private file mode, whatever the umask."""
    from nirlink.engine.io._datasets import private_modes

    mode = private_modes()[1]
    fd = os.open(path, flags, mode)
    if os.fstat(fd).st_uid == os.getuid():
        os.fchmod(fd, mode)
    return fd


def _hide_row_values(tb: str) -> str:
    """A traceback's exception lines (not indented, unlike its source lines) without quoted
    values a library may have taken from a row."""
    from nirlink.kernels._errors import hide_quoted_values

    return "\n".join(line if line[:1].isspace() else hide_quoted_values(line) for line in tb.split("\n"))


class JobLog:
    """Appends JSON lines {ts, level, job, message, ...fields} to a job's log file."""

    def __init__(self, path: str | Path, job_id: str):
        self.path = Path(path)
        self.job_id = job_id
        self._lock = threading.Lock()

    def write(self, level: str, message: str, **fields: Any) -> None:
        if isinstance(fields.get("traceback"), str):
            fields["traceback"] = _hide_row_values(fields["traceback"])
        record = {"ts": round(time.time(), 3), "level": level, "job": self.job_id, "message": mask_nirs(message),
                  **mask_fields(fields)}
        line = json.dumps(record, default=str, ensure_ascii=False)
        with self._lock:
            if not self.path.parent.is_dir():  # on first write: a run refused at once leaves no trace
                from nirlink.engine.io._datasets import make_private_dir

                make_private_dir(self.path.parent)
            with open(self.path, "a", encoding="utf-8", opener=private_opener) as f:
                f.write(line + "\n")

    def read(self) -> list[dict[str, Any]]:
        return self.read_from(0)[0]

    def read_from(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        """The records of whole lines from byte ``offset`` on, and the offset after them (a
        line still being written is left for the next call). A line that is not JSON comes
        back as a record of level ``unreadable``: one bad line never hides the others."""
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        records = []
        for raw in data[:end].splitlines():
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(line)
            except ValueError:
                record = {"ts": None, "level": "unreadable", "message": mask_nirs(line[:500])}
            records.append(record)
        return records, offset + end
