"""Linkage models: comparisons made of levels, blocking rules with their hash keys, training.

A model is declared here as plain objects (Comparison, Level, Blocking) and rendered to a
Splink settings dictionary in one place (`splink_settings`); a model imported from plain
Splink settings keeps them as given (`splink_base`) and renders those instead. Model files are validated
and converted in _model_file.py (the file format is documented in docs/model-file.md). The
identity model is nirlink's model for French identities: records (signatures of career and resource rows) on the left,
the identity register on the right. A model file (JSON, format `nirlink-model/1`) holds the
Splink settings (trained or not, loadable by plain Splink), the training recipe, the
blocking keys used to distribute scoring, and the decision thresholds.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nirlink.kernels import ModelError

from ._level_sql import ONE_EDIT, ONE_OF_THE_FIRST_NAMES, TWO_EDITS

__all__ = ["Level", "Comparison", "Blocking", "ModelSpec", "identity_model", "register_model", "MODEL_FORMAT",
           "load_model", "save_model", "prior_bits", "evidence_floor_probability"]

MODEL_FORMAT = "nirlink-model/1"


def _suffix_form(sql: str) -> str:
    if sql.strip().upper() == "ELSE":
        return sql
    sql = re.sub(r"\bl\.([A-Za-z_][A-Za-z0-9_]*)", r'"\1_l"', sql)
    return re.sub(r"\br\.([A-Za-z_][A-Za-z0-9_]*)", r'"\1_r"', sql)


@dataclass(frozen=True)
class Level:
    label: str
    sql: str  # condition on l.<col> / r.<col>; "ELSE" for the last level
    null: bool = False
    tf_column: str | None = None  # term-frequency adjustment on this column (exact-match levels)
    tf_weight: float = 1.0  # Splink's tf_adjustment_weight (1: the full adjustment)

    def splink(self) -> dict[str, Any]:
        # Declared as l.<col> / r.<col>; Splink evaluates levels on <col>_l / <col>_r columns.
        d: dict[str, Any] = {"sql_condition": _suffix_form(self.sql), "label_for_charts": self.label}
        if self.null:
            d["is_null_level"] = True
        if self.tf_column:
            d["tf_adjustment_column"] = self.tf_column
            d["tf_adjustment_weight"] = float(self.tf_weight)
        return d

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"label": self.label, "sql": self.sql, "null": self.null, "tf_column": self.tf_column}
        if self.tf_weight != 1.0:
            d["tf_weight"] = self.tf_weight
        return d


@dataclass(frozen=True)
class Comparison:
    name: str
    levels: tuple[Level, ...]
    description: str = ""
    # the comparison as Splink's comparison library builds it ({"function", "args", "configure"}):
    # the levels are what that call returns, the model file keeps the call
    library: dict[str, Any] | None = None

    def splink(self) -> dict[str, Any]:
        return {"output_column_name": self.name, "comparison_description": self.description or self.name,
                "comparison_levels": [lv.splink() for lv in self.levels]}

    def to_json(self) -> dict[str, Any]:
        if self.library is not None:
            d = {"name": self.name, "library": self.library}
            return {**d, "description": self.description} if self.description else d
        return {"name": self.name, "levels": [lv.to_json() for lv in self.levels], "description": self.description}


@dataclass(frozen=True)
class Blocking:
    """A blocking rule and the key each side is hashed on to distribute it: rows whose keys
    are equal land in the same partition, so every pair the rule admits is scored once."""

    name: str
    left_keys: tuple[str, ...]  # columns or expressions on the left (records) table's columns
    right_keys: tuple[str, ...]  # columns or expressions on the right (register) table's columns
    condition: str = ""  # more SQL on l. and r. that the pairs the keys bring together must meet
    # a fallback rule: it scores only the left rows that no right row equals on these columns
    # (the identity model's: a record with an exact namesake in the register - surname, first
    # name and birth date - is not searched by the rules meant for a wrong or missing surname
    # or birth date). Fallback rules come after every other rule (link_only models)
    fallback: tuple[str, ...] = ()

    @property
    def sql(self) -> str:
        from ._model_sql import qualify

        sql = " AND ".join(f"{qualify(a, 'l')} = {qualify(b, 'r')}" for a, b in zip(self.left_keys, self.right_keys))
        return f"{sql} AND ({self.condition})" if self.condition else sql

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "left_keys": list(self.left_keys), "right_keys": list(self.right_keys)}
        if self.condition:
            d["condition"] = self.condition
        if self.fallback:
            d["fallback"] = list(self.fallback)
        return d


@dataclass
class ModelSpec:
    name: str
    link_type: str  # "link_only" (left vs right) or "dedupe_only"
    comparisons: tuple[Comparison, ...]
    blocking: tuple[Blocking, ...]
    training: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)
    splink: dict[str, Any] | None = None  # trained settings (None until trained)
    id_column: str = "unique_id"  # the inputs' record id column (`nirlink link`)
    columns: dict[str, str] = field(default_factory=dict)  # column -> type to read it as (default: text)
    splink_base: dict[str, Any] | None = None  # plain Splink settings the model was imported from

    def splink_settings(self) -> dict[str, Any]:
        """Untrained Splink settings rendered from the declaration (or the imported Splink settings)."""
        if self.splink_base is not None:
            return {**copy.deepcopy(self.splink_base), "unique_id_column_name": "unique_id",
                    "source_dataset_column_name": "source_dataset", "retain_matching_columns": False,
                    "retain_intermediate_calculation_columns": False, "additional_columns_to_retain": [],
                    "blocking_rules_to_generate_predictions": [{"blocking_rule": b.sql, "sql_dialect": "duckdb"}
                                                               for b in self.blocking]}
        return {
            "link_type": self.link_type,
            "sql_dialect": "duckdb",
            "unique_id_column_name": "unique_id",
            "probability_two_random_records_match": 1e-4,
            "comparisons": [c.splink() for c in self.comparisons],
            "blocking_rules_to_generate_predictions": [{"blocking_rule": b.sql, "sql_dialect": "duckdb"}
                                                       for b in self.blocking],
            "retain_intermediate_calculation_columns": False,
            "retain_matching_columns": False,
            "additional_columns_to_retain": [],
        }

    @property
    def trained(self) -> bool:
        return self.splink is not None

    def settings(self) -> dict[str, Any]:
        return copy.deepcopy(self.splink if self.splink is not None else self.splink_settings())

    def tf_columns(self) -> list[str]:
        cols = []
        for c in self.comparisons:
            for lv in c.levels:
                if lv.tf_column and lv.tf_column not in cols:
                    cols.append(lv.tf_column)
        return cols

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": MODEL_FORMAT, "name": self.name, "link_type": self.link_type}
        if self.id_column != "unique_id":
            d["id_column"] = self.id_column
        if self.columns:
            d["columns"] = dict(self.columns)
        if self.splink_base is not None:
            d["splink_settings"] = self.splink_base
        else:
            d["comparisons"] = [c.to_json() for c in self.comparisons]
        return {**d, "blocking": [b.to_json() for b in self.blocking], "training": self.training,
                "decision": self.decision, "splink": self.splink}

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: str = "model") -> ModelSpec:
        """A model from a model file's content (``nirlink-model/1``, or plain Splink settings or a
        trained Splink model); raises SpecError listing every problem with its path."""
        from ._model_file import model_from_data

        return model_from_data(data, source=source)


def prior_bits(model: ModelSpec) -> float:
    """log2 of the prior odds lambda / (1 - lambda) of a trained model."""
    lam = float(model.settings()["probability_two_random_records_match"])
    return math.log2(lam / (1.0 - lam))


def evidence_floor_probability(model: ModelSpec, evidence_floor: float) -> float:
    """The match probability of a pair whose evidence is ``evidence_floor`` bits under the
    model's prior: scoring keeps pairs above it, so what is kept does not depend on N."""
    return 1.0 / (1.0 + 2.0 ** (-(evidence_floor + prior_bits(model))))


