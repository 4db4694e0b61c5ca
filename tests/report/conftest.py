"""Realistic results.json dicts (schema 1.0) for a binary and a survival study.

The numbers come from simulated predictions (seeded), so curves, metrics and groups are
mutually consistent the way evaluate/ would write them, without training anything.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

N = 800
MODALITIES = ["ehr", "imaging", "omics", "exposures"]
# name, kind, modalities, fusion, signal strength
MODELS: list[tuple[str, str, list[str], str | None, float]] = [
    ("fusion:attention", "fusion", MODALITIES, "attention", 1.55),
    ("fusion:late", "fusion", MODALITIES, "late", 1.45),
    ("fusion:early", "fusion", MODALITIES, "early", 1.35),
    ("subset:ehr+imaging", "subset", ["ehr", "imaging"], "attention", 1.30),
    ("subset:ehr+omics", "subset", ["ehr", "omics"], "attention", 1.20),
    ("single:ehr", "single", ["ehr"], None, 1.05),
    ("single:imaging", "single", ["imaging"], None, 0.85),
    ("single:omics", "single", ["omics"], None, 0.70),
    ("single:exposures", "single", ["exposures"], None, 0.35),
    ("lightgbm", "lightgbm", MODALITIES, None, 1.25),
]
SURVIVAL_EXTRA = ("coxph", "coxph", ["ehr"], None, 1.0)


def _interval(estimate: float, half_width: float) -> dict[str, float]:
    return {
        "estimate": round(estimate, 4),
        "ci_low": round(estimate - half_width, 4),
        "ci_high": round(estimate + half_width, 4),
    }


def _curves(y: np.ndarray, prob: np.ndarray) -> dict[str, Any]:
    """ROC and PR points, AUROC and average precision (ties are negligible here)."""
    order = np.argsort(-prob)
    hits = y[order]
    tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
    tpr, fpr = tp / tp[-1], fp / fp[-1]
    precision = tp / np.arange(1, len(y) + 1)
    return {
        "roc": (np.r_[0, fpr], np.r_[0, tpr]),
        "pr": (np.r_[0, tpr[tp > 0]], np.r_[1, precision[tp > 0]]),
        "auroc": float(np.trapezoid(np.r_[0, tpr], np.r_[0, fpr])),
        "auprc": float(np.sum(precision * hits) / hits.sum()),
    }


def _thin(x: np.ndarray, y: np.ndarray, n: int = 80) -> dict[str, list[float]]:
    keep = np.unique(np.linspace(0, len(x) - 1, min(n, len(x))).astype(int))
    return {"x": np.round(x[keep], 4).tolist(), "y": np.round(y[keep], 4).tolist()}


def _km(time: np.ndarray, event: np.ndarray, label: str) -> dict[str, Any]:
    """Kaplan-Meier with log-log (Greenwood) 95% bands."""
    order = np.argsort(time)
    t, e = time[order], event[order]
    grid = np.unique(t[e == 1])
    at_risk = np.array([(t >= g).sum() for g in grid])
    deaths = np.array([((t == g) & (e == 1)).sum() for g in grid])
    surv = np.cumprod(1 - deaths / at_risk)
    var = np.cumsum(deaths / (at_risk * np.maximum(at_risk - deaths, 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        loglog = np.log(-np.log(surv))
        half = 1.96 * np.sqrt(var) / np.abs(np.log(surv))
    low, high = np.exp(-np.exp(loglog + half)), np.exp(-np.exp(loglog - half))
    step = max(1, len(grid) // 60)
    sl = slice(None, None, step)
    return {
        "label": label,
        "time": [0.0, *np.round(grid[sl], 1).tolist()],
        "survival": [1.0, *np.round(surv[sl], 4).tolist()],
        "ci_low": [1.0, *np.round(np.nan_to_num(low[sl], nan=0.0), 4).tolist()],
        "ci_high": [1.0, *np.round(np.nan_to_num(high[sl], nan=1.0), 4).tolist()],
    }


def _grouping(
    method: str,
    labels: np.ndarray,
    names: list[str],
    time: np.ndarray,
    event: np.ndarray,
    *,
    with_profiles: bool,
) -> dict[str, Any]:
    groups, km, profiles = [], [], []
    for g, name in enumerate(names):
        mask = labels == g
        curve = _km(time[mask], event[mask], name)
        below = np.nonzero(np.asarray(curve["survival"]) <= 0.5)[0]
        groups.append(
            {
                "label": name,
                "n": int(mask.sum()),
                "n_events": int(event[mask].sum()),
                "event_rate": round(float(event[mask].mean()), 4),
                "median_time": float(curve["time"][below[0]]) if below.size else None,
            }
        )
        km.append(curve)
        sign = 1 if g % 2 else -1
        profiles.append(
            {
                "label": name,
                "top_features": [
                    {
                        "feature": "age_at_index",
                        "modality": "ehr",
                        "smd": 0.9 * sign,
                        "mean_in": 71.2 + 5 * sign,
                        "mean_out": 68.4,
                    },
                    {
                        "feature": "lesion_volume_ml",
                        "modality": "imaging",
                        "smd": 0.62 - 0.3 * g,
                        "mean_in": 14.1,
                        "mean_out": 9.8,
                    },
                    {
                        "feature": "IL6",
                        "modality": "omics",
                        "smd": -0.41 * sign,
                        "mean_in": 1.2,
                        "mean_out": 1.9,
                    },
                    {
                        "feature": "pm25_365d_mean",
                        "modality": "exposures",
                        "smd": 0.22,
                        "mean_in": 11.3,
                        "mean_out": 10.1,
                    },
                    {
                        "feature": "egfr_last",
                        "modality": "ehr",
                        "smd": None,
                        "mean_in": None,
                        "mean_out": 78.0,
                    },
                ],
                "modality_presence": {
                    "ehr": 1.0,
                    "imaging": 0.83 - 0.1 * g,
                    "omics": 0.61,
                    "exposures": 0.97,
                },
            }
        )
    return {
        "method": method,
        "k": len(names),
        "silhouette": {"2": 0.21, "3": 0.27, "4": 0.24, "5": 0.19} if with_profiles else None,
        "groups": groups,
        "km": km,
        "logrank": {"statistic": 84.3, "p_value": 2.1e-17, "df": len(names) - 1},
        "profiles": profiles if with_profiles else None,
    }


def _subgroups(
    rng: np.random.Generator, main: list[str], estimate: dict[str, float], n_events: int
) -> list[dict[str, Any]]:
    rows = []
    levels = [
        ("sex", "female", 0.52),
        ("sex", "male", 0.48),
        ("age", "<65", 0.41),
        ("age", "≥65", 0.59),
        ("site", "A", 0.55),
        ("site", "B", 0.435),
        ("site", "C", 0.015),
    ]
    for variable, level, share in levels:
        n = round(N * share)
        events = round(n_events * share) if level != "C" else 0
        metrics: dict[str, dict[str, float | None]] = {}
        for name in main:
            if events == 0:  # one class only: undefined
                metrics[name] = {"estimate": None, "ci_low": None, "ci_high": None}
            else:
                value = estimate[name] + float(rng.normal(0, 0.015))
                metrics[name] = dict(_interval(value, 0.9 / np.sqrt(n)))
        rows.append(
            {"variable": variable, "level": level, "n": n, "n_events": events, "metrics": metrics}
        )
    return rows


def _folds(rng: np.random.Generator, metrics: dict[str, Any], seconds: float) -> list[Any]:
    return [
        {
            "fold": k,
            "n_train": 640,
            "n_test": 160,
            "metrics": {
                m: round(v["estimate"] + float(rng.normal(0, 0.02)), 4) for m, v in metrics.items()
            },
            "fit_seconds": round(seconds * float(rng.uniform(0.8, 1.2)), 2),
        }
        for k in range(5)
    ]


def _common(task: str, n_events: int) -> dict[str, Any]:
    return {
        "schema_version": "1.0",
        "medweave_version": "0.1.0",
        "study": {
            "name": f"Synthetic demo — {task} outcome",
            "created": "2025-07-14T09:31:02+00:00",
            "cohort": "demo-cohort/built",
            "validation": {"kind": "kfold", "folds": 5, "seed": 0, "split_column": None},
            "n_bootstrap": 1000,
        },
        "task": task,
        "subgroups_unavailable": [],
        "cohort": {
            "n_patients": N,
            "n_events": n_events,
            "tau": 1_461.0 if task == "survival" else None,
            "flow": {
                "input_patients": 874,
                "excluded": {
                    "index date after data cut-off": 31,
                    "age under 18": 22,
                    "no record within look-back window": 21,
                },
                "cohort_patients": N,
                "modalities_present": {"ehr": 800, "imaging": 603, "omics": 479, "exposures": 772},
            },
            "sources": {
                "index": _src(874, 843, {"missing_index_date": 31}, 0, {}),
                "ehr": _src(
                    91_204, 80_311, {"after_index": 9_870, "value:not_a_number": 1_023}, 800, {}
                ),
                "imaging": _src(
                    650, 603, {"older_study": 40, "unreadable": 7}, 603, {"no_data": 197}
                ),
                "omics": _src(
                    490, 479, {"no_information": 2, "unknown_patient": 9}, 479, {"no_data": 321}
                ),
                "exposures": _src(
                    1_200_000, 290_000, {"outside_windows": 910_000}, 772, {"no_home_location": 28}
                ),
            },
            "missingness": {
                "modalities": MODALITIES,
                "patterns": [
                    {"present": [True, True, True, True], "n": 371},
                    {"present": [True, True, False, True], "n": 204},
                    {"present": [True, False, True, True], "n": 98},
                    {"present": [True, False, False, True], "n": 99},
                    {"present": [True, True, False, False], "n": 18},
                    {"present": [True, True, True, False], "n": 10},
                ],
            },
        },
        "timing": {
            "total_seconds": 1843.2,
            "steps": {
                "build cohort": 41.8,
                "preprocess": 63.0,
                "train": 1521.7,
                "evaluate": 188.4,
                "stratify": 21.6,
                "report": 6.7,
            },
        },
    }


@functools.cache
def _binary() -> dict[str, Any]:
    rng = np.random.default_rng(11)
    y = (rng.random(N) < 0.3).astype(int)
    results = _common("binary", int(y.sum()))
    models = []
    for name, kind, mods, fusion, strength in MODELS:
        score = strength * y + rng.normal(0, 1, N)
        prob = 1 / (1 + np.exp(-(strength * (score - strength / 2) + np.log(0.3 / 0.7))))
        curves = _curves(y, prob)
        bins = np.clip((prob * 10).astype(int), 0, 9)
        used = [b for b in range(10) if (bins == b).any()]
        metrics = {
            "auroc": _interval(curves["auroc"], 0.021),
            "auprc": _interval(curves["auprc"], 0.035),
            "brier": _interval(float(np.mean((prob - y) ** 2)), 0.009),
            "calibration_slope": _interval(0.92 + 0.05 * strength, 0.11),
            "calibration_intercept": _interval(-0.04 + 0.02 * strength, 0.09),
        }
        models.append(
            {
                "name": name,
                "kind": kind,
                "modalities": mods,
                "fusion": fusion,
                "metrics": metrics,
                "folds": _folds(rng, metrics, 5 + 6 * len(mods)),
                "curves": {
                    "roc": _thin(*curves["roc"]),
                    "pr": _thin(*curves["pr"]),
                    "calibration": {
                        "predicted": [round(float(prob[bins == b].mean()), 4) for b in used],
                        "observed": [round(float(y[bins == b].mean()), 4) for b in used],
                        "n": [int((bins == b).sum()) for b in used],
                    },
                },
                "subgroups": _subgroups(
                    rng,
                    ["auroc", "auprc"],
                    {m: metrics[m]["estimate"] for m in metrics},
                    int(y.sum()),
                ),
            }
        )
    results["models"] = models
    results["ceiling"] = {
        "observed": {"auroc": 0.893, "brier": 0.118},
        "oracle": {"auroc": 0.921, "brier": 0.104},
    }
    results["best_single"] = "single:ehr"
    results["comparisons"] = _comparisons(results, "auroc")
    time = rng.exponential(900, N)
    risk = 0.3 * y + rng.normal(0, 0.5, N)
    labels = np.digitize(risk, np.quantile(risk, [1 / 3, 2 / 3]))
    clusters = _grouping(
        "kmeans", labels, ["cluster 1", "cluster 2", "cluster 3"], time, y, with_profiles=True
    )
    groups = _grouping(
        "risk_quantiles", labels, ["low", "intermediate", "high"], time, y, with_profiles=False
    )
    groups["km"] = None  # a binary study need not have follow-up times for its risk groups
    groups["logrank"] = None
    results["stratification"] = {
        "model": "fusion:attention",
        "clusters": clusters,
        "risk_groups": groups,
    }
    return results


@functools.cache
def _survival() -> dict[str, Any]:
    rng = np.random.default_rng(12)
    risk = rng.normal(0, 1, N)
    time = rng.exponential(1500 * np.exp(-0.8 * risk))
    censor = rng.uniform(200, 2500, N)
    event = (time <= censor).astype(int)
    time = np.minimum(time, censor).round(1)
    results = _common("survival", int(event.sum()))
    horizons = [180.0, 365.0, 730.0, 1095.0, 1460.0, 1825.0]
    models = []
    for name, kind, mods, fusion, strength in [*MODELS, SURVIVAL_EXTRA]:
        c = 0.55 + 0.12 * strength + float(rng.normal(0, 0.004))
        auc = [round(c + 0.03 - 0.012 * i + float(rng.normal(0, 0.004)), 4) for i in range(6)]
        auc[-1] = None if name == "single:exposures" else auc[-1]  # too few at risk
        metrics = {
            "c_harrell": _interval(c, 0.018),
            "c_uno": _interval(c - 0.008, 0.022),
            "td_auc": _interval(c + 0.012, 0.024),
            "ibs": _interval(0.21 - 0.04 * strength / 1.55, 0.011),
        }
        models.append(
            {
                "name": name,
                "kind": kind,
                "modalities": mods,
                "fusion": fusion,
                "metrics": metrics,
                "folds": _folds(rng, metrics, 6 + 7 * len(mods)),
                "curves": {"td_auc": {"times": horizons, "auc": auc}},
                "subgroups": _subgroups(
                    rng,
                    ["c_harrell", "ibs"],
                    {m: metrics[m]["estimate"] for m in metrics},
                    int(event.sum()),
                ),
            }
        )
    results["models"] = models
    results["ceiling"] = {"observed": {"c_harrell": 0.781}, "oracle": {"c_harrell": 0.823}}
    results["best_single"] = "single:ehr"
    results["comparisons"] = _comparisons(results, "c_harrell")
    score = risk + rng.normal(0, 0.6, N)
    labels = np.digitize(score, np.quantile(score, [0.25, 0.75]))
    clusters = _grouping(
        "kmeans",
        np.digitize(score + rng.normal(0, 0.8, N), [-0.5, 0.8]),
        ["cluster 1", "cluster 2", "cluster 3"],
        time,
        event,
        with_profiles=True,
    )
    groups = _grouping(
        "risk_quantiles", labels, ["low", "intermediate", "high"], time, event, with_profiles=False
    )
    results["stratification"] = {
        "model": "fusion:attention",
        "clusters": clusters,
        "risk_groups": groups,
    }
    return results


def _comparisons(results: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    by_name = {m["name"]: m for m in results["models"]}
    out = []
    pairs = [(m, "single:ehr") for m in by_name if m.startswith(("fusion", "subset"))]
    pairs += [("fusion:attention", "lightgbm"), ("fusion:attention", "fusion:late")]
    for model, reference in pairs:
        diff = by_name[model]["metrics"][metric]["estimate"]
        diff -= by_name[reference]["metrics"][metric]["estimate"]
        half = 0.018
        z = abs(diff) / (half / 1.96)
        p = float(np.exp(-0.717 * z - 0.416 * z * z))  # normal tail approximation
        out.append(
            {
                "model": model,
                "reference": reference,
                "metric": metric,
                "difference": round(diff, 4),
                "ci_low": round(diff - half, 4),
                "ci_high": round(diff + half, 4),
                "p_value": min(1.0, p),
            }
        )
    return out


@pytest.fixture
def binary_results() -> dict[str, Any]:
    """A binary-task results dict: 10 models, curves, subgroups, comparisons, strata."""
    return copy.deepcopy(_binary())


@pytest.fixture
def survival_results() -> dict[str, Any]:
    """A survival-task results dict: 11 models (with Cox PH), td-AUC curves, KM strata."""
    return copy.deepcopy(_survival())


@pytest.fixture(params=["binary", "survival"])
def any_results(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each of the two results dicts in turn."""
    return copy.deepcopy(_binary() if request.param == "binary" else _survival())


@pytest.fixture(scope="session")
def results_by_task() -> dict[str, dict[str, Any]]:
    """Both results dicts by task, shared by the whole session: do not modify them."""
    return {"binary": _binary(), "survival": _survival()}


@pytest.fixture(scope="session")
def report_paths(
    results_by_task: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """report.html of each results dict, rendered once per session."""
    from medweave.report import render

    return {
        task: render(results, tmp_path_factory.mktemp(f"report-{task}"))
        for task, results in results_by_task.items()
    }


def _src(
    read: int, used: int, excluded: dict[str, int], patients: int, missing: dict[str, int]
) -> dict[str, Any]:
    """One source's audit in results.json."""
    return {
        "rows_read": read,
        "rows_used": used,
        "excluded": excluded,
        "patients": patients,
        "patients_missing": missing,
    }
