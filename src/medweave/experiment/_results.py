"""From the grid's out-of-fold predictions to ``results.json``: pooled metrics with
bootstrap intervals, per-fold metrics, curves, subgroups, paired comparisons against the
best single modality, stratification and the synthetic cohort's ceilings."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medweave import __version__
from medweave.cohort import Cohort
from medweave.evaluate import (
    age_bands,
    breslow_log_baseline,
    breslow_survival,
    calibration_points,
    classification_metrics,
    default_horizons,
    default_tau,
    metric_table,
    paired_bootstrap,
    pr_points,
    roc_points,
    subgroup_table,
    survival_curves,
    survival_metrics,
    td_auc_curve,
)
from medweave.experiment._jobs import ModelSpec
from medweave.experiment._study import StudyConfig

__all__ = ["MAIN_METRIC", "Outcomes", "assemble"]

MAIN_METRIC = {"binary": "auroc", "survival": "c_harrell"}
SCHEMA_VERSION = "1.0"
#: Features shown in cluster profiles come from blocks of at most this many features.
PROFILE_MAX_FEATURES = 300


class Outcomes:
    """The study's targets over the cohort's patients, and the fixed survival horizons."""

    def __init__(self, cohort: Cohort, task: str) -> None:
        pat = cohort.patients
        self.task = task
        self.y = pat["outcome"].to_numpy(dtype=np.int64) if "outcome" in pat else None
        has_time = {"time", "event"} <= set(pat.columns)
        self.time = pat["time"].to_numpy(dtype=np.float64) if has_time else None
        self.event = pat["event"].to_numpy(dtype=bool) if has_time else None
        self.horizons = (
            np.asarray(default_horizons(self.time, self.event), dtype=np.float64)
            if task == "survival" and self.time is not None and self.event is not None
            else None
        )
        #: Truncation time of Uno's C and the time-dependent metrics, one for the study.
        self.tau = default_tau(self.time) if task == "survival" and self.time is not None else None

    def arrays(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        sel = slice(None) if rows is None else rows
        if self.task == "binary":
            assert self.y is not None
            return {"y": self.y[sel]}
        assert self.time is not None and self.event is not None
        return {"time": self.time[sel], "event": self.event[sel]}

    def context(self, rows: np.ndarray | None = None) -> dict[str, Any] | None:
        if self.task == "binary":
            return None
        assert self.time is not None and self.event is not None
        sel = slice(None) if rows is None else rows
        return {
            "train_time": self.time[sel],
            "train_event": self.event[sel],
            "times": self.horizons,
            "tau": self.tau,
        }

    def prediction(self, pred: np.ndarray, surv: np.ndarray | None) -> dict[str, np.ndarray]:
        if self.task == "binary":
            return {"p": pred}
        out = {"risk": pred}
        if surv is not None:
            out["surv"] = surv
        return out


def _settings(estimator: dict[str, Any]) -> dict[str, Any]:
    """The study's estimator settings for ``results.json``; gene sets given inline are
    summarised by their count (they can hold thousands of gene ids)."""
    out = dict(estimator)
    if isinstance(out.get("gene_sets"), dict):
        out["gene_sets"] = f"{len(out['gene_sets'])} gene sets"
    return out


def pooled(
    out: Outcomes, folds: list[dict[str, np.ndarray]], n: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Out-of-fold predictions over all patients (and, for survival, each patient's
    survival curve at the horizons from its fold's Breslow baseline).

    A survival model's risk score is a log hazard ratio whose origin is arbitrary: each
    fold's model may shift all its scores by a different constant. Pooled as they are, the
    folds' scores would be compared across an offset no model means. So each fold's scores
    are put on one scale first: the log cumulative hazard at the middle horizon,
    ``risk + log H0(t)``, with ``H0`` the fold's Breslow baseline from its training patients
    (a per-fold constant: the ranking within a fold is unchanged).
    """
    pred = np.full(n, np.nan)
    surv = None
    if out.task == "survival":
        assert out.time is not None and out.event is not None and out.horizons is not None
        surv = np.full((n, len(out.horizons)), np.nan)
    for f in folds:
        pred[f["test"]] = f["pred"]
        if surv is not None:
            assert out.time is not None and out.event is not None and out.horizons is not None
            tr = f["train"]
            log_h0 = breslow_log_baseline(
                out.time[tr], out.event[tr], f["train_pred"], out.horizons
            )
            surv[f["test"]] = survival_curves(f["pred"], log_h0)
            middle = log_h0[len(out.horizons) // 2]
            if np.isfinite(middle):  # -inf only if the fold saw no event before it
                pred[f["test"]] += middle
    return pred, surv


def fold_metrics(out: Outcomes, f: dict[str, np.ndarray]) -> dict[str, float | None]:
    test = f["test"]
    if out.task == "binary":
        assert out.y is not None
        return classification_metrics(out.y[test], f["pred"])
    assert out.time is not None and out.event is not None and out.horizons is not None
    tr = f["train"]
    surv = breslow_survival(out.time[tr], out.event[tr], f["train_pred"], f["pred"], out.horizons)
    return survival_metrics(
        out.time[test],
        out.event[test],
        f["pred"],
        surv=surv,
        times=out.horizons,
        train_time=out.time[tr],
        train_event=out.event[tr],
        tau=out.tau,
    )


def curves(out: Outcomes, pred: np.ndarray) -> dict[str, Any]:
    if out.task == "binary":
        assert out.y is not None
        return {
            "roc": roc_points(out.y, pred),
            "pr": pr_points(out.y, pred),
            "calibration": calibration_points(out.y, pred),
        }
    assert out.time is not None and out.event is not None
    return {
        "td_auc": td_auc_curve(
            out.time,
            out.event,
            pred,
            times=out.horizons,
            train_time=out.time,
            train_event=out.event,
        )
    }


def subgroup_frame(cohort: Cohort, names: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """One column per subgroup variable: ``sex`` and ``age_band`` from the EHR block,
    anything else from the patient table; and, for each variable the cohort cannot give,
    why (said in results.json and the report, never dropped silently)."""
    cols: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    for name in names:
        if name in ("sex", "age_band"):
            feature = "sex_male" if name == "sex" else "age_at_index"
            values = _feature(cohort, feature)
            if values is None:
                unavailable[name] = (
                    f"no feature block holds {feature!r} (it comes from an EHR source)"
                )
                continue
            if name == "sex":
                cols[name] = np.where(values > 0.5, "male", "female").astype(object)
                cols[name][np.isnan(values)] = None
            else:
                cols[name] = age_bands(values)
        elif name in cohort.patients.columns:
            cols[name] = cohort.patients[name].astype(str).to_numpy()
        else:
            unavailable[name] = (
                "not a column of the cohort's patient table (carry it with index.columns "
                "in cohort.yaml)"
            )
    return pd.DataFrame(cols, index=np.arange(cohort.n)), unavailable


def _feature(cohort: Cohort, feature: str) -> np.ndarray | None:
    for block in cohort.modalities.values():
        if block.x is not None and feature in block.feature_names:
            return np.asarray(block.x[:, block.feature_names.index(feature)], dtype=np.float64)
    return None


def profile_features(cohort: Cohort) -> tuple[pd.DataFrame, dict[str, str]]:
    """Named features of the feature blocks (``modality:feature``) for cluster profiles."""
    frames, owner = [], {}
    for m, block in cohort.modalities.items():
        if block.x is None or not block.feature_names:
            continue
        if len(block.feature_names) > PROFILE_MAX_FEATURES:
            continue
        names = [f"{m}:{f}" for f in block.feature_names]
        x = np.asarray(block.x, dtype=np.float64).copy()
        x[~block.present] = np.nan
        frames.append(pd.DataFrame(x, columns=names))
        owner.update(dict.fromkeys(names, m))
    if not frames:
        return pd.DataFrame(index=np.arange(cohort.n)), owner
    return pd.concat(frames, axis=1), owner


def cohort_summary(cohort: Cohort, out: Outcomes) -> dict[str, Any]:
    presence = cohort.presence()
    patterns = presence.value_counts(sort=True)
    n_events = int(out.y.sum()) if out.task == "binary" and out.y is not None else None
    if n_events is None and out.event is not None:
        n_events = int(out.event.sum())
    flow = dict(cohort.audit.flow) or {
        "input_patients": cohort.n,
        "excluded": {},
        "cohort_patients": cohort.n,
        "modalities_present": {k: int(v) for k, v in presence.sum().items()},
    }
    return {
        "n_patients": cohort.n,
        "n_events": n_events or 0,
        "features": {
            m: len(b.feature_names) for m, b in cohort.modalities.items() if b.feature_names
        },
        "tau": out.tau,
        "flow": flow,
        "sources": {k: v.to_dict() for k, v in cohort.audit.sources.items()},
        "missingness": {
            "modalities": list(presence.columns),
            "patterns": [
                {"present": [bool(v) for v in np.atleast_1d(np.asarray(key))], "n": int(n)}
                for key, n in patterns.items()
            ],
        },
    }


def ceilings(cohort: Cohort, out: Outcomes, truth: Path | None) -> dict[str, Any] | None:
    """The synthetic cohort's ceilings on these patients: its true model's scores with
    what each patient's data show (``observed``) and with everything known (``oracle``)."""
    if truth is None or not truth.is_file():
        return None
    table = pd.read_parquet(truth).set_index("patient_id")
    if not set(cohort.ids) <= set(table.index):
        return None
    table = table.loc[list(cohort.ids)]
    result: dict[str, Any] = {}
    for name, p_col, r_col in (
        ("observed", "p_observed", "risk_observed"),
        ("oracle", "p_true", "risk_true"),
    ):
        scores: dict[str, float | None] = {}
        if out.y is not None and p_col in table:
            scores["auroc"] = classification_metrics(out.y, table[p_col].to_numpy())["auroc"]
        if out.time is not None and out.event is not None and r_col in table:
            risk = table[r_col].to_numpy()
            scores["c_harrell"] = survival_metrics(out.time, out.event, risk)["c_harrell"]
        result[name] = scores
    return result


def assemble(
    *,
    study: StudyConfig,
    cohort: Cohort,
    specs: list[ModelSpec],
    results: dict[str, list[dict[str, np.ndarray]]],
    validation: dict[str, Any],
    stratification: dict[str, Any] | None,
    ceiling: dict[str, Any] | None,
    timing: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``results.json`` as a dict, and each model's pooled out-of-fold prediction."""
    out = Outcomes(cohort, study.task)
    ev = study.evaluation
    main = MAIN_METRIC[study.task]
    groups, unavailable = subgroup_frame(cohort, ev.subgroups)
    models, preds, survs = [], {}, {}
    for spec in specs:
        folds = results[spec.name]
        pred, surv = pooled(out, folds, cohort.n)
        preds[spec.name], survs[spec.name] = pred, surv
        arrays = {**out.arrays(), **out.prediction(pred, surv)}
        models.append(
            {
                **spec.to_dict(),
                "metrics": metric_table(
                    study.task,
                    arrays,
                    n_boot=ev.n_bootstrap,
                    level=ev.level,
                    seed=study.seed,
                    context=out.context(),
                ),
                "folds": [
                    {
                        "fold": k,
                        "n_train": len(f["train"]),
                        "n_test": len(f["test"]),
                        "metrics": fold_metrics(out, f),
                        "fit_seconds": float(f["seconds"]),
                    }
                    for k, f in enumerate(folds)
                ],
                "curves": curves(out, pred),
                "subgroups": subgroup_table(
                    study.task,
                    groups,
                    arrays,
                    min_n=ev.min_subgroup,
                    n_boot=min(ev.n_bootstrap, 200),
                    level=ev.level,
                    seed=study.seed,
                    context=out.context(),
                )
                if len(groups.columns)
                else [],
            }
        )
    singles = [m for m in models if m["kind"] == "single"]
    best_single = max(singles, key=lambda m: _score(m, main))["name"] if singles else None
    comparisons = []
    if best_single is not None:
        ref = best_single
        for m in models:
            if m["kind"] == "single":
                continue
            diff = paired_bootstrap(
                main,
                out.arrays(),
                out.prediction(preds[m["name"]], survs[m["name"]]),
                out.prediction(preds[ref], survs[ref]),
                n_boot=ev.n_bootstrap,
                level=ev.level,
                seed=study.seed,
                context=out.context(),
            )
            comparisons.append({"model": m["name"], "reference": ref, "metric": main, **diff})
    doc = {
        "schema_version": SCHEMA_VERSION,
        "medweave_version": __version__,
        "study": {
            "name": study.name,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cohort": Path(study.cohort).name,
            "validation": validation,
            "n_bootstrap": ev.n_bootstrap,
            "estimator": _settings(study.estimator),
        },
        "task": study.task,
        "cohort": cohort_summary(cohort, out),
        "ceiling": ceiling,
        "models": models,
        "best_single": best_single,
        "comparisons": comparisons,
        "subgroups_unavailable": [{"variable": k, "reason": v} for k, v in unavailable.items()],
        "stratification": stratification,
        "timing": timing,
    }
    return doc, preds


def _score(model: dict[str, Any], metric: str) -> float:
    value = model["metrics"].get(metric, {}).get("estimate")
    return float("-inf") if value is None else float(value)
