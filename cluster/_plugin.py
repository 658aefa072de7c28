"""The worker plugin: prepares every worker for nirlink tasks and refuses mismatched versions.

On each worker (and on every worker that joins later): checks that the worker runs the same
nirlink version as the client (a job whose tasks ran different code could not promise
identical outputs), limits the threads of numeric libraries to one (Dask runs one task per
thread already), sets the Arrow memory pool the client's settings name
(``use_arrow_memory_pool``) and compiles the Numba kernels once (warm cache) so that the
first tasks do not pay for it.
"""

from __future__ import annotations

import logging
import os
import weakref

from distributed.diagnostics.plugin import WorkerPlugin

from nirlink import version as nirlink_version

__all__ = ["ARROW_MEMORY_POOLS", "NirlinkWorkerPlugin", "nirlink_version", "use_arrow_memory_pool"]


class NirlinkWorkerPlugin(WorkerPlugin):
    name = "nirlink"

    def __init__(self, version: str, *, warm: bool = True, env: dict[str, str] | None = None,
                 arrow_memory_pool: str = "default"):
        self.version = version
        self.warm = warm
        self.arrow_memory_pool = arrow_memory_pool
        self.env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", **(env or {})}

    def setup(self, worker) -> None:
        from nirlink.kernels import ClusterError

        mine = nirlink_version()
        if mine != self.version:
            raise ClusterError(f"worker {worker.address} runs nirlink {mine}, the client {self.version}: "
                               "install the same version everywhere")
        for k, v in self.env.items():
            os.environ.setdefault(k, v)
        use_arrow_memory_pool(self.arrow_memory_pool)
        log = logging.getLogger("distributed.worker")
        log.addFilter(QuietHeartbeatAtClose(worker))
        if not any(isinstance(f, FailedTaskInOneLine) for f in log.filters):  # one per process, left in place
            log.addFilter(FailedTaskInOneLine())
        if self.warm:
            _warm_kernels()

    def teardown(self, worker) -> None:
        # this worker's filter (a plugin object may serve several workers of one process)
        log = logging.getLogger("distributed.worker")
        quiet = next((f for f in log.filters if isinstance(f, QuietHeartbeatAtClose) and f.worker() is worker), None)
        if quiet is None:
            return
        if getattr(worker, "status", None) in _closing():
            # Worker.close removes its plugins before it closes its connections, which is what
            # cuts a heartbeat on its way: the filter stays as long as the worker object does
            weakref.finalize(worker, log.removeFilter, quiet)
        else:  # the plugin replaced or removed on a running worker
            log.removeFilter(quiet)


class FailedTaskInOneLine(logging.Filter):
    """distributed's "Compute Failed" record of a failed task (its arguments' repr, the
    exception's repr, a Python traceback: a task's arguments or a library's message may hold
    a row's values) becomes one line naming the task; nirlink records the error itself, in
    words, in the job's log and state (`nirlink logs`, `nirlink status`), and a local cluster's
    workers print to the operator's terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Compute Failed") and record.args:
            record.msg, record.args = "task %s failed (its error is in the nirlink job's log)", (record.args[0],)
        return True


# What distributed's Worker.heartbeat logs, with a traceback, when its call to the scheduler fails.
HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat."


class QuietHeartbeatAtClose(logging.Filter):
    """Drops the worker's "Failed to communicate with scheduler during heartbeat" error (and its
    traceback) once the worker is closing: a heartbeat already on its way when the worker
    stops has its connection closed under it by the worker itself (Worker.close sets the
    status, removes its plugins, then closes its connection pool: the plugin leaves the filter
    in place until the worker object is gone). Nothing failed; yet every run that ends (a
    finished job, Ctrl-C) could print an error with a traceback to the operator's terminal.
    Seen once in about a dozen interrupted runs (tests/test_job_runs.py, Ctrl-C). A failed
    heartbeat of a running worker (the scheduler unreachable) is still logged. The filter sits
    on the module's logger, which every worker of a process shares: a nanny's worker process
    holds one worker; in a process holding several (a threads-only LocalCluster), one closing
    also quiets the others' failed heartbeats until it is gone."""

    def __init__(self, worker):
        super().__init__()
        self.worker = weakref.ref(worker)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != HEARTBEAT_FAILED:
            return True
        return getattr(self.worker(), "status", None) not in _closing()


def _closing() -> tuple:
    from distributed.core import Status

    return (Status.closing, Status.closing_gracefully, Status.closed)


# The setting nirlink.cluster.arrow-memory-pool. Why jemalloc by default, measured on the 2-core
# machine of benchmarks/ (Linux, transparent huge pages "always", pyarrow 26 whose default pool is
# mimalloc 3.4): a 50,000-person job (6.4M rows) spent 95-104 s of CPU with pyarrow's default
# pool, 35 s of it in the kernel (system time: mimalloc commits its 1 GiB arenas eagerly, and
# every first use of their huge pages faults and zeroes them; a 925k-row table's first filter
# took 1.4-2.3 s instead of 0.06), against 66-82 s with jemalloc (15-20 s system) and 80 s with
# mimalloc without eager commit (an environment variable read before pyarrow loads, which a
# worker started by an operator does not get). The glibc allocator ("system") spent 94 s.
ARROW_MEMORY_POOLS = ("jemalloc", "mimalloc", "system", "default")


def use_arrow_memory_pool(name: str | None = None) -> str:
    """Make ``name`` (default: the setting nirlink.cluster.arrow-memory-pool) this process's
    default Arrow memory pool; "default" keeps pyarrow's choice, as does a pool this pyarrow
    build lacks (jemalloc is not built on every platform). Returns the pool in use."""
    import dask.config
    import pyarrow as pa

    from nirlink.kernels import ClusterError

    name = name or str(dask.config.get("nirlink.cluster.arrow-memory-pool", "jemalloc"))
    if name not in ARROW_MEMORY_POOLS:
        raise ClusterError(f"setting nirlink.cluster.arrow-memory-pool is {name!r}: expected one of "
                           f"{', '.join(ARROW_MEMORY_POOLS)}")
    if name != "default":
        make = {"jemalloc": pa.jemalloc_memory_pool, "mimalloc": pa.mimalloc_memory_pool,
                "system": pa.system_memory_pool}[name]
        try:
            pool = make()
        except NotImplementedError:  # not built into this pyarrow: its default stays
            pool = None
        if pool is not None and pa.default_memory_pool().backend_name != pool.backend_name:
            pa.set_memory_pool(pool)
    return pa.default_memory_pool().backend_name


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
