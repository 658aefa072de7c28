"""Zero-copy views of Arrow string arrays as numpy buffers, and the way back.

Kernels work on the three buffers of an Arrow string array (validity bitmap, int32 or
int64 offsets, UTF-8 bytes) so that a per-row Python loop never happens.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

__all__ = ["string_buffers", "string_array_from_buffers", "fixed_width_strings", "valid_mask", "trimmed", "byte_classes",
           "decimal128_words", "compact_dictionary"]


def _combined(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.large_string())
    if pa.types.is_null(arr.type):
        arr = pa.nulls(len(arr), pa.string())
    return arr


def valid_mask(arr: pa.Array) -> np.ndarray:
    """Boolean numpy array, True where the value is not null."""
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=np.bool_)
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)


def string_buffers(arr: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(offsets, data, valid)`` for a string/large_string array.

    ``offsets`` has ``len(arr) + 1`` entries (int32 or int64) relative to ``data`` (uint8);
    ``valid`` is a boolean array. Views share memory with the Arrow array where possible.
    """
    arr = _combined(arr)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise TypeError(f"expected a string array, got {arr.type}")
    n = len(arr)
    bufs = arr.buffers()
    off_dtype = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    width = np.dtype(off_dtype).itemsize
    offsets = np.frombuffer(bufs[1], dtype=off_dtype, count=n + 1, offset=arr.offset * width) if n else np.zeros(1, off_dtype)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets, data, valid_mask(arr)


def string_array_from_buffers(offsets: np.ndarray, data: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Build a string (int32 offsets) or large_string (int64 offsets) array from numpy buffers."""
    n = len(offsets) - 1
    typ = pa.large_string() if offsets.dtype == np.int64 else pa.string()
    if offsets.dtype not in (np.int32, np.int64):
        raise TypeError(f"offsets must be int32 or int64, got {offsets.dtype}")
    mask_buf = None
    null_count = 0
    if valid is not None and not valid.all():
        mask_buf = pa.py_buffer(np.packbits(valid.astype(np.uint8), bitorder="little"))
        null_count = int(n - valid.sum())
    return pa.Array.from_buffers(
        typ, n, [mask_buf, pa.py_buffer(np.ascontiguousarray(offsets)), pa.py_buffer(np.ascontiguousarray(data))], null_count
    )


def fixed_width_strings(data: np.ndarray, width: int, valid: np.ndarray | None = None) -> pa.Array:
    """A string array of ``len(data) // width`` values, each ``width`` bytes of ``data``."""
    n = len(data) // width
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64 if n * width >= 2**31 else np.int32)
    return string_array_from_buffers(offsets, data, valid)


@njit(nogil=True, cache=True, inline="always")
def trimmed(data, a, b):
    """The bounds of a value without its leading/trailing spaces, tabs and carriage returns."""
    while a < b and (data[a] == 32 or data[a] == 9):
        a += 1
    while b > a and (data[b - 1] == 32 or data[b - 1] == 9 or data[b - 1] == 13):
        b -= 1
    return a, b


def byte_classes(offsets: np.ndarray, data: np.ndarray) -> tuple[bool, bool]:
    """Whether the bytes of a string array's values (``string_buffers``; null slots' bytes
    included) hold a byte >= 0x80 (non-ASCII), and whether they may hold a control byte (one
    below 0x20, tab, line feed and carriage return included, or 0x7F): numpy's vectorised
    reductions over the bytes (about 4 GB/s here, against 1.5 for a per-value kernel), so that
    the checks of plain text (the common case) skip their per-value kernels."""
    if len(offsets) < 2 or offsets[-1] == offsets[0]:
        return False, False
    x = data[int(offsets[0]):int(offsets[-1])]
    return bool(x.max() >= 0x80), bool(x.min() < 0x20) or bool((x == 0x7F).any())


@njit(nogil=True, cache=True)
def decimal128_words(values, out):
    """``out[2i]``, ``out[2i + 1]``: the 128-bit two's complement of int64 ``values[i]`` (low
    word, sign word), the buffer of a decimal128 array whose unscaled values they are; one
    pass (numpy's strided assignment and shift took two, 2.4 against 1.2 ms for 1.3M values)."""
    for i in range(values.shape[0]):
        v = values[i]
        out[2 * i] = v
        out[2 * i + 1] = v >> 63


@njit(nogil=True, cache=True)
def _first_seen(indices, valid, slots, out, seen):
    """``out[i]``: the rank of ``indices[i]`` among the distinct valid indices in order of first
    appearance (``seen`` lists them in that order; returns how many); ``slots`` (one entry per
    dictionary value, all -1) is left all -1 again. Null rows get 0."""
    k = 0
    for i in range(indices.shape[0]):
        if not valid[i]:
            out[i] = 0
            continue
        p = indices[i]
        s = slots[p]
        if s < 0:
            s = k
            slots[p] = k
            seen[k] = p
            k += 1
        out[i] = s
    for j in range(k):
        slots[seen[j]] = -1
    return k


def compact_dictionary(array: pa.DictionaryArray, slots: np.ndarray | None = None) -> pa.DictionaryArray:
    """The same values with a dictionary of only those the rows use, in order of first
    appearance (what Parquet's dictionary encoder builds from the decoded values, so that a
    writer takes it as it is instead of hashing a string per row), nulls kept. One pass over
    the indices and a gather of the distinct values only: decoding every row from a large
    dictionary (the attach lookup's NIRs, ~7M at 2M persons) cost up to ~70 ns a row, caches cold.
    ``slots``: an int32 array of at least the dictionary's length, all -1 (left so), to reuse
    across calls on one dictionary; allocated when not given."""
    n, size = len(array), len(array.dictionary)
    if slots is None:
        slots = np.full(size, -1, np.int32)
    elif len(slots) < size:
        raise ValueError(f"compact_dictionary: {len(slots)} slots for a dictionary of {size} values")
    indices = array.indices
    width = indices.type.bit_width // 8
    codes = np.frombuffer(indices.buffers()[1], dtype=f"int{width * 8}", count=n,
                          offset=indices.offset * width) if n else np.zeros(0, np.int32)
    valid = valid_mask(indices)
    out = np.empty(n, np.int32)
    seen = np.empty(min(n, size), np.int64)
    k = _first_seen(codes, valid, slots, out, seen)
    values = array.dictionary.take(pa.array(seen[:k]))
    if values.null_count:  # a null inside a dictionary: no Parquet dictionary takes it
        return array.cast(array.type.value_type)
    # a value twice in the dictionary (the lookup's NIRs: one per signature, and a person's
    # signatures share their NIR) would be twice in this one, and Parquet's writer then
    # falls back to encoding the values plainly: hash the k values used, not the rows
    unique = pc.dictionary_encode(values)
    if len(unique.dictionary) < k:
        out = np.asarray(unique.indices, np.int32)[out]
        values = unique.dictionary
    mask = None if valid.all() else ~valid
    return pa.DictionaryArray.from_arrays(pa.array(out, mask=mask), values)
