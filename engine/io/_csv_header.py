"""The header line of a CSV file: separator, encoding and column names, read before any task.

Names are trimmed (" NIR " is the column NIR). A first line that looks like a data row (a
file without a header) is refused without echoing it: its cells would be a person's NIR,
names and birth date, and an error message travels to logs, state and reports.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

from nirlink.kernels import InputFileError

if TYPE_CHECKING:
    from ._readers import CsvOptions

__all__ = ["sniff_csv", "data_like_fields"]


# A header cell that holds a value rather than a name: a date (1977-12-16, 16/12/1977,
# 2021-03), a run of 5+ digits (NIR, SIRET, amount, record id) or a decimal number.
_DATA_LIKE = re.compile(r"\d{1,4}[-/.]\d{1,2}([-/.]\d{1,4})?|.*\d{5}.*|[-+]?\d*[.,]\d+")


def data_like_fields(header: list[str]) -> list[int]:
    """1-based positions of the header cells that look like values (a file without a header
    line, whose first row was read as one)."""
    return [i + 1 for i, h in enumerate(header) if _DATA_LIKE.fullmatch(h.strip())]


def sniff_csv(path: Path, opts: CsvOptions) -> tuple[str, str, bool, list[str]]:
    """(separator, encoding, strict_utf8, header columns) from the first line of a CSV file.

    Header names are trimmed (" NIR " is the column NIR). A first line that looks like a data
    row is refused without echoing it: its cells would be a person's NIR, names, birth date.
    Lines may end with LF, CRLF or CR alone.
    """
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if not head.strip():
        raise InputFileError(f"{path}: empty file (no header line)")
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    line = re.split(rb"\r\n|\r|\n", head, maxsplit=1)[0]
    encoding = opts.encoding
    try:
        text = line.decode("utf-8")
        if encoding == "auto":
            encoding = "utf-8"
    except UnicodeDecodeError:
        if encoding == "utf-8":
            raise InputFileError(f"{path}: header line is not valid UTF-8 (encoding = 'utf-8' was asked)") from None
        encoding = "latin-1"
        text = line.decode("latin-1")
    if "\x00" in text:
        raise InputFileError(f"{path}: NUL bytes in the header line: not a CSV text file")
    sep = opts.separator
    if sep == "auto":
        counts = {s: text.count(s) for s in (";", ",", "\t", "|")}
        sep = max(counts, key=counts.get)
        if counts[sep] == 0:
            sep = ","
    header = next(csv.reader(io.StringIO(text), delimiter=sep, quotechar=opts.quote))
    header = [h.strip() for h in header]
    data_like = data_like_fields(header)
    if data_like:
        shown = ", ".join(map(str, data_like[:10])) + (" ..." if len(data_like) > 10 else "")
        raise InputFileError(f"{path}: the first line looks like a data row, not a header (field(s) {shown} of "
                             f"{len(header)} hold dates or numbers, not column names): the file needs a header "
                             "line naming its columns (values are not shown: they may identify a person)")
    if any(h == "" for h in header):
        empty = [i + 1 for i, h in enumerate(header) if h == ""]
        raise InputFileError(f"{path}: empty column name in the header line (field(s) "
                             f"{', '.join(map(str, empty[:10]))} of {len(header)})")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise InputFileError(f"{path}: duplicate column names in the header: {', '.join(dup)}")
    strict = opts.encoding == "utf-8"
    return sep, encoding, strict, header
