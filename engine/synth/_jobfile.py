"""The job file nirlink synth --write-job writes for a synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_job_file"]

JOB_TEMPLATE = """# nirlink job for the synthetic dataset in {data} (written by nirlink).
[job]
name = "{name}"
stages = [{stages}]

[[inputs]]
name = "register"
kind = "register"
paths = ["{data}/register"]

[[inputs]]
name = "career"
kind = "career"
paths = ["{data}/career"]

[[inputs]]
name = "resource"
kind = "resource"
paths = ["{data}/resource"]

[output]
directory = "{output}"
{extra}
[cluster]
# address = "tcp://scheduler:8786"   # a running cluster; without it, a local one is started
"""


def write_job_file(data_dir: str | os.PathLike, job_path: str | os.PathLike, *, output: str | os.PathLike,
                   name: str = "synthetic", stages: list[str] | tuple[str, ...] | None = None,
                   extra: str = "") -> Path:
    """A job file that runs the main job (or ``stages``) on a synthetic dataset (paths absolute);
    ``extra`` lines go into its [output] table."""
    from nirlink.engine.jobs._spec import DEFAULT_STAGES

    job_path = Path(job_path)
    job_path.parent.mkdir(parents=True, exist_ok=True)
    job_path.write_text(JOB_TEMPLATE.format(data=Path(data_dir).resolve().as_posix(), name=name,
                                            output=Path(output).resolve().as_posix(), extra=extra,
                                            stages=", ".join(f'"{s}"' for s in (stages or DEFAULT_STAGES))),
                        encoding="utf-8")
    return job_path
