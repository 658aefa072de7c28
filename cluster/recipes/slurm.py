"""nirlink workers on Slurm through dask-jobqueue.

`python -m cluster.recipes.slurm --jobs N` starts a scheduler here and N Slurm jobs of
workers; edit SITE below for your site (see cluster/recipes/README.md). `--dry-run` prints
the job script only.
"""

from __future__ import annotations

import argparse
import sys
import time

SITE = {
    "queue": "normal",  # Slurm partition
    "account": None,  # --account, if your site needs one
    "cores": 16,  # cores per Slurm job (one node)
    "processes": 16,  # worker processes per job: one per core, one thread each
    "memory": "64GiB",  # memory per job, split between its processes
    "walltime": "12:00:00",
    "local_directory": "/scratch/$USER/dask",  # spill directory on node-local disk
    "job_extra_directives": [],  # extra #SBATCH lines, e.g. ["--exclusive"]
    "python": sys.executable,  # the interpreter of the environment with nirlink installed
}


def make_cluster(**overrides):
    from dask_jobqueue import SLURMCluster

    kw = {**SITE, **overrides}
    kw = {k: v for k, v in kw.items() if v is not None}
    return SLURMCluster(**kw)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--dry-run", action="store_true", help="print the job script and exit")
    ap.add_argument("--print-address", action="store_true")
    args = ap.parse_args(argv)
    cluster = make_cluster()
    if args.dry_run:
        print(cluster.job_script())
        cluster.close()
        return
    cluster.scale(jobs=args.jobs)
    if args.print_address:
        print(cluster.scheduler_address, flush=True)
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        cluster.close()


if __name__ == "__main__":
    main()
