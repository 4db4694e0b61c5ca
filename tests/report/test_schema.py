"""The results.json schema: the fixtures pass, and each kind of mistake is named by its path."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import numpy as np
import pytest

from medweave.errors import InputError
from medweave.report import SCHEMA_VERSION, load_schema, validate_results


def _error(results: object) -> str:
    with pytest.raises(ValueError, match=r"^results\.json: \$") as info:
        validate_results(results)
    assert isinstance(info.value, InputError)
    message = str(info.value)
    assert "\n" not in message and message.startswith("results.json: $")
    return message


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema_version"] == {"const": SCHEMA_VERSION} == {"const": "1.0"}
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])


def test_fixtures_validate(any_results: dict[str, Any]) -> None:
    validate_results(any_results)
    validate_results(json.loads(json.dumps(any_results, allow_nan=False)))  # as read from disk


@pytest.mark.parametrize(
    ("parent", "key", "shown"),
    [
        ((), "task", "$"),
        (("study", "validation"), "folds", "$.study.validation"),
        (("cohort", "flow"), "excluded", "$.cohort.flow"),
        (("models", 3), "metrics", "$.models[3]"),
        (("models", 0, "metrics", "auroc"), "ci_low", "$.models[0].metrics.auroc"),
        (("models", 1, "subgroups", 2), "n_events", "$.models[1].subgroups[2]"),
        (
            ("stratification", "clusters", "groups", 1),
            "median_time",
            "$.stratification.clusters.groups[1]",
        ),
        (("comparisons", 0), "p_value", "$.comparisons[0]"),
    ],
)
def test_missing_required_key_names_its_path(
    binary_results: dict[str, Any], parent: tuple[Any, ...], key: str, shown: str
) -> None:
    del _get(binary_results, parent)[key]
    assert _error(binary_results) == f"results.json: {shown}: missing required key {key!r}"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), np.float64("nan")])
def test_non_finite_float_names_its_path(binary_results: dict[str, Any], bad: float) -> None:
    binary_results["models"][2]["metrics"]["auroc"]["estimate"] = bad
    message = _error(binary_results)
    assert message.startswith("results.json: $.models[2].metrics.auroc.estimate is ")
    assert "not valid JSON" in message and "null" in message


def test_nan_in_a_curve_and_under_an_odd_key(survival_results: dict[str, Any]) -> None:
    survival_results["models"][0]["curves"]["td_auc"]["times"][3] = float("nan")
    assert "$.models[0].curves.td_auc.times[3] is nan" in _error(survival_results)
    survival_results["models"][0]["curves"]["td_auc"]["times"][3] = 1.0
    survival_results["timing"]["steps"]["train model"] = float("nan")
    assert '$.timing.steps["train model"] is nan' in _error(survival_results)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("cohort", "n_patients"), "800", "$.cohort.n_patients: expected integer, got str '800'"),
        (("cohort", "n_patients"), np.int64(800), "expected integer, got int64 np.int64(800)"),
        (("cohort", "n_events"), 12.5, "$.cohort.n_events: expected integer, got float 12.5"),
        (
            ("models", 0, "metrics", "brier", "ci_high"),
            "0.2",
            "$.models[0].metrics.brier.ci_high: expected number or null",
        ),
        (("models", 4, "modalities"), "ehr", "$.models[4].modalities: expected array"),
        (
            ("cohort", "missingness", "patterns", 0, "present", 1),
            1,
            "$.cohort.missingness.patterns[0].present[1]: expected boolean, got int 1",
        ),
        (
            ("models", 0, "curves", "roc", "y", 5),
            None,
            "$.models[0].curves.roc.y[5]: expected number",
        ),
        (("timing", "steps", "train"), -1.0, "$.timing.steps.train: -1.0 is less than"),
        (("schema_version",), "2.0", "$.schema_version: expected '1.0', got '2.0'"),
        (("task",), "regression", "$.task: expected one of ['binary', 'survival']"),
        (("study", "created"), "last tuesday", "$.study.created: expected an ISO-8601 date-time"),
        (
            ("stratification", "clusters", "silhouette"),
            {"three": 0.2},
            "$.stratification.clusters.silhouette",
        ),
    ],
)
def test_wrong_value_names_its_path(
    binary_results: dict[str, Any], path: tuple[Any, ...], value: object, expected: str
) -> None:
    _get(binary_results, path[:-1])[path[-1]] = value
    assert expected in _error(binary_results)


def test_a_huge_wrong_value_is_shortened(binary_results: dict[str, Any]) -> None:
    binary_results["models"][0]["modalities"] = {"x" * 500: 1}
    message = _error(binary_results)
    assert "$.models[0].modalities: expected array, got dict" in message
    assert len(message) < 200


def test_unknown_key_is_refused_where_the_contract_is_closed(
    binary_results: dict[str, Any],
) -> None:
    binary_results["models"][0]["patient_ids"] = ["p1", "p2"]
    message = _error(binary_results)
    assert message.startswith("results.json: $.models[0]: unexpected key(s) ['patient_ids']")


def test_open_maps_take_new_keys(binary_results: dict[str, Any]) -> None:
    """Metrics, exclusion reasons, modalities and timing steps are dict[...] in the contract."""
    binary_results["models"][0]["metrics"]["accuracy"] = {
        "estimate": 0.8,
        "ci_low": 0.78,
        "ci_high": 0.82,
    }
    binary_results["cohort"]["flow"]["excluded"]["consent withdrawn"] = 3
    binary_results["timing"]["steps"]["explain"] = 12.0
    validate_results(binary_results)


def test_nulls_where_floats_are_undefined(binary_results: dict[str, Any]) -> None:
    binary_results["models"][0]["metrics"]["calibration_slope"] = {
        "estimate": None,
        "ci_low": None,
        "ci_high": None,
    }
    binary_results["comparisons"][0]["p_value"] = None
    binary_results["ceiling"] = None
    binary_results["best_single"] = None
    binary_results["stratification"]["clusters"] = None
    validate_results(binary_results)


def test_curves_must_match_the_task(
    binary_results: dict[str, Any], survival_results: dict[str, Any]
) -> None:
    binary_results["models"][1]["curves"] = survival_results["models"][1]["curves"]
    assert "$.models[1].curves" in _error(binary_results)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda r: r["cohort"]["missingness"]["patterns"][2]["present"].pop(),
            "$.cohort.missingness.patterns[2].present: has 3 flags, expected 4",
        ),
        (
            lambda r: r["models"][1]["curves"]["roc"]["x"].pop(),
            "$.models[1].curves.roc.y: has 80 values, expected 79 (as x)",
        ),
        (
            lambda r: r.update(best_single="single:genomics"),
            "$.best_single: 'single:genomics' is not the name of a model",
        ),
        (
            lambda r: r["comparisons"][3].update(reference="nope"),
            "$.comparisons[3].reference: 'nope' is not the name",
        ),
        (
            lambda r: r["models"][4].update(name=r["models"][0]["name"]),
            "$.models[4].name: 'fusion:attention' appears twice",
        ),
        (
            lambda r: r["stratification"]["clusters"]["km"][1]["ci_low"].pop(),
            "$.stratification.clusters.km[1].ci_low: has",
        ),
    ],
)
def test_cross_checks_name_their_path(
    binary_results: dict[str, Any], change: Any, expected: str
) -> None:
    change(binary_results)
    assert expected in _error(binary_results)


def test_not_a_dict() -> None:
    assert _error([1, 2]) == "results.json: $: expected object, got list [1, 2]"
