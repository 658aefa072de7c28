"""Row hashes (signature ids) against a plain-Python FNV-1a + splitmix64 reference, and the
fused squeeze of the declared NIR against Python's own string methods."""

import re

import numpy as np
import pyarrow as pa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nirlink.kernels._hash import distinct_first, hash_rows, hash_rows_squeezed

M64 = (1 << 64) - 1
PRIME = 0x100000001B3


def _fnv(h, data: bytes):
    for b in data:
        h = ((h ^ b) * PRIME) & M64
    return h


def reference(*rows_by_column, ints=()):
    """One int64 per row: FNV-1a over each value's UTF-8 bytes, or an int's 8 little-endian
    bytes, then 0xFF; a null is 0xFE (and 0xFF in a string column: not in an integer one,
    whose positions are ``ints``); then splitmix64's finaliser."""
    out = []
    for values in zip(*rows_by_column):
        h = 0xCBF29CE484222325
        for k, v in enumerate(values):
            if v is None:
                h = ((h ^ 0xFE) * PRIME) & M64
                if k not in ints:
                    h = ((h ^ 0xFF) * PRIME) & M64
                continue
            h = _fnv(h, v.encode() if isinstance(v, str) else (v & M64).to_bytes(8, "little"))
            h = ((h ^ 0xFF) * PRIME) & M64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & M64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & M64
        h ^= h >> 31
        out.append(h - (1 << 64) if h >= 1 << 63 else h)
    return out


def squeezed(v):
    return None if v is None else re.sub(r"[ .\-\t]", "", v).upper()


# what a declared NIR column holds: digits, 2A/2B, separators, lower case, now and then a
# letter outside ASCII (which upper-cases through Unicode: the Arrow path)
nir_text = st.one_of(st.none(), st.text(alphabet="0123456789aAbB .-\t_é", max_size=22))
ints = st.one_of(st.none(), st.integers(-(2 ** 63), 2 ** 63 - 1))


@given(st.lists(st.tuples(nir_text, st.one_of(st.none(), st.text(max_size=8)), ints), max_size=40))
@example([("1 84.12-75\t123 45", "DUPONT", 1984), ("184127512345", "DUPONT", 1984)])
@example([("2a", None, None), ("é", "x", 0)])
def test_squeezed_hash_equals_the_reference_of_the_squeezed_values(rows):
    first = [r[0] for r in rows]
    names = [r[1] for r in rows]
    years = [r[2] for r in rows]
    got = hash_rows_squeezed(pa.array(first, pa.string()), pa.array(names, pa.string()), pa.array(years, pa.int64()))
    assert got.tolist() == reference([squeezed(v) for v in first], names, years, ints=(2,))
    # and hash_rows of the squeezed column gives the same ids
    plain = hash_rows(pa.array([squeezed(v) for v in first], pa.string()), pa.array(names, pa.string()),
                      pa.array(years, pa.int64()))
    assert got.tolist() == plain.tolist()


@given(st.lists(nir_text, min_size=1, max_size=30), st.integers(0, 29))
def test_squeezed_hash_of_a_slice_reads_only_the_slice(values, start):
    """A sliced Arrow array (an offset into shared buffers) hashes as the same values alone."""
    start = min(start, len(values) - 1)
    arr = pa.array(values, pa.string()).slice(start)
    assert hash_rows_squeezed(arr).tolist() == reference([squeezed(v) for v in values[start:]])


def test_a_same_identity_written_two_ways_gets_one_id():
    a = hash_rows_squeezed(pa.array(["2 84 12 2a 123 456", "28412 2A123456"]))
    assert a[0] == a[1]
    assert isinstance(a, np.ndarray) and a.dtype == np.int64


_INT64 = st.integers(-(2**63), 2**63 - 1)


@given(st.lists(st.one_of(st.integers(-3, 3), _INT64), max_size=300),
       st.lists(_INT64, min_size=1, max_size=5))
@example([], [0])
@example([0] * 50, [0])
def test_distinct_first_is_numpy_unique(values, pool):
    """Oracle: np.unique's first indices and counts, for few distinct values (repeats drawn
    from a small pool, the ingest case) and for many (the table grows)."""
    rng = np.random.default_rng(len(values))
    mixed = np.array(values + [pool[i] for i in rng.integers(0, len(pool), 3 * len(values))], np.int64)
    for arr in (np.array(values, np.int64), mixed):
        _, first, counts = np.unique(arr, return_index=True, return_counts=True)
        got_first, got_counts = distinct_first(arr)
        assert got_first.tolist() == first.tolist() and got_counts.tolist() == counts.tolist()


def test_distinct_first_grows_its_table_for_all_distinct_values():
    values = np.random.default_rng(7).permutation(np.arange(-50_000, 50_000, dtype=np.int64) * 7919)
    first, counts = distinct_first(values)
    assert (counts == 1).all() and np.array_equal(values[first], np.sort(values))


_CELL = st.one_of(st.none(), st.sampled_from(["", "A", "AB", "a", "É", "A B", "AB "]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_CELL, _CELL, st.one_of(st.none(), st.integers(-2, 2))), max_size=200),
       st.booleans())
def test_distinct_rows_groups_exactly_the_equal_rows(rows, collide):
    """Oracle: a dict of the rows' Python tuples (None apart from every value, "" included).
    With every hash made equal (a test's worst collision) the groups still hold only equal
    rows, each row's group starts at an equal row no later than it."""
    import pyarrow as pa

    from nirlink.kernels._hash import distinct_rows

    cols = [pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.large_string()),
            pa.array([r[2] for r in rows], pa.int16())]
    first, inverse = distinct_rows(*cols, hashes=np.zeros(len(rows), np.int64) if collide else None)
    assert inverse.dtype == np.int32 and len(inverse) == len(rows)
    assert sorted(set(inverse.tolist())) == list(range(len(first)))
    for i, row in enumerate(rows):
        f = first[inverse[i]]
        assert f <= i and rows[f] == row and inverse[f] == inverse[i]
    if not collide:  # one group per distinct row, in order of first occurrence
        oracle: dict = {}
        for i, row in enumerate(rows):
            oracle.setdefault(row, i)
        assert first.tolist() == sorted(oracle.values())