def save_model(model: ModelSpec, path: str | Path) -> None:
    Path(path).write_text(json.dumps(model.to_json(), indent=2) + "\n", encoding="utf-8")


def load_model(path: str | Path) -> ModelSpec:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model file {path} not found") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"model file {path} is not valid JSON: {exc}") from None
    return ModelSpec.from_json(data, source=str(path))


# ------------------------------------------------------------------ the identity model

def _null(col: str) -> Level:
    return Level("missing", f"l.{col} IS NULL OR r.{col} IS NULL", null=True)


ELSE = Level("different", "ELSE")


def _jw(a: str, b: str, t: float) -> str:
    return f"jaro_winkler_similarity(l.{a}, r.{b}) >= {t}"


# No sex or birth-place comparison: on the records side both come from the declared NIR, so
# they are NULL when it is missing or unrelated to the register's, and otherwise repeat what
# the NIR comparison already says (double counting; worse, their u sampled among random
# pairs whose NIRs happen to be related made "same department" a -12.6-bit veto on every
# transposition in the commune digits). See the training recipe's nir levels.


IDENTITY_COMPARISONS = (
    Comparison("surname", (
        Level("missing", "l.last_name_key IS NULL OR l.last_name_key = ''", null=True),
        Level("birth name exact", "l.last_name_key = r.last_name_key", tf_column="last_name_key"),
        Level("usage name exact", "l.last_name_key = r.usage_name_key"),
        Level("first name(s) given as surname", "l.last_name_key = r.first_name_key OR l.last_name_key = r.first_names_key"),
        Level("birth or usage name JW >= 0.92",
              f"{_jw('last_name_key', 'last_name_key', 0.92)} OR {_jw('last_name_key', 'usage_name_key', 0.92)}"),
        Level("birth or usage name JW >= 0.8",
              f"{_jw('last_name_key', 'last_name_key', 0.8)} OR {_jw('last_name_key', 'usage_name_key', 0.8)}"),
        ELSE,
    ), "Birth name and usage name, with a cross level for the usage name and one for swapped names"),
    Comparison("first_name", (
        Level("missing", "l.first_name_key IS NULL OR l.first_name_key = '' OR r.first_name_key IS NULL", null=True),
        Level("first first name exact", "l.first_name_key = r.first_name_key", tf_column="first_name_key"),
        Level("one of the first names", ONE_OF_THE_FIRST_NAMES),
        Level("JW >= 0.92", _jw("first_name_key", "first_name_key", 0.92)),
        Level("JW >= 0.8", _jw("first_name_key", "first_name_key", 0.8)),
        Level("surname given as first name", "l.first_name_key = r.last_name_key OR l.first_name_key = r.usage_name_key "
                                             "OR l.first_names_key = r.last_name_key OR l.first_names_key = r.usage_name_key"),
        ELSE,
    ), "First name: the first of several, a later one, fuzzy, swapped"),
    Comparison("birth_date", (
        Level("missing", "l.birth_year IS NULL OR r.birth_year IS NULL", null=True),
        Level("exact", "l.birth_year = r.birth_year AND l.birth_month = r.birth_month AND l.birth_day = r.birth_day"),
        Level("same year, month unknown on both sides",
              "l.birth_year = r.birth_year AND l.birth_month IS NULL AND r.birth_month IS NULL"),
        Level("day and month swapped", "l.birth_year = r.birth_year AND l.birth_month = r.birth_day "
                                       "AND l.birth_day = r.birth_month"),
        Level("one field off", "(l.birth_year = r.birth_year AND l.birth_month = r.birth_month) "
                               "OR (l.birth_year = r.birth_year AND l.birth_day = r.birth_day) "
                               "OR (abs(l.birth_year - r.birth_year) = 1 AND l.birth_month = r.birth_month "
                               "AND l.birth_day = r.birth_day)"),
        Level("year only", "l.birth_year = r.birth_year"),
        ELSE,
    ), "Birth date (unknown month or day never match: they compare as different)"),
    Comparison("nir", (
        Level("missing", "l.nir_body IS NULL", null=True),
        Level("body exact", "l.nir_body = r.nir_body"),
        Level("one edit or transposition", ONE_EDIT),
        Level("two edits", TWO_EDITS),
        Level("same sex, year, month, department", "substr(l.nir_body, 1, 7) = substr(r.nir_body, 1, 7)"),
        ELSE,
    ), "Declared NIR (13-character body, whatever its key) against the register NIR"),
)

