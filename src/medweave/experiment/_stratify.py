"""Stratification of the study's best multimodal model: risk groups from its out-of-fold
predictions, and clusters of the fused representation of its final model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medweave.cohort import Cohort
from medweave.evaluate.stratify import cluster_patients, risk_groups, stratify
from medweave.experiment._results import profile_features
from medweave.experiment._study import StudyConfig

__all__ = ["stratification"]

log = logging.getLogger(__name__)


def _pick(models: list[dict[str, Any]], main: str) -> dict[str, Any] | None:
    def score(m: dict[str, Any]) -> float:
        value = m["metrics"].get(main, {}).get("estimate")
        return float("-inf") if value is None else float(value)

    for kinds in (("fusion", "subset"), ("single",)):
        pool = [m for m in models if m["kind"] in kinds]
        if pool:
            return max(pool, key=score)
    return None


def stratification(
    *,
    study: StudyConfig,
    cohort: Cohort,
    models: list[dict[str, Any]],
    preds: dict[str, np.ndarray],
    bundles: Path,
    main: str,
) -> dict[str, Any] | None:
    """The ``stratification`` object of results.json (None without a neural model)."""
    from medweave.models.estimator import MultimodalEstimator

    model = _pick(models, main)
    if model is None:
        return None
    pat = cohort.patients
    outcome_kw: dict[str, Any]
    if {"time", "event"} <= set(pat.columns):  # Kaplan–Meier whenever follow-up is known
        outcome_kw = {
            "time": pat["time"].to_numpy(dtype=float),
            "event": pat["event"].to_numpy(dtype=bool),
        }
    else:
        outcome_kw = {"outcome": pat["outcome"].to_numpy(dtype=int)}
    features, owner = profile_features(cohort)
    common = {
        **outcome_kw,
        "features": features,
        "feature_modality": owner,
        "presence": cohort.presence().reset_index(drop=True),
    }
    s = study.stratification
    risk = preds[model["name"]]
    groups = stratify(
        risk_groups(risk, n_groups=s.risk_groups),  # type: ignore[arg-type]
        method="risk_quantiles",
        **common,
    ).to_dict()
    clusters = None
    bundle = bundles / model["name"].replace(":", "_")
    if (bundle / "bundle.json").is_file():
        emb = MultimodalEstimator.load(bundle).transform(cohort)
        found = cluster_patients(emb, k=s.k, k_range=s.k_range, seed=study.seed)
        clusters = stratify(
            found.labels,  # type: ignore[arg-type]
            method="kmeans",
            silhouette=found.silhouette,
            **common,
        ).to_dict()
    else:
        log.warning("no final bundle for %s: clusters skipped", model["name"])
    return {"model": model["name"], "clusters": clusters, "risk_groups": groups}
