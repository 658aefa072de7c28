"""Model files: their schema (pydantic), and their conversion into a ModelSpec.

A model file is one of
- a nirlink model (``"format": "nirlink-model/1"``): comparisons as levels of SQL, or as calls
  of Splink's comparison library (``{"library": {"function": "JaroWinklerAtThresholds",
  "args": {...}}}``), or a whole plain Splink settings dictionary (``splink_settings``); the
  blocking rules with the keys each side is partitioned on; the training recipe; the
  decision; the trained Splink settings once trained;
- plain Splink settings, or a model plain Splink trained and saved (``save_model_to_json``):
  it runs unchanged, its blocking rules split into keys (their top-level equalities between
  ``l`` and ``r``) and a residual condition.

Every problem is reported at once with its path (``training.trainig: unknown key``,
``decision.threshold: must be < 1``), as a SpecError. The reference of every field, its type
and default is docs/model-file.md; tests check that it names every field of this schema.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nirlink.kernels import SpecError

from ._model import Blocking, Comparison, Level, ModelSpec

__all__ = ["model_from_data", "ModelFile", "schema_fields", "from_splink_settings"]

_Probability = Annotated[float, Field(gt=0, lt=1)]
_Share = Annotated[float, Field(ge=0, le=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class LevelFile(_Strict):
    label: str = Field(min_length=1)
    sql: str = Field(min_length=1)
    null: bool = False
    tf_column: str | None = None
    tf_weight: float = Field(1.0, ge=0)


class LibraryCall(_Strict):
    function: str = Field(min_length=1)
    args: dict[str, Any] | list[Any] = Field(default_factory=dict)
    configure: dict[str, Any] = Field(default_factory=dict)


class ComparisonFile(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    levels: list[LevelFile] | None = None
    library: LibraryCall | None = None

    @field_validator("levels")
    @classmethod
    def _last_is_else(cls, levels):
        if levels is not None and (not levels or levels[-1].sql.strip().upper() != "ELSE"):
            raise ValueError("the last level must be ELSE")
        return levels

    @model_validator(mode="after")
    def _one_form(self):
        if (self.levels is None) == (self.library is None):
            raise ValueError("give either levels or library")
        return self


class BlockingFile(_Strict):
    name: str = Field(min_length=1)
    left_keys: list[str]
    right_keys: list[str] | None = None  # default: the left keys
    condition: str = ""
    fallback: list[str] = Field(default_factory=list)  # columns both sides have (see Blocking.fallback)

    @model_validator(mode="after")
    def _keys(self):
        right = self.left_keys if self.right_keys is None else self.right_keys
        if not self.left_keys or len(self.left_keys) != len(right):
            raise ValueError("left_keys and right_keys must be non-empty and of equal length")
        return self


class TrainingFile(_Strict):
    sample_max_register_rows: int = Field(300_000, gt=0)
    sample_max_record_rows: int = Field(150_000, gt=0)
    u_max_pairs: float = Field(1_000_000, gt=0)
    u_sample_rows: int = Field(50_000, gt=0)
    deterministic_rules: list[str] = Field(default_factory=list)
    deterministic_recall: float = Field(0.8, gt=0, le=1)
    em_blocking: list[list[str] | str] = Field(default_factory=list)
    seed: int = 42
    m_floor: float = Field(0.0, ge=0, lt=1)
    m_floors: dict[str, dict[str, _Share]] = Field(default_factory=dict)
    m_fixed: dict[str, dict[str, _Share]] = Field(default_factory=dict)
    u_exact: list[str] = Field(default_factory=list)
    u_exact_sample: int = Field(50_000, gt=0)


class DecisionFile(_Strict):
    rule: Literal["clusters", "best-match", "evidence"] = "clusters"
    threshold: _Probability = 0.9
    margin: float = Field(1.0, ge=0)
    none_weight: float = 8.0


class ModelFile(_Strict):
    format: Literal["nirlink-model/1"]
    name: str = Field(min_length=1)
    link_type: Literal["link_only", "dedupe_only"] | None = None
    id_column: str = Field("unique_id", min_length=1)
    columns: dict[str, Literal["text", "integer", "number", "date"]] = Field(default_factory=dict)
    comparisons: list[ComparisonFile] | None = None
    splink_settings: dict[str, Any] | None = None
    blocking: list[BlockingFile] | None = None
    training: TrainingFile = Field(default_factory=TrainingFile)
    decision: DecisionFile = Field(default_factory=DecisionFile)
    splink: dict[str, Any] | None = None


def schema_fields() -> dict[str, list[str]]:
    """Every section of the model file and its fields (docs/model-file.md must name them all)."""
    return {m.__name__: list(m.model_fields) for m in (ModelFile, ComparisonFile, LevelFile, LibraryCall,
                                                       BlockingFile, TrainingFile, DecisionFile)}


_UNION_BRANCHES = ("list[str]", "str")  # pydantic's names of the branches of em_blocking's entries


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_BRANCHES:
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _message(err: dict, model_fields: dict[tuple, list[str]]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        expected = model_fields.get(err["loc"][:-1])
        return "unknown key" + (f" (expected one of: {', '.join(expected)})" if expected else "")
    if kind == "missing":
        return "missing"
    if kind == "literal_error":
        return f"must be {err['ctx']['expected']}, got {err['input']!r}"
    msg = err["msg"].removeprefix("Value error, ")
    if kind in ("greater_than", "less_than", "greater_than_equal", "less_than_equal"):
        return f"{msg}, got {err['input']!r}"
    return msg


def _known_fields(data: dict) -> dict[tuple, list[str]]:
    """Paths of the objects in ``data`` and the fields their schema allows (for 'unknown key')."""
    out: dict[tuple, list[str]] = {(): list(ModelFile.model_fields)}
    for key, sub in (("training", TrainingFile), ("decision", DecisionFile)):
        out[(key,)] = list(sub.model_fields)
    for i, c in enumerate(data.get("comparisons") or [] if isinstance(data.get("comparisons"), list) else []):
        out[("comparisons", i)] = list(ComparisonFile.model_fields)
        out[("comparisons", i, "library")] = list(LibraryCall.model_fields)
        for j, _ in enumerate(c.get("levels") or [] if isinstance(c, dict) and isinstance(c.get("levels"), list) else []):
            out[("comparisons", i, "levels", j)] = list(LevelFile.model_fields)
    for i, _ in enumerate(data.get("blocking") or [] if isinstance(data.get("blocking"), list) else []):
        out[("blocking", i)] = list(BlockingFile.model_fields)
    return out


def _library_levels(call: LibraryCall, path: str, errors: list) -> tuple[Level, ...]:
    import splink.comparison_library as cl

    names = sorted(n for n in dir(cl) if n[0].isupper())
    fn = getattr(cl, call.function, None) if call.function in names else None
    if fn is None:
        errors.append((f"{path}.function", f"{call.function!r} is not in Splink's comparison library "
                                           f"(one of: {', '.join(names)})"))
        return ()
    try:
        creator = fn(*call.args) if isinstance(call.args, list) else fn(**call.args)
        if call.configure:
            creator = creator.configure(**call.configure)
        d = creator.get_comparison("duckdb").as_dict()
    except Exception as exc:  # noqa: BLE001 - Splink's own complaint about the arguments
        errors.append((path, f"Splink's {call.function} refused these arguments: {exc}"))
        return ()
    return _levels_from_splink(d)


def _levels_from_splink(comp: dict) -> tuple[Level, ...]:
    return tuple(Level(lv.get("label_for_charts") or f"level {k}", lv["sql_condition"], bool(lv.get("is_null_level")),
                       lv.get("tf_adjustment_column"), float(lv.get("tf_adjustment_weight", 1.0)))
                 for k, lv in enumerate(comp["comparison_levels"]))


def _trained(settings: dict) -> bool:
    levels = [lv for c in settings.get("comparisons", []) for lv in c["comparison_levels"]
              if not lv.get("is_null_level")]
    return bool(levels) and all(lv.get("m_probability") is not None and lv.get("u_probability") is not None
                                for lv in levels)


def _splink_parts(settings: dict, path: str, errors: list) -> tuple[dict, tuple, tuple] | None:
    """Plain Splink settings normalised by Splink itself, their comparisons and blocking rules."""
    from splink import SettingsCreator

    from ._model_sql import split_blocking_rule

    try:
        normalised = SettingsCreator.from_path_or_dict(copy.deepcopy(settings)).get_settings("duckdb").as_dict()
    except Exception as exc:  # noqa: BLE001 - Splink's validation of its own settings
        errors.append((path, f"not valid Splink settings: {type(exc).__name__}: {exc}"))
        return None
    if normalised.get("link_type") not in ("link_only", "dedupe_only"):
        errors.append((f"{path}.link_type" if path else "link_type", f"nirlink links two inputs (link_only) or "
                       f"dedupes one (dedupe_only), got {normalised.get('link_type')!r}"))
        return None
    comparisons = tuple(Comparison(c["output_column_name"], _levels_from_splink(c), c.get("comparison_description", ""))
                        for c in normalised["comparisons"])
    blocking = []
    for i, rule in enumerate(normalised.get("blocking_rules_to_generate_predictions", [])):
        sql = rule["blocking_rule"] if isinstance(rule, dict) else str(rule)
        where = f"{path}.blocking_rules_to_generate_predictions[{i}]".lstrip(".")
        try:
            left, right, rest = split_blocking_rule(sql)
        except Exception as exc:  # noqa: BLE001
            errors.append((where, f"cannot parse {sql!r}: {exc}"))
            continue
        if not left:
            errors.append((where, f"{sql!r} has no equality between l. and r. to partition the pairs on"))
            continue
        blocking.append(Blocking(f"rule{i}", tuple(left), tuple(right), rest))
    return normalised, comparisons, tuple(blocking)


def from_splink_settings(settings: dict, *, source: str = "model") -> ModelSpec:
    """A model from plain Splink settings, trained or not (a trained one runs unchanged)."""
    errors: list[tuple[str, str]] = []
    parts = _splink_parts(settings, "", errors)
    if errors or parts is None:
        raise SpecError(errors, source=source)
    normalised, comparisons, blocking = parts
    model = ModelSpec(source.rsplit("/", 1)[-1].removesuffix(".json"), normalised["link_type"], comparisons, blocking,
                      id_column=normalised.get("unique_id_column_name", "unique_id"), splink_base=normalised)
    if _trained(normalised):
        model.splink = model.splink_settings()
    return model


def _cross_checks(model: ModelSpec, errors: list) -> None:
    names = {c.name: {lv.label for lv in c.levels} for c in model.comparisons}
    t = model.training
    for key in ("m_fixed", "m_floors"):
        for comp, levels in t.get(key, {}).items():
            if comp not in names:
                errors.append((f"training.{key}.{comp}", f"no comparison named {comp!r}"))
                continue
            for label in levels:
                if label not in names[comp]:
                    errors.append((f"training.{key}.{comp}.{label}", f"no level labelled {label!r} in {comp!r}"))
    for i, comp in enumerate(t.get("u_exact", [])):
        if comp not in names:
            errors.append((f"training.u_exact[{i}]", f"no comparison named {comp!r}"))
    if len(names) != len(model.comparisons):
        errors.append(("comparisons", "two comparisons have the same name"))
    fallback = [b.fallback != () for b in model.blocking]
    if any(fallback) and model.link_type != "link_only":
        errors.append(("blocking", "fallback rules search the left rows no right row equals: a link_only model's"))
    for i in range(1, len(fallback)):
        if fallback[i - 1] and not fallback[i]:
            errors.append((f"blocking[{i}]", "a rule without fallback after a fallback rule: fallback rules come "
                                             "last (the later rules exclude the earlier rules' pairs)"))
    if model.decision.get("rule") == "best-match" and model.link_type != "link_only":
        errors.append(("decision.rule", "best-match links two inputs (link_only); a deduplication makes clusters"))


def model_from_data(data: Any, *, source: str = "model") -> ModelSpec:
    """A ModelSpec from a model file's parsed JSON; SpecError with every problem otherwise."""
    if not isinstance(data, dict):
        raise SpecError([("", "a model file is a JSON object")], source=source)
    if "format" not in data and ("comparisons" in data or "blocking_rules_to_generate_predictions" in data):
        return from_splink_settings(data, source=source)  # plain Splink settings or a trained Splink model
    errors: list[tuple[str, str]] = []
    try:
        spec = ModelFile.model_validate(data)
    except ValidationError as exc:
        fields = _known_fields(data)
        for err in exc.errors():
            path = _path(err["loc"])
            if any(part in _UNION_BRANCHES for part in err["loc"]):  # one message for the union, not one per branch
                if any(p == path for p, _ in errors):
                    continue
                errors.append((path, "must be a list of columns (or expressions), or an SQL condition on l. and r."))
                continue
            errors.append((path, _message(err, fields)))
        raise SpecError(errors, source=source) from None
    if spec.splink_settings is None:
        for key in ("link_type", "comparisons", "blocking"):
            if getattr(spec, key) is None:
                errors.append((key, "missing"))
    elif spec.comparisons is not None:
        errors.append(("comparisons", "give comparisons or splink_settings, not both"))
    if errors:
        raise SpecError(errors, source=source)
    base, link_type = None, spec.link_type
    if spec.splink_settings is not None:
        parts = _splink_parts(spec.splink_settings, "splink_settings", errors)
        if parts is None:
            raise SpecError(errors, source=source)
        base, comparisons, blocking = parts
        if link_type is not None and link_type != base["link_type"]:
            errors.append(("link_type", f"{link_type!r} but splink_settings says {base['link_type']!r}"))
        link_type = base["link_type"]
    else:
        comparisons = []
        for i, c in enumerate(spec.comparisons):
            if c.library is not None:
                levels = _library_levels(c.library, f"comparisons[{i}].library", errors)
                comparisons.append(Comparison(c.name, levels, c.description, c.library.model_dump(exclude_unset=True)))
            else:
                comparisons.append(Comparison(c.name, tuple(Level(**lv.model_dump()) for lv in c.levels),
                                              c.description))
        comparisons = tuple(comparisons)
    if spec.blocking is not None:
        blocking = tuple(Blocking(b.name, tuple(b.left_keys), tuple(b.right_keys if b.right_keys is not None
                                                                    else b.left_keys), b.condition,
                                  tuple(b.fallback))
                         for b in spec.blocking)
    id_column = spec.id_column
    if base is not None and "id_column" not in data:
        id_column = base.get("unique_id_column_name", "unique_id")
    model = ModelSpec(spec.name, link_type, comparisons, blocking, spec.training.model_dump(exclude_unset=True),
                      spec.decision.model_dump(exclude_unset=True), spec.splink, id_column=id_column,
                      columns=dict(spec.columns), splink_base=base)
    _cross_checks(model, errors)
    if errors:
        raise SpecError(errors, source=source)
    return model

