"""Date, number and CSV-record parsing kernels against Python's datetime, decimal and csv modules."""

import csv
import datetime as dt
import io
import re
from decimal import Decimal, InvalidOperation

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from nirlink.kernels._csv import CsvScanner
from nirlink.kernels._dates import (DATE_BAD, DATE_MISSING, DATE_OK, civil_parts, first_day_of_month, month_index,
                                   parse_dates)
from nirlink.kernels._numbers import (
    DECIMAL_AUTO,
    DECIMAL_COMMA,
    DECIMAL_POINT,
    NUM_BAD,
    NUM_MISSING,
    NUM_OK,
    parse_numbers,
)

# ------------------------------------------------------------------ dates


# The time forms nirlink accepts after a date (a subset of ISO 8601 that Python's
# datetime.fromisoformat also accepts); fromisoformat judges whether the values are real.
TIME_FORM = re.compile(r"[0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?")


def ref_time_ok(tail):
    if not TIME_FORM.fullmatch(tail):
        return False
    try:
        dt.datetime.fromisoformat("2000-01-01T" + tail)
    except ValueError:
        return False
    return True


def ref_date(text, allow_unknown):
    """(status, y, m, d) with Python's datetime as the judge of real dates and times."""
    if text is None or text.strip() == "":
        return DATE_MISSING, 0, 0, 0
    s = text.strip(" \t\r")
    forms = []
    if len(s) >= 10 and s[4] in "-/" and s[7] == s[4] and (len(s) == 10 or s[10] in "T "):
        forms.append((s[0:4], s[5:7], s[8:10]))
    elif len(s) == 10 and s[2] in "/-." and s[5] == s[2]:
        forms.append((s[6:10], s[3:5], s[0:2]))
    elif len(s) == 8:
        forms.append((s[0:4], s[4:6], s[6:8]))
    elif len(s) == 7 and s[4] in "-/":
        forms.append((s[0:4], s[5:7], "00"))
    elif len(s) == 7 and s[2] == "/":
        forms.append((s[3:7], s[0:2], "00"))
    if not forms:
        return DATE_BAD, 0, 0, 0
    if len(s) > 10 and not ref_time_ok(s[11:]):
        return DATE_BAD, 0, 0, 0
    ys, ms, ds = forms[0]
    if not all(part.isascii() and part.isdigit() for part in (ys, ms, ds)):
        return DATE_BAD, 0, 0, 0
    y, m, d = int(ys), int(ms), int(ds)
    month_form = len(s) == 7
    if y == 0 or m > 12 or (m == 0 and d != 0):
        return DATE_BAD, 0, 0, 0
    if m == 0 and not allow_unknown:
        return DATE_BAD, 0, 0, 0
    if m > 0 and d > 0:
        try:
            dt.date(y, m, d)
        except ValueError:
            return DATE_BAD, 0, 0, 0
    if d == 0 and not allow_unknown and not month_form:
        return DATE_BAD, y, m, d
    return DATE_OK, y, m, d


date_text = st.one_of(
    st.dates(dt.date(1800, 1, 1), dt.date(2100, 12, 31)).flatmap(lambda d: st.sampled_from([
        d.isoformat(), d.strftime("%d/%m/%Y"), d.strftime("%Y%m%d"), d.strftime("%d-%m-%Y"), d.strftime("%d.%m.%Y"),
        d.isoformat() + "T00:00:00", d.strftime("%Y-%m"), d.strftime("%m/%Y"), f" {d.isoformat()} "])),
    st.builds(lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}", st.integers(0, 2100), st.integers(0, 14), st.integers(0, 33)),
    st.text(st.sampled_from("0123456789-/. T"), max_size=12),
    st.none(),
)


@given(st.lists(date_text, max_size=30), st.booleans())
@example(["1962-00-00", "1962-05-00", "1900-02-30", "2000-02-29", "1900-02-29", "29/02/2001", "0000-01-01",
          "1962-00-12", "2021-13", "", None], True)
def test_dates_match_datetime(values, allow_unknown):
    r = parse_dates(pa.array(values, pa.string()), allow_unknown=allow_unknown)
    for i, v in enumerate(values):
        status, y, m, d = ref_date(v, allow_unknown)
        assert r["status"][i] == status, (v, r["status"][i], status)
        if status == DATE_OK:
            assert (r["year"][i], r["month"][i], r["day"][i]) == (y, m, d), v
            if m > 0:
                assert r["ordinal"][i] == (dt.date(y, m, max(d, 1)) - dt.date(1970, 1, 1)).days


