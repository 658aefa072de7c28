"""The radix index over sorted ids (kernels/_lookup.py) against np.searchsorted as the oracle."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nirlink.kernels._lookup import SortedIndex

I64 = st.integers(-(2 ** 63), 2 ** 63 - 1)
# hashes spread over 64 bits, and small integers that all share the index's first bucket
KEYS = st.one_of(st.lists(I64, max_size=300), st.lists(st.integers(-50, 50), max_size=300))


@settings(max_examples=300, deadline=None)
@given(KEYS, st.lists(st.one_of(I64, st.integers(-60, 60)), max_size=200), st.one_of(st.none(), st.integers(1, 12)),
       st.data())
def test_find_is_searchsorted_left(keys, needles, bits, data):
    keys = np.sort(np.array(keys, dtype=np.int64))
    if len(keys):  # some needles among the keys, and the extremes
        needles += data.draw(st.lists(st.sampled_from(keys.tolist()), max_size=50))
    needles += [-(2 ** 63), 2 ** 63 - 1]
    needles = np.array(needles, dtype=np.int64)
    index = SortedIndex(keys, bits=bits)
    assert np.array_equal(index.find(needles), np.searchsorted(keys, needles, side="left"))


def test_unsorted_keys_and_bad_bits_are_refused():
    with pytest.raises(ValueError, match="sorted"):
        SortedIndex(np.array([3, 1, 2], dtype=np.int64))
    with pytest.raises(ValueError, match="bits"):
        SortedIndex(np.array([1, 2], dtype=np.int64), bits=40)
