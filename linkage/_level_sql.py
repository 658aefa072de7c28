"""Comparison levels written with cheap necessary conditions before their costly function.

DuckDB evaluates a CASE's WHEN conditions with selection vectors: in ``cheap AND costly`` the
costly part only runs on the rows the cheap part lets through. A condition that every pair the
costly test accepts also passes leaves the level's pairs the same.
"""

from __future__ import annotations

__all__ = ["ONE_EDIT", "TWO_EDITS", "ONE_OF_THE_FIRST_NAMES", "WITHIN_ONE_EDIT", "WITHIN_TWO_EDITS"]

# Cheap necessary conditions put before the NIR's edit distances, which cost ~1 us a pair in
# DuckDB (damerau_levenshtein; levenshtein ~0.2 us) and were most of a scoring call's time: in
# the group of fallback rules of a 3M-person job (1.2M pairs sharing a surname, most with
# unrelated NIRs) the NIR comparison took 1.5 s of the ~2 s of comparisons, 0.21 s guarded.
# DuckDB evaluates a CASE's WHEN conditions with selection vectors, so the distance is only
# computed for the pairs the guard lets through (about 1 in 270 there); a level's result is
# the same (tests/test_edits.py: every one and two edits of a body, and generated pairs).
# Why they are necessary, for a = l.nir_body of at least 12 characters (a shorter one goes
# straight to the distance; DuckDB's length, left, right, substr and both distances count
# code points, and contains on UTF-8 bytes finds the same substrings, so this holds for any
# text, not only the ASCII bodies nirlink writes): an edit
# (substitution, insertion, deletion, or a transposition of two neighbours) leaves a window of
# a intact when it touches none of its characters and inserts nothing between them, nor
# before it for the window starting a, nor after it for the one ending a. An intact window
# that starts a starts b, one that ends a ends b, any other one is somewhere in b. Each edit
# spoils at most one of these windows:
# - one edit or transposition: a[0:6] and a[-5:], at least one character apart (12 >= 6 + 5 + 1,
#   so a transposition cannot touch both): one of them stays intact;
# - two edits: a[0:4], a[4:8] and a[-4:], disjoint (12 >= 4 + 4 + 4; an insertion between two
#   of them spoils neither): one of them stays intact.
WITHIN_ONE_EDIT = ("(length(l.nir_body) < 12 OR left(l.nir_body, 6) = left(r.nir_body, 6) "
                   "OR right(l.nir_body, 5) = right(r.nir_body, 5))")
WITHIN_TWO_EDITS = ("(length(l.nir_body) < 12 OR left(l.nir_body, 4) = left(r.nir_body, 4) "
                    "OR right(l.nir_body, 4) = right(r.nir_body, 4) OR contains(r.nir_body, substr(l.nir_body, 5, 4)))")

ONE_EDIT = f"{WITHIN_ONE_EDIT} AND damerau_levenshtein(l.nir_body, r.nir_body) <= 1"
TWO_EDITS = f"{WITHIN_TWO_EDITS} AND levenshtein(l.nir_body, r.nir_body) <= 2"

# contains(): a token of a string is in it; it spares string_split's list for most pairs (the
# 1.2M pairs above: 0.108 -> 0.064 s)
ONE_OF_THE_FIRST_NAMES = ("contains(r.first_names_norm, l.first_name_norm) "
                          "AND list_contains(string_split(r.first_names_norm, ' '), l.first_name_norm)")