two_digits = st.integers(0, 99).map(lambda v: f"{v:02d}")
time_text = st.builds(
    lambda hh, mm, ss, frac, tz, junk: f"{hh}:{mm}{ss}{frac if ss else ''}{tz}{junk}",
    st.one_of(two_digits, st.sampled_from(["1", "2a", "", "24"])),
    two_digits,
    st.one_of(st.just(""), two_digits.map(lambda v: ":" + v)),
    st.one_of(st.just(""), st.tuples(st.sampled_from(".,"), st.text("0123456789", max_size=9)).map("".join)),
    st.one_of(st.sampled_from(["", "Z", "z", "+", "-01:"]),
              st.tuples(st.sampled_from("+-"), two_digits, st.sampled_from(["", ":", "x"]),
                        st.one_of(st.just(""), two_digits)).map("".join)),
    st.one_of(st.just(""), st.just(""), st.text(st.sampled_from(" xyzT:0"), max_size=3)),
)


@given(st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31)), st.sampled_from(["T", " ", "t", "_"]), time_text)
@example(dt.date(2015, 1, 1), " ", "xyz")
@example(dt.date(2015, 1, 1), "T", "25:99:99")
@example(dt.date(2015, 1, 1), "T", "23:59:59.999999+01:00")
@example(dt.date(2015, 1, 1), " ", "10:30Z")
def test_a_time_after_the_date_must_be_a_real_time(day, sep, time):
    """The date is kept only when what follows it is a real time (datetime.fromisoformat agrees)."""
    text = f"{day.isoformat()}{sep}{time}"
    r = parse_dates(pa.array([text]), allow_unknown=False)
    ok = sep in "T " and ref_time_ok(time.rstrip(" ")) and not time.startswith(" ")
    assert r["status"][0] == (DATE_OK if ok else DATE_BAD), text
    if ok:
        assert (r["year"][0], r["month"][0], r["day"][0]) == (day.year, day.month, day.day)
        assert r["ordinal"][0] == (day - dt.date(1970, 1, 1)).days
        assert dt.datetime.fromisoformat(text.strip()).date() == day


@given(st.lists(st.one_of(st.integers(-800_000, 2_900_000), st.integers(7000, 7400)), max_size=50))
@example([0, -1, 59, 60, -719468, -719469, 11016, 2_932_896])
def test_month_index_matches_numpy_datetime64(days):
    days = np.array(days, np.int64)
    expected = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) + 1970 * 12
    got = month_index(days)
    assert got.tolist() == expected.tolist()
    first = (got - 1970 * 12).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    assert first_day_of_month(got).tolist() == first.tolist()
    assert month_index(days, valid=np.zeros(len(days), bool)).tolist() == [-1] * len(days)


@given(st.lists(st.tuples(st.integers(-719_162, 2_932_896), st.booleans()), max_size=50))
@example([(0, True), (-1, True), (59, True), (-719_162, True), (2_932_896, True), (11_016, False)])
def test_civil_parts_match_numpy_datetime64(values):
    """Year, month and day of day counts (years 1-9999) as numpy's calendar gives them; 0 where invalid."""
    days = np.array([d for d, _ in values], np.int32)
    valid = np.array([v for _, v in values], bool)
    d = days.astype("datetime64[D]")
    months = d.astype("datetime64[M]")
    want_year = d.astype("datetime64[Y]").astype(np.int64) + 1970
    want_month = months.astype(np.int64) % 12 + 1
    want_day = (d - months.astype("datetime64[D]")).astype(np.int64) + 1
    year, month, day = civil_parts(days, valid)
    assert (year.dtype, month.dtype, day.dtype) == (np.int16, np.int8, np.int8)
    assert year.tolist() == np.where(valid, want_year, 0).tolist()
    assert month.tolist() == np.where(valid, want_month, 0).tolist()
    assert day.tolist() == np.where(valid, want_day, 0).tolist()


# ------------------------------------------------------------------ numbers


def ref_number(text, decimal):
    if text is None or text.strip(" \t\r") == "":
        return NUM_MISSING, 0.0
    s = text.strip(" \t\r")
    if decimal == DECIMAL_AUTO:
        dec = "," if s.rfind(",") > s.rfind(".") else "."
    else:
        dec = "." if decimal == DECIMAL_POINT else ","
    thousands = {" ", "'", "\u00a0", "\u202f", "," if dec == "." else "."}
    sign = ""
    if s[0] in "+-":
        sign, s = s[0], s[1:]
    if dec in s:
        intpart, _, frac = s.partition(dec)
    else:
        intpart, frac = s, None
    intpart = "".join(ch for ch in intpart if ch not in thousands)
    digits = intpart + (frac or "")
    if not digits or not all(ch in "0123456789" for ch in digits) or (frac is not None and dec in frac):
        return NUM_BAD, 0.0
    if len(intpart) > 18 or len(digits) > 18 + 22:
        return NUM_BAD, 0.0
    try:
        value = Decimal(sign + (intpart or "0") + ("." + frac if frac else ""))
    except InvalidOperation:
        return NUM_BAD, 0.0
    return NUM_OK, float(value)


number_text = st.one_of(
    st.decimals(min_value=-10**9, max_value=10**9, places=2, allow_nan=False).map(str),
    st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False).map(lambda d: f"{d:,.2f}".replace(",", " ").replace(".", ",")),
    st.text(st.sampled_from("0123456789 .,-+'e\u00a0"), max_size=14),
    st.none(),
)


