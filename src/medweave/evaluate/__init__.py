"""Measuring models: metrics, bootstrap intervals, paired comparisons, curves and subgroups.

Binary predictions are probabilities ``p`` of outcomes ``y``; survival predictions are a
risk score (higher = earlier event) and optionally a survival matrix at fixed horizons.
Every function returns plain floats, lists and dicts, with None where a value is
undefined, ready for ``results.json``.
"""

from __future__ import annotations

from medweave.evaluate._bootstrap import (
    TASK_METRICS,
    bootstrap_ci,
    metric_table,
    paired_bootstrap,
    paired_table,
    resample_weights,
)
from medweave.evaluate._metrics import (
    BINARY_METRICS,
    SURVIVAL_METRICS,
    TAU_QUANTILE,
    breslow_log_baseline,
    breslow_survival,
    calibration_points,
    classification_metrics,
    default_horizons,
    default_tau,
    pr_points,
    roc_points,
    survival_curves,
    survival_metrics,
    td_auc_curve,
)
from medweave.evaluate._subgroups import age_bands, subgroup_table

__all__ = [
    "BINARY_METRICS",
    "SURVIVAL_METRICS",
    "TASK_METRICS",
    "TAU_QUANTILE",
    "age_bands",
    "bootstrap_ci",
    "breslow_log_baseline",
    "breslow_survival",
    "calibration_points",
    "classification_metrics",
    "default_horizons",
    "default_tau",
    "metric_table",
    "paired_bootstrap",
    "paired_table",
    "pr_points",
    "resample_weights",
    "roc_points",
    "subgroup_table",
    "survival_curves",
    "survival_metrics",
    "td_auc_curve",
]
