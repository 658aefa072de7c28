"""Identity normalisation kernels against a plain-Python reference built on unicodedata."""

import re
import unicodedata

import numpy as np
import pyarrow as pa
from hypothesis import example, given
from hypothesis import strategies as st

import pyarrow.compute as pc

from nirlink.kernels._text import (_SEPARATORS, _SPECIAL, FLAG_CONTROL, blank_values, first_token, normalize_names, squeeze,
                                  text_checks)

SEPARATOR_CHARS = "".join(chr(c) for c in _SEPARATORS)


def reference(text, keep_hyphen):
    """Reference normalisation: NFKD base letters, upper case, punctuation -> one space."""
    if text is None:
        return None, 0
    flags = 0
    out = []
    for ch in text:
        cp = ord(ch)
        if cp < 32 or cp == 127 or 0x80 <= cp < 0xA0:
            flags |= FLAG_CONTROL
            out.append(" ")
        elif ch.isascii():
            out.append(ch.upper() if ch.isalnum() else "-" if ch == "-" and keep_hyphen else " ")
        elif unicodedata.combining(ch):
            continue
        elif ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ch in SEPARATOR_CHARS or 0x2000 <= cp <= 0x206F:
            out.append("-" if keep_hyphen and 0x2010 <= cp <= 0x2013 else " ")
        elif cp < 0x250:
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if c.isascii() and c.isalpha()).upper()
            out.append(base if base else (ch if ch.isalpha() else " "))
        else:
            out.append(ch)
    joined = "".join(out).strip(" -")
    return re.sub(r"[ -]+", lambda m: "-" if "-" in m.group() else " ", joined), flags


ALPHABET = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x24F),
    st.sampled_from(list(SEPARATOR_CHARS) + list("\u0301\u0308\u0327ИванΣοφία-'  ")),
)


@given(st.lists(st.one_of(st.none(), st.text(ALPHABET, max_size=24)), max_size=20), st.booleans())
@example(["  de la  Fontaine ", "Jean - Pierre", "Straße", "Œuvre", "D'Artagnan", "O’Neil", "e\u0301lise", "a\x00b",
          "--JEAN--", "×÷", "Ɓ", "0\u20100", "A \u2011 B", "\u2013X"], True)
def test_normalize_equals_reference(values, keep_hyphen):
    got, flags = normalize_names(pa.array(values, pa.string()), keep_hyphen=keep_hyphen)
    for v, g, f in zip(values, got.to_pylist(), flags):
        exp, exp_flags = reference(v, keep_hyphen)
        assert g == exp, (v, g, exp)
        assert bool(f & FLAG_CONTROL) == bool(exp_flags & FLAG_CONTROL), v


@given(st.lists(st.text(ALPHABET, max_size=24), max_size=20), st.booleans())
def test_normalize_is_idempotent_and_clean(values, keep_hyphen):
    once, _ = normalize_names(pa.array(values, pa.string()), keep_hyphen=keep_hyphen)
    twice, _ = normalize_names(once, keep_hyphen=keep_hyphen)
    assert once.to_pylist() == twice.to_pylist()
    for v in once.to_pylist():
        assert v == v.strip() and "  " not in v
        assert not re.search(r"[a-z]", v)


def test_particles_and_compound_names_compare_equal():
    a, _ = normalize_names(pa.array(["De La Fontaine", "DELAFONTAINE", "de-la-fontaine", "Dupont Martin", "dupont-martin"]))
    assert len(set(squeeze(a).to_pylist()[:3])) == 1
    assert squeeze(a).to_pylist()[3] == squeeze(a).to_pylist()[4]


def test_first_of_several_first_names():
    f, _ = normalize_names(pa.array(["Jean-Pierre Marie", "marie claire", "Hélène", None, ""]), keep_hyphen=True)
    assert first_token(f).to_pylist() == ["JEAN-PIERRE", "MARIE", "HELENE", None, ""]


