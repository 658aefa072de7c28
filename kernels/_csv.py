"""A CSV record scanner: record boundaries and field counts at memory speed.

pyarrow's CSV reader parses fast but does not say *where* a malformed line was (its
invalid-row handler gets no line number), so ingest scans the bytes once with this
kernel to number every record and find those with the wrong number of fields. The
quoting rules follow pyarrow's defaults: a field starting with the quote character is
quoted, a doubled quote inside it is a literal quote, a quote elsewhere is literal;
empty lines are skipped; CRLF and LF both end a record.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["CsvScanner"]

# state slots
_IN_QUOTE, _PENDING_QUOTE, _AT_FIELD_START, _FIELDS, _RECORD, _NONEMPTY, _NBAD, _CUR_LEN, _MAX_LEN = range(9)


@njit(nogil=True, cache=True)
def _scan(chunk, delim, quote, expected, state, bad, final):
    in_quote = state[_IN_QUOTE]
    pending = state[_PENDING_QUOTE]
    at_start = state[_AT_FIELD_START]
    fields = state[_FIELDS]
    record = state[_RECORD]
    nonempty = state[_NONEMPTY]
    nbad = state[_NBAD]
    cur = state[_CUR_LEN]
    longest = state[_MAX_LEN]
    local = 0
    for j in range(chunk.shape[0]):
        c = chunk[j]
        cur += 1
        if pending == 1:
            pending = 0
            if c == quote:
                continue  # "" inside a quoted field
            in_quote = 0  # the quote closed the field; c is processed normally
        if in_quote == 1:
            if c == quote:
                pending = 1
            continue
        if c == 10 or c == 13:
            if nonempty == 1:
                if fields + 1 != expected:
                    if local < bad.shape[0]:
                        bad[local] = record
                    local += 1
                    nbad += 1
                record += 1
            if cur > longest:
                longest = cur
            cur = 0
            fields = 0
            at_start = 1
            nonempty = 0
            continue
        nonempty = 1
        if c == delim:
            fields += 1
            at_start = 1
            continue
        if at_start == 1 and c == quote:
            in_quote = 1
        at_start = 0
    if final == 1:
        if pending == 1:
            in_quote = 0
        if nonempty == 1:
            if fields + 1 != expected:
                if local < bad.shape[0]:
                    bad[local] = record
                local += 1
                nbad += 1
            record += 1
            nonempty = 0
        if cur > longest:
            longest = cur
    state[_CUR_LEN] = cur
    state[_MAX_LEN] = longest
    state[_IN_QUOTE] = in_quote
    state[_PENDING_QUOTE] = pending
    state[_AT_FIELD_START] = at_start
    state[_FIELDS] = fields
    state[_RECORD] = record
    state[_NONEMPTY] = nonempty
    state[_NBAD] = nbad


class CsvScanner:
    """Feed byte chunks in order; then ``records`` (data records, header included as record 0
    if fed) and ``bad_records`` (0-based record numbers with a wrong field count)."""

    def __init__(self, *, delimiter: bytes, quote: bytes = b'"', expected_fields: int):
        if len(delimiter) != 1 or len(quote) != 1:
            raise ValueError("delimiter and quote must be one byte each")
        self.delim = delimiter[0]
        self.quote = quote[0]
        self.expected = int(expected_fields)
        self.state = np.zeros(9, np.int64)
        self.state[_AT_FIELD_START] = 1
        self._bad: list[np.ndarray] = []

    def feed(self, chunk: bytes | np.ndarray, *, final: bool = False) -> None:
        arr = np.frombuffer(chunk, np.uint8) if isinstance(chunk, (bytes, bytearray, memoryview)) else chunk
        before = int(self.state[_NBAD])
        saved = self.state.copy()
        room = np.empty(4096, np.int64)
        _scan(arr, self.delim, self.quote, self.expected, self.state, room, 1 if final else 0)
        found = int(self.state[_NBAD]) - before
        if found > len(room):  # a very broken chunk: scan it again with room for every bad record
            self.state[:] = saved
            room = np.empty(found, np.int64)
            _scan(arr, self.delim, self.quote, self.expected, self.state, room, 1 if final else 0)
        self._bad.append(room[:found].copy())

    @property
    def records(self) -> int:
        return int(self.state[_RECORD])

    @property
    def longest_record(self) -> int:
        """Bytes of the longest record (including its line end)."""
        return int(self.state[_MAX_LEN])

    @property
    def in_quote(self) -> bool:
        return bool(self.state[_IN_QUOTE])

    @property
    def bad_records(self) -> np.ndarray:
        return np.concatenate(self._bad) if self._bad else np.zeros(0, np.int64)
