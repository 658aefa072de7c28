"""The worker plugin: prepares every worker for nirlink tasks and refuses mismatched versions.

On each worker (and on every worker that joins later): checks that the worker runs the same
nirlink version as the client (a job whose tasks ran different code could not promise
identical outputs), limits the threads of numeric libraries to one (Dask runs one task per
thread already), and compiles the Numba kernels once (warm cache) so that the first tasks
do not pay for it.
"""

from __future__ import annotations

import os

from distributed.diagnostics.plugin import WorkerPlugin

from nirlink import version as nirlink_version

__all__ = ["NirlinkWorkerPlugin", "nirlink_version"]


class NirlinkWorkerPlugin(WorkerPlugin):
    name = "nirlink"

    def __init__(self, version: str, *, warm: bool = True, env: dict[str, str] | None = None):
        self.version = version
        self.warm = warm
        self.env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", **(env or {})}

    def setup(self, worker) -> None:
        from nirlink.kernels import ClusterError

        mine = nirlink_version()
        if mine != self.version:
            raise ClusterError(f"worker {worker.address} runs nirlink {mine}, the client {self.version}: "
                               "install the same version everywhere")
        for k, v in self.env.items():
            os.environ.setdefault(k, v)
        if self.warm:
            _warm_kernels()


def _warm_kernels() -> None:
    import numpy as np
    import pyarrow as pa

    from nirlink.kernels._hash import hash_rows
    from nirlink.kernels._nir import check_nir
    from nirlink.kernels._segments import group_by_key
    from nirlink.kernels._text import normalize_names

    check_nir(pa.array(["177127400100163"]))
    normalize_names(pa.array(["x"]))
    group_by_key(np.array([0]), 1)
    hash_rows(pa.array(["x"]))