@given(st.lists(number_text, max_size=30), st.sampled_from([DECIMAL_AUTO, DECIMAL_POINT, DECIMAL_COMMA]))
@example(["1 234,56", "1.234,56", "1,234.56", "-12", "+3.5", "abc", "12,3,4", "1e5", "0,07", "", None, "-", ","],
         DECIMAL_AUTO)
def test_numbers_match_decimal(values, decimal):
    value, status = parse_numbers(pa.array(values, pa.string()), decimal=decimal)
    for i, v in enumerate(values):
        exp_status, exp_value = ref_number(v, decimal)
        assert status[i] == exp_status, (v, status[i], exp_status)
        if exp_status == NUM_OK:
            assert value[i] == pytest.approx(exp_value, rel=1e-15, abs=0), v


# ------------------------------------------------------------------ CSV records

field = st.text(st.sampled_from('ab;,"\n\r x'), max_size=6)


@given(st.lists(st.lists(field, min_size=1, max_size=4), min_size=1, max_size=12), st.integers(1, 40))
def test_scanner_counts_records_like_the_csv_module(rows, split):
    buf = io.StringIO(newline="")
    csv.writer(buf, delimiter=";", lineterminator="\n").writerows(rows)
    data = buf.getvalue().encode()
    expected_fields = 3
    parsed = [r for r in csv.reader(io.StringIO(buf.getvalue(), newline=""), delimiter=";") if r != []]
    scanner = CsvScanner(delimiter=b";", expected_fields=expected_fields)
    split = min(split, len(data))
    scanner.feed(data[:split])
    scanner.feed(data[split:], final=True)
    assert scanner.records == len(parsed)
    assert scanner.bad_records.tolist() == [i for i, r in enumerate(parsed) if len(r) != expected_fields]


def test_scanner_reports_the_longest_record():
    s = CsvScanner(delimiter=b",", expected_fields=2)
    s.feed(b"a,b\n" + b"x," + b"y" * 1000 + b"\n1,2", final=True)
    assert s.records == 3 and s.longest_record == 1003 and s.bad_records.size == 0
    assert np.asarray(s.bad_records).dtype == np.int64


def _formatted(cents: int, english: bool, thousands: bool, decimals: bool) -> str:
    """An amount as a delivery writes it: English ("1,234.56") or French ("1 234,56", "1.234,56")."""
    units, rest = divmod(abs(cents), 100)
    digits = f"{units:,}" if thousands else str(units)
    if not english and thousands:
        digits = digits.replace(",", " " if units % 2 else ".")
    text = digits + ((("." if english else ",") + f"{rest:02d}") if decimals else "")
    return ("-" if cents < 0 else "") + text


@given(st.lists(st.tuples(st.integers(-10**9, 10**9), st.booleans(), st.booleans()), min_size=1, max_size=40),
       st.booleans())
def test_amounts_with_their_separator_not_given_are_never_misread(amounts, english):
    """``decimal = "auto"`` on a column written in one convention: every amount read is the
    amount written (Decimal as the oracle), whatever the mix of thousands separators and whole
    amounts; one a lone separator and three digits end, with no value of the column telling the
    convention, is refused (NUM_BAD), never read as 1000 times less or more; once a value holds
    both separators, those are read by its convention."""
    from nirlink.engine.stages._ingest_checks import _auto_numbers

    texts, truth = [], []
    for cents, thousands, decimals in amounts:
        cents = cents if decimals else cents - cents % 100
        texts.append(_formatted(cents, english, thousands, decimals))
        truth.append(Decimal(cents) / 100)
    value, status = _auto_numbers(pa.array(texts))
    for text, v, s, t in zip(texts, value, status, truth):
        assert s in (NUM_OK, NUM_BAD), text
        if s == NUM_OK:
            assert Decimal(str(v)).quantize(Decimal("0.01")) == t, (text, v, t)
    told = any(("," in x and "." in x) for x in texts)
    ambiguous = [re.fullmatch(r"-?[1-9]\d{0,2}[.,]\d{3}", x) is not None for x in texts]
    assert not told or all(s == NUM_OK for s, a in zip(status, ambiguous) if a), texts  # read by the convention


def test_amounts_of_mixed_spellings_keep_their_own_reading():
    """The chunk's convention reads only the ambiguous amounts: "12.5" and "0,75" keep their
    own reading beside "1.234,56" or "1,234.56" (the review's cases)."""
    from nirlink.engine.stages._ingest_checks import _auto_numbers

    for texts, expected in ((["1.234,56", "12.5", "0.5", "1.500"], [1234.56, 12.5, 0.5, 1500.0]),
                            (["1,234.56", "12,5", "0,75", "1,500"], [1234.56, 12.5, 0.75, 1500.0])):
        value, status = _auto_numbers(pa.array(texts))
        assert value.tolist() == expected and (status == NUM_OK).all(), texts
