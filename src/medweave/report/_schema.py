"""The results.json contract: load its JSON Schema and check a results dict against it."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Iterator
from datetime import datetime
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from medweave.errors import InputError

__all__ = ["SCHEMA_VERSION", "load_schema", "validate_results"]

SCHEMA_VERSION = "1.0"
_MAX_REPR = 60


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of results.json, read from the installed package."""
    return json.loads(_schema_text())


@functools.cache
def _schema_text() -> str:
    return (resources.files("medweave") / "schemas" / "results.schema.json").read_text("utf-8")


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time", raises=ValueError)(_is_iso_datetime)
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=checker)


def _is_iso_datetime(value: object) -> bool:
    if isinstance(value, str):
        datetime.fromisoformat(value)  # raises ValueError with the reason
    return True


def validate_results(obj: object) -> None:
    """Check ``obj`` against the results.json contract (schema_version 1.0).

    Raises
    ------
    InputError
        (a ``ValueError``) with one line naming the JSON path that is wrong, e.g.
        ``results.json: $.models[2].metrics.auroc.estimate is NaN; ...``.
    """
    for path, value in _non_finite(obj, "$"):
        raise InputError(
            f"results.json: {path} is {value!r}, which is not valid JSON; "
            "write null for a value that is undefined"
        )
    error = best_match(_validator().iter_errors(obj))
    if error is not None:
        raise InputError(f"results.json: {_path(error.absolute_path)}: {_describe(error)}")
    assert isinstance(obj, dict)  # the schema says so
    for path, problem in _cross_checks(obj):
        raise InputError(f"results.json: {path}: {problem}")


def _non_finite(obj: object, path: str) -> Iterator[tuple[str, float]]:
    if isinstance(obj, float) and not math.isfinite(obj):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _non_finite(value, _join(path, key))
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _non_finite(value, f"{path}[{i}]")


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    return f"{path}.{text}" if text.isidentifier() else f"{path}[{json.dumps(text)}]"


def _path(parts: Iterable[object]) -> str:
    path = "$"
    for part in parts:
        path = _join(path, part)
    return path


def _short(value: object) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _describe(error: ValidationError) -> str:
    """The reason in words, with the offending value shortened to one line."""
    kind, expected, got = error.validator, error.validator_value, error.instance
    if kind == "type":
        want = " or ".join(expected) if isinstance(expected, list) else expected
        return f"expected {want}, got {type(got).__name__} {_short(got)}"
    if kind == "required":
        missing = [key for key in expected if isinstance(got, dict) and key not in got]
        return f"missing required key {missing[0]!r}" if missing else error.message
    if kind == "additionalProperties" and isinstance(got, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(str(key) for key in got if key not in allowed)
        return f"unexpected key(s) {extra}; allowed: {sorted(allowed)}"
    if kind == "const":
        return f"expected {expected!r}, got {_short(got)}"
    if kind == "enum":
        return f"expected one of {expected}, got {_short(got)}"
    if kind == "format":
        return f"expected an ISO-8601 {expected}, got {_short(got)}"
    return " ".join(error.message.split())[:200]


def _cross_checks(results: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """What a JSON Schema cannot say: equal lengths, and names that must refer to models."""
    miss = results["cohort"]["missingness"]
    n_modalities = len(miss["modalities"])
    for i, pattern in enumerate(miss["patterns"]):
        if len(pattern["present"]) != n_modalities:
            yield (
                f"$.cohort.missingness.patterns[{i}].present",
                f"has {len(pattern['present'])} flags, expected {n_modalities} "
                "(one per entry of $.cohort.missingness.modalities)",
            )
    names: list[str] = [model["name"] for model in results["models"]]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            yield f"$.models[{i}].name", f"{name!r} appears twice; model names must be unique"
        seen.add(name)
    for i, model in enumerate(results["models"]):
        for curve, a, b in _CURVE_PAIRS:
            data = model["curves"].get(curve)
            if data is not None:
                yield from _same_length(f"$.models[{i}].curves.{curve}", data, a, b)
    refs = [("$.best_single", results["best_single"]), _ref_stratification(results)]
    for i, comp in enumerate(results["comparisons"]):
        refs += [(f"$.comparisons[{i}].model", comp["model"])]
        refs += [(f"$.comparisons[{i}].reference", comp["reference"])]
    for path, name in refs:
        if name is not None and name not in seen:
            yield path, f"{name!r} is not the name of a model in $.models"
    for key in ("clusters", "risk_groups"):
        grouping = (results["stratification"] or {}).get(key)
        for j, curve in enumerate((grouping or {}).get("km") or []):
            path = f"$.stratification.{key}.km[{j}]"
            for other in ("survival", "ci_low", "ci_high"):
                yield from _same_length(path, curve, "time", other)


_CURVE_PAIRS = (
    ("roc", "x", "y"),
    ("pr", "x", "y"),
    ("calibration", "predicted", "observed"),
    ("calibration", "predicted", "n"),
    ("td_auc", "times", "auc"),
)


def _ref_stratification(results: dict[str, Any]) -> tuple[str, str | None]:
    strat = results["stratification"]
    if strat is None:  # a study without a neural model
        return "$.stratification.model", None
    has_grouping = strat["clusters"] is not None or strat["risk_groups"] is not None
    return "$.stratification.model", strat["model"] if has_grouping else None


def _same_length(path: str, data: dict[str, Any], a: str, b: str) -> Iterator[tuple[str, str]]:
    if len(data[a]) != len(data[b]):
        yield f"{path}.{b}", f"has {len(data[b])} values, expected {len(data[a])} (as {a})"
