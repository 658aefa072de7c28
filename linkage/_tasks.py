"""Running a batch of independent tasks on the Dask cluster (or in this process), with progress;
a batch may take another's futures (submit_tasks) as arguments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["run_tasks", "submit_tasks", "wait_tasks", "cancel_tasks", "share", "Progress"]

Progress = Callable[..., None]
"""``progress(step, done, total)``: ``done`` of ``total`` tasks of the step finished; steps that
count rows add ``rows=`` (rows processed by the finished tasks)."""


def run_tasks(client, fn: Callable, arg_list: Sequence[tuple], *, name: str, progress: Progress | None = None,
              kwargs: dict[str, Any] | None = None, describe: Callable[[tuple], str] | None = None,
              rows: Callable[[Any], int] | None = None) -> list[Any]:
    """``[fn(*args, **kwargs) for args in arg_list]`` as Dask tasks; results in input order.

    On the first failure the remaining tasks are cancelled and the error is raised.
    ``describe`` names a task's partition in error messages (default: its file paths).
    ``rows`` tells the rows a task processed from its result: progress then reports them.
    """
    kwargs = kwargs or {}
    n = len(arg_list)
    counted = [0]

    def tell(done: int, result: Any = None) -> None:
        if not progress:
            return
        if rows is None:
            progress(name, done, n)
            return
        if done:
            counted[0] += int(rows(result))
        progress(name, done, n, rows=counted[0])

    tell(0)
    if client is None:
        out = []
        for i, args in enumerate(arg_list):
            out.append(fn(*args, **kwargs))
            tell(i + 1, out[-1])
        return out
    import uuid

    from distributed import as_completed

    # a fresh token per batch: a key reused while the previous batch's results are still
    # held by the scheduler would return those instead of running again
    token = uuid.uuid4().hex[:8]
    futures = [client.submit(fn, *args, **kwargs, key=f"nirlink-{name}-{i}-{token}", pure=False)
               for i, args in enumerate(arg_list)]
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * n
    done = 0
    try:
        for fut in as_completed(futures, loop=client.loop):
            i = index[fut.key]
            results[i] = _result(fut, name, i, (describe or _describe)(arg_list[i]))
            done += 1
            tell(done, results[i])
    except BaseException as exc:
        cancel_tasks(client, futures, drain=isinstance(exc, Exception))  # not on a second Ctrl-C: that one means now
        raise
    return results


def _result(fut, name: str, i: int, what: str | None = None) -> Any:
    """``fut.result()``; a worker the task (or a task it takes) killed repeatedly is told as a
    StageError naming the batch, the task and ``what`` it works on."""
    try:
        return fut.result()
    except Exception as exc:
        if type(exc).__name__ != "KilledWorker":
            raise
        from nirlink.kernels import StageError

        died = getattr(exc, "task", None)
        if died is not None and died != fut.key:  # a task it depends on (e.g. of a shuffle)
            what = f"{what}; the task that died: {died}" if what else f"the task that died: {died}"
        raise StageError(f"{name}: task {i}{f' ({what})' if what else ''} killed its worker repeatedly - "
                         "most likely it needs more memory than a worker has (raise the workers' "
                         "memory limit or make partitions smaller)") from None


def submit_tasks(client, fn: Callable, arg_list: Sequence[tuple], *, name: str) -> list[Any]:
    """``fn(*args)`` for each of ``arg_list`` started on the cluster without waiting: their
    futures, for a later batch's tasks to take as arguments (each then starts as soon as the
    tasks it takes have finished, not when the whole batch has: ``run_tasks`` of that batch
    waits for it and raises a failure of either). Without a client: the results, computed
    here in order."""
    if client is None:
        return [fn(*args) for args in arg_list]
    import uuid

    token = uuid.uuid4().hex[:8]
    return [client.submit(fn, *args, key=f"nirlink-{name}-{i}-{token}", pure=False) for i, args in enumerate(arg_list)]


def wait_tasks(client, futures: list, *, name: str) -> list[Any]:
    """The results of ``submit_tasks``' futures, in order (without a client they are the
    results already); on a failure, the others cancelled and waited for (``cancel_tasks``)."""
    if client is None:
        return list(futures)
    try:
        return [_result(f, name, i) for i, f in enumerate(futures)]
    except BaseException as exc:
        cancel_tasks(client, futures, drain=isinstance(exc, Exception))
        raise


def cancel_tasks(client, futures: list, *, drain: bool = True) -> None:
    """Cancel ``futures`` and, with ``drain``, wait until none still runs (``_drain``): a stage
    that fails removes its directory, which they may be reading or writing."""
    if client is None or not futures:
        return
    client.cancel(futures)
    if drain:
        _drain(client, [f.key for f in futures])


def _drain(client, keys: list[str]) -> None:
    """Wait until no worker still runs one of ``keys``. Dask cannot stop a running thread: a
    cancelled task runs to its end and writes its output - under the stage's temporary
    directory, which the stage removes once this returns, so nothing is left behind. Bounded
    by the ``nirlink.jobs.drain-seconds`` setting; an unreachable cluster ends the wait."""
    import time

    import dask.config

    deadline = time.monotonic() + float(dask.config.get("nirlink.jobs.drain-seconds", 30))
    while time.monotonic() < deadline:
        try:
            running = client.run(_still_running, keys, on_error="return")
        except Exception:  # noqa: BLE001 - the cluster is gone: nothing of it writes any more
            return
        if not any(isinstance(n, int) and n for n in running.values()):
            return
        time.sleep(0.2)


def _still_running(keys: list[str], dask_worker=None) -> int:
    """How many of ``keys`` have a thread running on this worker (cancelled ones included)."""
    tasks = dask_worker.state.tasks
    return sum(1 for k in keys if k in tasks and tasks[k].state in ("executing", "long-running", "cancelled", "resumed"))


def _describe(args: tuple) -> str:
    """The partition a task works on, for error messages: its file path(s) when it has some."""
    for a in args:
        if isinstance(getattr(a, "path", None), str):  # an ingest ChunkTask
            groups = getattr(a, "row_groups", ())
            return a.path + (f" (row groups {groups[0]}-{groups[-1]})" if groups else "")
        if isinstance(a, str) and ("/" in a or a.endswith(".parquet")):
            return a
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], str):
            return a[0] + (f" and {len(a) - 1} more" if len(a) > 1 else "")
    return f"arguments {str(args)[:80]}"


def without_step(progress: Callable[..., None] | None) -> Progress | None:
    """A run_tasks progress callback from a ``(done, total[, rows=])`` one (None stays None)."""
    return None if progress is None else (lambda _step, done, total, **rows: progress(done, total, **rows))


def share(client, obj: Any) -> Any:
    """``obj`` as a Dask future sent once to every worker (or ``obj`` itself without a client):
    large arguments shared by many tasks must not travel inside each task's graph."""
    if client is None:
        return obj
    return client.scatter(obj, broadcast=True, hash=False)