# A record whose surname, first name and birth date equal a register entry's (105,094 of the
# 140,506 model links at 200,000 persons) is searched by the four first rules only: the later
# rules, made for a surname or birth date declared wrong, scored 80% of the pairs there (the
# first-name rule's blocks grow with the register: 10.2M of the 15.9M pairs kept at 2M
# persons) and not one of the model's links at 200,000 persons came through them alone
# (benchmarks/README.md, "Linkage at scale"). For the same reason such a record meets the
# entries of its surname and birth year only in its birth month (its namesake's): the
# surname-and-year blocks grow with the register (5.1M of the 8.5M pairs the rules admitted
# at 1M persons, 303k of 576k at 200,000), and no model link at 1M persons of a record with a
# namesake came only through another month; the records without one keep the whole year.
# The first-name rule (for a surname declared wrong) pairs on the whole birth date: on first
# name, birth year and month it made 29.9M of the 63.8M pairs scored at 7.9M persons (its
# blocks grow with the register), and with the birth day it compares 2.5M pairs instead of
# 49.9M while 68 of the 5,407,751 model links there lose every rule that reached them; at 200k
# (2 seeds) and 1M persons precision, recall and blocking reach stayed the same or rose
# (benchmarks/README.md, "Linkage at scale").
IDENTITY_TWIN_KEYS = ("last_name_key", "first_name_key", "birth_year", "birth_month", "birth_day")


