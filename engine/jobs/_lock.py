"""The output directory's lock, on disk: one run at a time writes into a directory.

``_job/lock`` (JSON: job id, token, process id, host, since, heartbeat) names the run that
holds the directory. Whether a run may take it is decided by ``_state.lock_verdict`` (free,
held by this same job, held by a finished or dead run: taken; held by a live or queued run:
refused, naming it). Every read-decide-write of the lock - and of a run's state by someone
other than its driver (``status`` declaring a driver lost, ``cancel`` of a queued job) -
happens under ``mutex``: an exclusive ``flock`` on ``_job/.mutex``, held for milliseconds,
which the kernel releases when its holder dies, so two runs can never both take a stale
lock (checked by tests/test_jobs.py with processes racing for one). The lock file itself
is written by rename, so a reader outside the mutex sees a whole record or none.

Tried and rejected: taking a stale lock over by renaming it aside then creating a fresh one
with O_EXCL - between a contender's check and its rename another may already have taken
the lock, and the rename then steals a live lock. The mutex makes check-then-write atomic.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from nirlink.engine import _config
from nirlink.engine.io._datasets import read_json, write_json
from nirlink.kernels import JobError

from ._state import LockHolder, LockVerdict, lock_verdict

__all__ = ["mutex", "read_lock", "check_lock", "acquire_lock", "refresh_lock", "release_lock", "DirectoryBusy"]

_local = threading.local()
_threads = threading.RLock()  # flock between two fds of one process works on local disks, not on NFS


class DirectoryBusy(JobError):
    """Another run holds the output directory."""


def _root(directory: str | os.PathLike) -> Path:
    return Path(directory) / "_job"


@contextlib.contextmanager
def mutex(directory: str | os.PathLike) -> Iterator[None]:
    """Hold the directory's mutex (re-entrant within a thread)."""
    key = str(Path(directory).resolve())
    held = getattr(_local, "held", None)
    if held is None:
        held = _local.held = set()
    if key in held:
        yield
        return
    root = _root(directory)
    if not root.is_dir():
        from nirlink.engine.io._datasets import make_private_dir

        make_private_dir(root)  # the job directory holds identities: private
    with _threads:
        fd = os.open(root / ".mutex", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _flock(fd)
            held.add(key)
            try:
                yield
            finally:
                held.discard(key)
        finally:
            os.close(fd)  # releases the flock


def _flock(fd: int) -> None:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise JobError("the output directory's file system does not support file locks (flock); nirlink needs "
                           "them to keep two runs out of one directory: use a local disk or NFSv4") from None
        raise


def read_lock(directory: str | os.PathLike) -> LockHolder | None:
    """The lock's holder; ``None`` when the directory is not locked. An unreadable lock file
    (written by hand, or by another program) counts as a holder that is long dead."""
    path = _root(directory) / "lock"
    try:
        return LockHolder.from_json(read_json(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return LockHolder(job_id="(unreadable lock)", token="", pid=-1, host="", since=0.0, heartbeat=0.0)


def _alive(holder: LockHolder) -> bool | None:
    """Whether the holder's process exists, when it runs on this host; ``None`` when unknown."""
    if holder.host != socket.gethostname() or holder.pid <= 0:
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_lock(directory: str | os.PathLike, job_id: str) -> LockVerdict:
    """Whether ``job_id`` could take the directory now (reads only; no mutex)."""
    from ._registry import read_state

    holder = read_lock(directory)
    state = None
    if holder is not None:
        with contextlib.suppress(Exception):
            state = read_state(directory, holder.job_id)
    return lock_verdict(holder, state, job_id=job_id, now=time.time(),
                        stale_after=float(_config.get("jobs.stale-after-seconds", 60)),
                        holder_alive=_alive(holder) if holder else None)


def _write(directory, holder: LockHolder) -> None:
    write_json(_root(directory) / "lock", holder.to_json())


def acquire_lock(directory: str | os.PathLike, job_id: str, *, queued: bool = False) -> tuple[LockHolder, LockVerdict]:
    """Take the directory for ``job_id`` or raise DirectoryBusy naming the run that holds it.

    When the lock is taken from a run whose driver is gone, that run is recorded as failed
    (``DriverLost``) before the lock changes hands."""
    from ._registry import record_event

    with mutex(directory):
        verdict = check_lock(directory, job_id)
        if not verdict.take:
            raise DirectoryBusy(f"{Path(directory)} is in use: {verdict.reason}")
        old = read_lock(directory)
        if verdict.close_holder is not None and old is not None:
            with contextlib.suppress(Exception):  # the holder's record may be unreadable: the lock still changes hands
                record_event(directory, old.job_id, verdict.close_holder)
        now = time.time()
        holder = LockHolder(job_id=job_id, token=uuid.uuid4().hex, pid=os.getpid(), host=socket.gethostname(),
                            since=now, heartbeat=now, queued=queued)
        _write(directory, holder)
        return holder, verdict


def refresh_lock(directory: str | os.PathLike, holder: LockHolder) -> LockHolder | None:
    """Write a new heartbeat into the lock; ``None`` when ``holder`` no longer holds it (it
    was taken over because this driver looked dead): the driver must stop."""
    with mutex(directory):
        current = read_lock(directory)
        if current is None or current.token != holder.token:
            return None
        from dataclasses import replace

        holder = replace(holder, heartbeat=time.time())
        _write(directory, holder)
        return holder


def release_lock(directory: str | os.PathLike, job_id: str, token: str | None = None) -> bool:
    """Remove the lock if ``job_id`` (and ``token``, when given) still holds it."""
    with mutex(directory):
        current = read_lock(directory)
        if current is None or current.job_id != job_id or (token is not None and current.token != token):
            return False
        with contextlib.suppress(FileNotFoundError):
            (_root(directory) / "lock").unlink()
        return True
