"""Pydantic models of ``cohort.yaml``; YAML keys are constructor arguments.

Errors come out as one line naming the file and the key, with the nearest valid key for a
misspelt one: ``cohort.yaml: sources[1].lookbak: unknown key; did you mean 'lookback'?``
"""

from __future__ import annotations

import datetime as dt
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medweave.errors import InputError
from medweave.sources import SourceSpec
from medweave.sources import get as get_source

__all__ = [
    "BinaryOutcome",
    "CohortConfig",
    "IndexRule",
    "OutcomeSpec",
    "SurvivalOutcome",
    "load_cohort_config",
    "parse_cohort_config",
    "read_yaml_mapping",
    "validate_model",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Columns of the cohort's patient table that ``index.columns`` cannot name.
_RESERVED = ("patient_id", "index_date", "outcome", "time", "event")


class IndexRule(_Strict):
    """How each patient's index date is set, and who the patients are.

    * ``column``: ``table`` (CSV/Parquet) with one row per patient: ``id_column`` and
      ``date_column``.
    * ``first_occurrence``: the first record of any of ``concepts`` in the OMOP database
      (``database`` or ``url``); patients without one are excluded with that reason.
    * ``fixed``: the same ``date`` for every patient of ``table``.

    ``columns`` names further columns of ``table`` carried into the cohort's patient table
    as they are (a site or centre, an enrolment wave): a study can hold each value out in
    turn (``validation.split_column``) or report per value (``evaluation.subgroups``).
    """

    rule: Literal["column", "first_occurrence", "fixed"]
    table: str | None = None
    id_column: str = "patient_id"
    date_column: str = "index_date"
    date: dt.date | None = None
    database: str | None = None
    url: str | None = None
    schema_name: str | None = Field(default=None, alias="schema")
    id_source: Literal["person_source_value", "person_id"] = "person_source_value"
    concepts: list[int | str] | None = None
    missing_date: Literal["error", "exclude"] = "error"
    columns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> IndexRule:
        if self.columns and self.rule == "first_occurrence":
            raise ValueError(
                "columns: patient columns come from the index table, and rule "
                "'first_occurrence' has none; use rule 'column' with a table"
            )
        taken = sorted(set(self.columns) & {*_RESERVED, self.id_column, self.date_column})
        if taken:
            raise ValueError(
                f"columns: {taken[0]!r} is a column the cohort sets itself (patient_id, "
                "index_date, outcome, time, event, and the id and date columns); remove it"
            )
        dup = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if dup:
            raise ValueError(f"columns: {dup[0]!r} is named twice")
        if self.rule in ("column", "fixed") and not self.table:
            raise ValueError(f"rule {self.rule!r} needs 'table' (a CSV or Parquet file)")
        if self.rule == "fixed" and self.date is None:
            raise ValueError("rule 'fixed' needs 'date' (YYYY-MM-DD)")
        if self.rule == "first_occurrence":
            if not self.concepts:
                raise ValueError("rule 'first_occurrence' needs 'concepts' (a list of concept ids)")
            if (self.database is None) == (self.url is None):
                raise ValueError("rule 'first_occurrence' needs exactly one of 'database' or 'url'")
        return self


class BinaryOutcome(_Strict):
    """A binary outcome: a 0/1 ``column`` of the outcome table, or an event within
    ``horizon_days`` after the index date (``concepts`` and/or ``death`` in the OMOP data)."""

    column: str | None = None
    concepts: list[int | str] | None = None
    death: bool = False
    horizon_days: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> BinaryOutcome:
        from_events = bool(self.concepts) or self.death
        if (self.column is None) == (not from_events):
            raise ValueError("give either 'column' or 'concepts'/'death' with 'horizon_days'")
        if from_events and self.horizon_days is None:
            raise ValueError("an outcome from events needs 'horizon_days'")
        return self


class SurvivalOutcome(_Strict):
    """Survival: ``time_column`` (days from the index date) and ``event_column`` (0/1), or
    time to the first of ``concepts`` / ``death`` in the OMOP data, censored at the end of
    observation."""

    time_column: str | None = None
    event_column: str | None = None
    concepts: list[int | str] | None = None
    death: bool = False

    @model_validator(mode="after")
    def _check(self) -> SurvivalOutcome:
        from_columns = self.time_column is not None or self.event_column is not None
        from_events = bool(self.concepts) or self.death
        if from_columns == from_events:
            raise ValueError("give either 'time_column' and 'event_column', or 'concepts'/'death'")
        if from_columns and (self.time_column is None or self.event_column is None):
            raise ValueError("survival needs both 'time_column' and 'event_column'")
        return self


class OutcomeSpec(_Strict):
    """The outcome(s). Columns are read from ``table`` (default: the index table)."""

    table: str | None = None
    binary: BinaryOutcome | None = None
    survival: SurvivalOutcome | None = None

    @model_validator(mode="after")
    def _check(self) -> OutcomeSpec:
        if self.binary is None and self.survival is None:
            raise ValueError("name at least one of 'binary' or 'survival'")
        return self


class CohortConfig(_Strict):
    """``cohort.yaml``: patients and index dates, outcome, lookback window, sources."""

    name: str = "cohort"
    index: IndexRule
    outcome: OutcomeSpec
    lookback_days: int = Field(default=365, gt=0)
    sources: list[SourceSpec] = Field(default_factory=list)


def _describe(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the last key of ``loc`` (to suggest valid keys)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    return current


def validate_model(model: type[BaseModel], data: Any, *, where: str = "") -> Any:
    """Validate ``data`` into ``model``; raise a one-line InputError on the first problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A misspelt key also makes the intended key "missing": report the misspelling.
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = tuple(err["loc"])
        key = _describe(loc)
        prefix = f"{where}.{key}" if where and key else (where or key)
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc)
            valid = sorted((f.alias or n) for n, f in (owner.model_fields.items() if owner else []))
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
            raise InputError(f"{prefix}: unknown key; {hint}") from None
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = err["type"] != "missing" and not isinstance(value, dict | list)
        got = f" (got {value!r})" if shown else ""
        raise InputError(f"{prefix or model.__name__}: {msg}{got}") from None


def read_yaml_mapping(path: str | Path, *, what: str, keys: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; one-line errors name the file (and line).

    ``what`` names the expected file (``cohort.yaml``), ``keys`` its main keys for the hint.
    """
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: file not found; pass the path of a {what}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{p}:{line} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{p}: expected a mapping of keys ({keys})")
    return raw


def load_cohort_config(path: str | Path) -> CohortConfig:
    """Read and validate ``cohort.yaml``; errors name the file and the key."""
    p = Path(path)
    raw = read_yaml_mapping(p, what="cohort.yaml", keys="name, index, outcome, sources")
    try:
        return parse_cohort_config(raw)
    except InputError as exc:
        raise InputError(f"{p.name}: {exc}") from None


def parse_cohort_config(raw: dict[str, Any]) -> CohortConfig:
    """Validate a cohort config mapping; each source by the spec class of its reader."""
    sources = raw.get("sources", [])
    if not isinstance(sources, list):
        raise InputError("sources: expected a list of sources, each with 'name' and 'type'")
    specs = []
    for i, item in enumerate(sources):
        if not isinstance(item, dict) or "type" not in item:
            raise InputError(f"sources[{i}]: each source needs a 'type' key, e.g. type: omop")
        try:
            _, spec_cls = get_source(str(item["type"]))
        except InputError as exc:
            raise InputError(f"sources[{i}].type: {exc}") from None
        specs.append(validate_model(spec_cls, item, where=f"sources[{i}]"))
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"sources: name {dup[0]!r} is used twice; give each source its own name")
    config: CohortConfig = validate_model(CohortConfig, {**raw, "sources": []})
    return config.model_copy(update={"sources": specs})