def _fallback(name: str, left: tuple[str, ...], right: tuple[str, ...]) -> Blocking:
    return Blocking(name, left, right, fallback=IDENTITY_TWIN_KEYS)


IDENTITY_BLOCKING = (
    Blocking("nir_body", ("nir_body",), ("nir_body",)),
    Blocking("surname_year_month", ("last_name_key", "birth_year", "birth_month"),
             ("last_name_key", "birth_year", "birth_month")),
    Blocking("usage_name_year_month", ("last_name_key", "birth_year", "birth_month"),
             ("usage_name_key", "birth_year", "birth_month")),
    Blocking("nir_prefix10", ("nir_prefix10",), ("nir_prefix10",)),
    _fallback("surname_year", ("last_name_key", "birth_year"), ("last_name_key", "birth_year")),
    _fallback("usage_name_year", ("last_name_key", "birth_year"), ("usage_name_key", "birth_year")),
    _fallback("first_name_birth_date", ("first_name_key", "birth_year", "birth_month", "birth_day"),
              ("first_name_key", "birth_year", "birth_month", "birth_day")),
    _fallback("names_swapped", ("last_name_key", "first_name_key"), ("first_name_key", "last_name_key")),
    _fallback("surname_first_name", ("last_name_key", "first_name_key"), ("last_name_key", "first_name_key")),
    _fallback("surname_birth_day", ("last_name_key", "birth_month", "birth_day"), ("last_name_key", "birth_month", "birth_day")),
    _fallback("names_swapped_usage", ("last_name_key", "first_name_key"), ("first_name_key", "usage_name_key")),
    _fallback("usage_name_first_name", ("last_name_key", "first_name_key"), ("usage_name_key", "first_name_key")),
    _fallback("surname_as_first_names_birth", ("first_names_key", "birth_year", "birth_month", "birth_day"),
              ("last_name_key", "birth_year", "birth_month", "birth_day")),
    _fallback("usage_as_first_names_birth", ("first_names_key", "birth_year", "birth_month", "birth_day"),
              ("usage_name_key", "birth_year", "birth_month", "birth_day")),
)


