"""Opening the Dask client a job asks for: an embedded LocalCluster or a scheduler address."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from nirlink.kernels import ClusterError

__all__ = ["open_client", "local_cluster_size"]


def local_cluster_size(n_workers: int | None = None, threads_per_worker: int | None = None,
                       memory_limit: str | int | None = None) -> dict[str, Any]:
    """Workers, threads and memory for a LocalCluster on this machine.

    Default: one single-threaded worker process per core. Our kernels release the GIL, but
    the glue between them (Arrow, pandas) does not always, so processes scale better than
    threads; each worker gets an equal share of 80% of the machine's memory.
    """
    import psutil

    cores = os.cpu_count() or 1
    n_workers = n_workers or cores
    threads_per_worker = threads_per_worker or max(1, cores // n_workers)
    if memory_limit is None:
        memory_limit = int(psutil.virtual_memory().total * 0.8 / n_workers)
    return {"n_workers": n_workers, "threads_per_worker": threads_per_worker, "memory_limit": memory_limit}


@contextlib.contextmanager
def open_client(address: str | None = None, *, n_workers: int | None = None, threads_per_worker: int | None = None,
                memory_limit: str | int | None = None, processes: bool = True, local_directory: str | None = None,
                dashboard: bool = True, security: Any = None, timeout: float | None = None) -> Iterator[Any]:
    """Yield a ``distributed.Client``: connected to ``address``, or to a new LocalCluster.

    The LocalCluster (and the client) close when the block exits. ``timeout`` (seconds to
    reach a scheduler) defaults to the ``nirlink.cluster.connect-timeout`` setting. An address
    is reached with ``security``, else the client certificates of ``nirlink.cluster.tls-dir``,
    else Dask's own TLS settings; a LocalCluster (on this machine) uses ``security`` only.
    """
    import dask.config
    from distributed import Client, LocalCluster

    if timeout is None:
        timeout = float(dask.config.get("nirlink.cluster.connect-timeout", 30))

    if address:
        security = _security_for(address, security)
        try:
            client = Client(address, timeout=timeout, security=security)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        try:
            _prepare_workers(client)
            yield client
        finally:
            client.close()
        return
    size = local_cluster_size(n_workers, threads_per_worker, memory_limit)
    with _stdout_to_stderr():
        cluster = LocalCluster(
            processes=processes,
            dashboard_address=":0" if dashboard else None,
            local_directory=local_directory,
            security=security,
            **size,
        )
        client = Client(cluster)
        try:
            _prepare_workers(client)
            yield client
        finally:
            client.close()
            cluster.close()


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 points at stderr while a local cluster lives, then is restored.

    Worker processes (and those a nanny restarts) inherit the descriptors of this process:
    without this, whatever a library prints in a worker lands on the command's stdout, ahead of
    the command's own result (``--output json`` must print one JSON document and nothing else).
    Commands print their result after the cluster has closed.
    """
    import sys

    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no descriptor 1 (closed): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 1)
        os.close(saved)


def _security_for(address: str, security: Any):
    """The security to reach ``address`` with: ``security``, else the client certificates of
    the setting nirlink.cluster.tls-dir, else Dask's own TLS settings. A clear error when TLS
    and the address disagree (distributed would raise a TypeError or a RuntimeError)."""
    import dask.config
    from distributed.security import Security

    tls_dir = dask.config.get("nirlink.cluster.tls-dir", None)
    if security is None and tls_dir:
        from ._certs import security_from_dir

        security = security_from_dir(tls_dir, "client")
    sec = security if security is not None else Security()
    scheme = address.split("://", 1)[0] if "://" in address else dask.config.get("distributed.comm.default-scheme")
    if scheme == "tls" and not (sec.tls_ca_file and sec.tls_client_cert):
        raise ClusterError(f"{address} is a TLS address and no client certificate is set: give the directory "
                           "holding ca.pem, client.pem and client-key.pem with the setting nirlink.cluster.tls-dir "
                           "(environment variable DASK_NIRLINK__CLUSTER__TLS_DIR=DIR; `nirlink cluster certs DIR` "
                           "makes a test set)")
    if scheme != "tls" and sec.require_encryption:
        why = f"setting nirlink.cluster.tls-dir = {tls_dir}" if tls_dir else "by the Dask security settings"
        raise ClusterError(f"TLS is required ({why}) but {address} is not a tls:// address: use tls://HOST:PORT, "
                           "or unset nirlink.cluster.tls-dir for a cluster without TLS")
    return security


def _prepare_workers(client) -> None:
    """Set this process's Arrow memory pool and install the nirlink worker plugin (version
    check, thread limits, the same Arrow memory pool, warm kernels)."""
    from ._plugin import NirlinkWorkerPlugin, nirlink_version, use_arrow_memory_pool

    pool = use_arrow_memory_pool()  # an unknown name fails here, before any worker is asked
    try:
        client.register_plugin(NirlinkWorkerPlugin(nirlink_version(), arrow_memory_pool=pool))
    except Exception as exc:  # noqa: BLE001 - a worker refusing the plugin is a cluster problem
        raise ClusterError(f"preparing the workers failed: {exc}") from None
