"""glibc's heap kept while a synthetic block runs: freed arrays reused, not returned and faulted in again.

Dask starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (distributed's
``nanny.pre-spawn-environ``, to hand memory back to the system), which also fixes glibc's
mmap threshold at 128 KiB: every numpy array above it is a fresh ``mmap`` whose pages fault
in (and are zeroed) on first touch, and goes back to the system when freed. A block allocates
and frees its part's arrays (a few to tens of MB each) dozens of times: on the benchmark
machine that was ~0.6 s of system time in a 50,000-person block of ~2.3 s of CPU, and the
faults also slowed the drawing thread (1.4 s against 0.7 s of its CPU). With arrays up to 32 MiB
(glibc's largest mmap threshold) taken from the heap and 1 GiB of free heap kept, the block's
CPU was ~1.4 s (benchmarks/README.md, "Synthetic data"). The heap also grows 256 MiB at a time.

``kept_heap`` sets that for the time of a block and puts back the thresholds the process
started with (the environment's, else glibc's defaults), then trims the heap, so a long-lived
worker shared with other stages gets its memory back. Blocks running at once on one worker's
threads share one setting (the last to leave restores it). Elsewhere than glibc: a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from contextlib import contextmanager

__all__ = ["kept_heap"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_MAX = 32 << 20  # glibc's upper bound for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2)
_KEEP = 1 << 30
_PAD = 256 << 20  # the heap grown by this much at a time: fewer system calls, pages faulted once
_DEFAULTS = {_M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", 128 << 10),
             _M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", 128 << 10),
             _M_TOP_PAD: ("MALLOC_TOP_PAD_", 128 << 10)}
_lock = threading.Lock()
_inside = 0


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - absent from musl and others
        libc.malloc_trim
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018 - glibc itself
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def _started_with(param: int) -> int:
    name, default = _DEFAULTS[param]
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@contextmanager
def kept_heap():
    """Arrays up to 32 MiB from the heap, grown 256 MiB at a time, 1 GiB of free heap kept,
    while inside (glibc only)."""
    global _inside
    if _LIBC is None:
        yield
        return
    with _lock:
        if _inside == 0:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, _KEEP)
            _LIBC.mallopt(_M_TOP_PAD, _PAD)
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                _LIBC.mallopt(_M_MMAP_THRESHOLD, _started_with(_M_MMAP_THRESHOLD))
                _LIBC.mallopt(_M_TRIM_THRESHOLD, _started_with(_M_TRIM_THRESHOLD))
                _LIBC.mallopt(_M_TOP_PAD, _started_with(_M_TOP_PAD))
                _LIBC.malloc_trim(0)