def identity_model() -> ModelSpec:
    """nirlink's identity model: records (left) against the register (right)."""
    return ModelSpec(
        name="identity",
        link_type="link_only",
        comparisons=IDENTITY_COMPARISONS,
        blocking=IDENTITY_BLOCKING,
        training={
            # training is bounded (issue 12): EM on 30,000 register rows of whole birth-year
            # bands and their records, u on 50,000 random rows of each side, the exact NIR u on
            # 5,000 register rows: 9.5 s instead of 29 s at 200k persons (2 workers), the weights
            # within a few tenths of a bit of training on everything (benchmarks/README.md)
            "sample_max_register_rows": 30_000,
            "u_sample_rows": 50_000,
            "u_max_pairs": 3_000_000,
            "deterministic_rules": ["l.nir_body = r.nir_body AND l.last_name_key = r.last_name_key "
                                    "AND l.birth_year = r.birth_year"],
            "deterministic_recall": 0.85,
            "em_blocking": [["nir_body"], ["last_name_key", "birth_year"], ["first_name_key", "birth_year", "birth_month"]],
            "seed": 42,
            # no level is impossible among matches; and employers do declare another person's
            # NIR (a spouse's, a colleague's): a few per thousand declarations
            "m_floor": 1e-4,
            "m_floors": {"nir": {"different": 0.003}},
            # The declared NIR's levels are too rare among a sample's matches for EM (one edit:
            # m driven to the floor in 2 runs of 3) and among random pairs for u sampling (u
            # never observed: null). m is fixed from operational error rates of declared NIRs
            # (per declaration carrying a NIR: transposed digits or one mistyped digit ~0.5%,
            # another person's NIR ~0.3%, two mistakes rarer; the rest, wrong key and missing key
            # included, is the right body), u is counted exactly on the register (`u_exact`:
            # pairs of a register sample against the whole register, blocked on three segments
            # of the body), so neither depends on the sample.
            "m_fixed": {"nir": {"body exact": 0.9907, "one edit or transposition": 0.0053, "two edits": 0.0005,
                                "same sex, year, month, department": 0.0005, "different": 0.003}},
            "u_exact": ["nir"],
            "u_exact_sample": 5_000,
        },
        # Decision among a signature's candidates (register clusters merged), on the evidence
        # e = match weight - log2(lambda / (1 - lambda)) (the comparisons' Bayes factor, which
        # does not depend on the register's size as the prior lambda does): the best person's
        # share of 2**e among the candidates and a 'none' option of weight `none_weight` bits
        # must reach `threshold`, and it must lead the runner-up by `margin` bits.
        decision={"rule": "evidence", "none_weight": 8.0, "threshold": 0.9, "margin": 5.0},
    )


def register_model() -> ModelSpec:
    """Duplicates inside the register (the same person under two numbers)."""
    same = ("last_name_key", "first_name_key", "birth_year", "birth_month", "birth_day")
    return ModelSpec(
        name="register",
        link_type="dedupe_only",
        comparisons=(
            Comparison("surname", (_null("last_name_key"),
                                   Level("exact", "l.last_name_key = r.last_name_key", tf_column="last_name_key"),
                                   Level("JW >= 0.92", _jw("last_name_key", "last_name_key", 0.92)), ELSE)),
            Comparison("first_names", (_null("first_names_norm"),
                                       Level("all equal", "l.first_names_norm = r.first_names_norm"),
                                       Level("first equal", "l.first_name_key = r.first_name_key",
                                             tf_column="first_name_key"), ELSE)),
            Comparison("birth_date", (_null("birth_year"),
                                      Level("exact", "l.birth_year = r.birth_year AND l.birth_month = r.birth_month "
                                                     "AND l.birth_day = r.birth_day"),
                                      Level("year", "l.birth_year = r.birth_year"), ELSE)),
            Comparison("birth_place", (_null("birth_place"), Level("exact", "l.birth_place = r.birth_place"), ELSE)),
            Comparison("sex", (_null("sex"), Level("exact", "l.sex = r.sex"), ELSE)),
        ),
        blocking=(
            Blocking("name_birth", ("last_name_key", "birth_year", "birth_month", "birth_day"),
                     ("last_name_key", "birth_year", "birth_month", "birth_day")),
            Blocking("first_names_birth_place", ("first_names_norm", "birth_year", "birth_place"),
                     ("first_names_norm", "birth_year", "birth_place")),
        ),
        training={"sample_max_register_rows": 30_000, "u_sample_rows": 50_000, "u_max_pairs": 2_000_000,
                  "deterministic_rules": [" AND ".join(f"l.{c} = r.{c}" for c in same)],
                  "deterministic_recall": 0.9,
                  "em_blocking": [["last_name_key", "birth_year"], ["first_names_norm", "birth_year"]], "seed": 42},
        decision={"threshold": 0.95},
    )