def test_invalid_utf8_is_flagged():
    arr = pa.array([b"caf\xe9", b"ok"], pa.binary()).view(pa.string())
    _, flags = normalize_names(arr)
    assert flags.tolist() == [2, 0]


# every control character, tab and line breaks, and multi-byte characters (2, 3 and 4 bytes)
CHECKED_TEXT = st.text(st.sampled_from([chr(c) for c in range(0, 0x21)] + ["\x7f", "a", "é", "€", "😀", "\x80"]),
                       max_size=12)


# plain text: ASCII only, or without control characters (the checks' shortcuts)
PLAIN_TEXT = st.text(st.sampled_from(["a", "B", " ", "-", "\t"]), max_size=12)
PLAIN_UNICODE = st.text(st.sampled_from(["a", "é", "€", "😀", " "]), max_size=12)


@given(st.lists(st.one_of(st.none(), CHECKED_TEXT), max_size=20) | st.lists(st.one_of(st.none(), PLAIN_TEXT), max_size=20)
       | st.lists(st.one_of(st.none(), PLAIN_UNICODE), max_size=20), st.integers(0, 8), st.integers(0, 3))
@example(["a\tb", "a\r\n", "\x00", "\x1f", "\x7f", "é€😀", None], 2, 0)
@example(["aaaa", "é", "aa"], 2, 1)  # sliced past a long ASCII value: its bytes are not the slice's
def test_text_checks_equal_the_regex_and_utf8_length(values, max_length, start):
    """One pass over the bytes gives what pyarrow's regular expression and code point length
    give, on plain ASCII, on Unicode without control characters and on anything, whole or sliced."""
    arr = pa.array(values, pa.string()).slice(min(start, len(values)))
    control, too_long = text_checks(arr, max_length)
    want_control = pc.fill_null(pc.match_substring_regex(arr, r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"), False)
    want_long = pc.fill_null(pc.greater(pc.utf8_length(arr), max_length), False)
    assert control.tolist() == want_control.to_pylist()
    assert too_long.tolist() == want_long.to_pylist()


# every character pyarrow counts as white space, and others of 1 to 4 bytes
SPACES = [chr(c) for c in (*range(9, 14), *range(28, 33), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                           0x202F, 0x205F, 0x3000)]
BLANKISH_TEXT = st.text(st.sampled_from([*SPACES, "a", "é", "\u200b", "\u3001", "😀", "\x00", "\x1b"]), max_size=8)


@given(st.lists(st.one_of(st.none(), BLANKISH_TEXT), max_size=20))
@example([None, "", " ", "\t\n", "\u3000\xa0", " a ", "\u200b", "😀"])
def test_blank_values_equal_pyarrows_trimmed_empty(values):
    arr = pa.array(values, pa.string())
    want = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(arr), ""), True)
    assert blank_values(arr).tolist() == want.to_pylist()


def test_blank_values_know_every_code_point_pyarrow_trims():
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    arr = pa.array([chr(c) for c in cps], pa.string())
    want = pc.equal(pc.utf8_trim_whitespace(arr), "").to_numpy(zero_copy_only=False)
    assert np.array_equal(blank_values(arr), want)


@given(st.lists(st.one_of(st.none(), st.binary(max_size=8), st.text(st.sampled_from("aZ -é€"), max_size=8).map(str.encode)),
                max_size=20), st.integers(0, 3))
@example([b"ok", b"caf\xe9"], 1)  # the invalid value sliced away
def test_utf8_valid_is_python_decoding(values, start):
    """Oracle: bytes.decode('utf-8') succeeds; nulls count as valid; whole or sliced arrays."""
    from nirlink.kernels._numbers import utf8_valid

    arr = pa.array(values, pa.binary()).slice(min(start, len(values)))

    def decodes(v):
        try:
            v.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    assert utf8_valid(arr).tolist() == [v is None or decodes(v) for v in values[min(start, len(values)):]]
