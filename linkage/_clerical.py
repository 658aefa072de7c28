"""Clerical decisions: what an agent decided for signatures the model left unlinked or
ambiguous (from the review dataset), honoured on the next run as method ``clerical``,
ahead of the model and of the deterministic pass.

The file is a CSV with a header: ``register_nir`` and one of ``signature`` or ``record_id``
per line (both columns may be present; a line fills one). ``register_nir`` is a NIR of the
register, or ``none`` for "none of the register". A record id stands for its whole signature
(every row with the same identity fields). Everything is validated before it is used, every
problem reported at once with its line; a NIR is never echoed in a message.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from nirlink.kernels import SpecError

from ._decisions import CLERICAL_SCHEMA
from ._explain import signatures_of_records

__all__ = ["load_decisions", "NONE"]

NONE = "none"


def _read(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            return header, [(i + 2, {k: (v or "").strip() for k, v in row.items() if k is not None})
                            for i, row in enumerate(reader)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SpecError([("file", f"cannot be read as a UTF-8 CSV ({exc.__class__.__name__}: {exc})")],
                        source=str(path)) from None


def load_decisions(path: str | Path, signature_files: Sequence[str], register_files: Sequence[str],
                   row_files: Sequence[str]) -> pa.Table:
    """The decisions of ``path`` as ``CLERICAL_SCHEMA`` rows, checked against the signatures and
    the register of this run (and the ingested rows, for record ids)."""
    import duckdb

    path = Path(path)
    header, lines = _read(path)
    errors: list[tuple[str, str]] = []
    if "register_nir" not in header or not ({"signature", "record_id"} & set(header)):
        raise SpecError([("header", "expected the columns register_nir and signature or record_id, found "
                                    + (", ".join(header) or "none"))], source=str(path))
    wanted: list[tuple[int, str, int, str]] = []  # line, kind, id, answer
    for line, row in lines:
        sig, rid, answer = row.get("signature", ""), row.get("record_id", ""), row.get("register_nir", "")
        if bool(sig) == bool(rid):
            errors.append((f"line {line}", "give exactly one of signature or record_id"))
            continue
        kind, text = ("signature", sig) if sig else ("record_id", rid)
        try:
            value = int(text)
        except ValueError:
            errors.append((f"line {line}", f"{kind} must be an integer, got {text[:20]!r}"))
            continue
        if not answer:
            errors.append((f"line {line}", f"register_nir is empty (a register NIR, or {NONE!r})"))
            continue
        wanted.append((line, kind, value, answer))

    records = signatures_of_records(row_files, [v for _, k, v, _ in wanted if k == "record_id"])
    con = duckdb.connect()
    try:
        ids = [v for _, k, v, _ in wanted if k == "signature"]
        known = set()
        if ids and signature_files:
            con.register("wanted_ids", pa.table({"id": pa.array(ids, pa.int64())}))
            known = {r[0] for r in con.execute(f"""select unique_id from read_parquet({list(map(str, signature_files))})
                                                  where unique_id in (select id from wanted_ids)""").fetchall()}
        nirs = sorted({a for *_, a in wanted if a.lower() != NONE})
        register: dict[str, int] = {}
        if nirs and register_files:
            con.register("wanted_nirs", pa.table({"nir": pa.array(nirs, pa.string())}))
            register = dict(con.execute(f"""select nir, min(unique_id) from read_parquet({list(map(str, register_files))})
                                           where nir in (select nir from wanted_nirs) group by nir""").fetchall())
    finally:
        con.close()

    decided: dict[int, tuple[int, int | None, str | None]] = {}  # signature -> (line, register id, nir)
    for line, kind, value, answer in wanted:
        if kind == "signature":
            if value not in known:
                errors.append((f"line {line}", f"signature {value} is not a signature of this run"))
                continue
            sigs = [value]
        else:
            found = records.get(value, [])
            if not found:
                errors.append((f"line {line}", f"record_id {value} is in no ingested career or resource file"))
                continue
            sigs = sorted({s for _, s in found})
            if len(sigs) > 1:
                errors.append((f"line {line}", f"record_id {value} stands in {len(found)} rows with different "
                                               "identities; give their signatures instead"))
                continue
        if answer.lower() == NONE:
            target: tuple[int | None, str | None] = (None, None)
        elif answer in register:
            target = (register[answer], answer)
        else:
            errors.append((f"line {line}", "register_nir is not a NIR of the register (nor 'none')"))
            continue
        for s in sigs:
            if s in decided and decided[s][1:] != target:
                errors.append((f"line {line}", f"signature {s} was decided differently on line {decided[s][0]}"))
            decided[s] = (line, *target)
    if errors:
        raise SpecError(errors, source=str(path))
    order = sorted(decided)
    return pa.table({"signature": pa.array(order, pa.int64()),
                     "register_id": pa.array([decided[s][1] for s in order], pa.int64()),
                     "register_nir": pa.array([decided[s][2] for s in order], pa.string())}, schema=CLERICAL_SCHEMA)

