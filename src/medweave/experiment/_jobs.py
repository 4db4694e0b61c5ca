"""The grid: which models a study fits, and one job = one model on one fold.

A job is a plain, picklable description (paths, row numbers, parameters) so that any
executor can run it: in this process, or on a Ray worker that loads the saved cohort. Its
result is written atomically to ``out`` (``.npz``), which is how ``--resume`` knows the
job is done.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from medweave._atomic import atomic_file
from medweave.cohort import Cohort
from medweave.experiment._study import StudyConfig
from medweave.models._bundle import jsonable

__all__ = [
    "FoldJob",
    "ModelSpec",
    "job_settings",
    "load_job_result",
    "plan_models",
    "run_job",
    "shared_artifacts",
]

#: Feature-block kinds the classical baselines can use (images need an encoder).
TABULAR_KINDS = ("tabular", "omics", "exposure")
#: the model kinds that are classical baselines (no encoder, nothing shared)
BASELINE_KINDS = ("lightgbm", "elasticnet", "coxph", "coxnet")
#: the elastic-net peers keep each modality's 2,000 most variable features (all of the demo's
#: 1,200 genes); on its 800-patient cohort, 5 folds: elasticnet AUROC 0.710 at 10 s a fit
#: (200 features: 0.691; LightGBM 0.671 at 13 s), coxnet C-index 0.683 at 4 s (Cox PH 0.636)
LINEAR_MAX_FEATURES = 2000


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study: ``kind`` is single, fusion, subset, or a baseline (lightgbm,
    elasticnet, coxph, coxnet)."""

    name: str
    kind: str
    modalities: tuple[str, ...]
    fusion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "modalities": list(self.modalities),
            "fusion": self.fusion,
        }


def plan_models(
    study: StudyConfig, modalities: list[str], kinds: Mapping[str, str]
) -> list[ModelSpec]:
    """Every model the study lists, single modalities first (fusions reuse their encoders)."""
    spec = study.models
    out: list[ModelSpec] = []
    if spec.singles or len(modalities) == 1:
        out += [ModelSpec(f"single:{m}", "single", (m,)) for m in modalities]
    if len(modalities) > 1:
        out += [ModelSpec(f"fusion:{f}", "fusion", tuple(modalities), f) for f in spec.fusions]
        if spec.subsets and spec.fusions:
            fusion = spec.fusions[0]
            for r in range(2, len(modalities)):
                for combo in itertools.combinations(modalities, r):
                    out.append(ModelSpec(f"subset:{'+'.join(combo)}", "subset", combo, fusion))
    tabular = tuple(m for m in modalities if kinds[m] in TABULAR_KINDS)
    for base in spec.baselines or ():
        out.append(ModelSpec(base, base, tabular))
    return out


def shared_artifacts(
    spec: ModelSpec, fold: int, estimator: Mapping[str, Any], kinds: Mapping[str, str]
) -> tuple[str, ...]:
    """What a neural model on ``fold`` shares with the fold's other models through the
    encoder store: its stage-1 (pretrained) encoders, and, with ``interactions``, the GLM of
    its modalities, which every fusion of the same modalities would otherwise fit again."""
    if spec.kind in BASELINE_KINDS:
        return ()
    from medweave.models._auto import planned_interactions
    from medweave.models.estimator import staged_modalities

    staged = staged_modalities(
        {m: kinds[m] for m in spec.modalities}, pretrain=estimator.get("pretrain")
    )
    out = [f"fold {fold}: {m} encoder" for m in staged]
    if len(spec.modalities) > 1 and planned_interactions(estimator):
        out.append(f"fold {fold}: GLM of {'+'.join(spec.modalities)}")
    return tuple(out)


@dataclass(frozen=True)
class FoldJob:
    """Fit ``model`` on rows ``train`` of the saved cohort, predict rows ``test``.

    ``fold`` is -1 for the final model on all patients, which is saved as a bundle in
    ``bundle`` instead of predicting."""

    model: ModelSpec
    fold: int
    cohort_path: str
    train: np.ndarray
    test: np.ndarray
    task: str
    estimator: dict[str, Any]
    seed: int
    encoder_store: str
    out: str
    bundle: str | None = None
    threads: int | None = None
    survival_head: str = "cox"
    #: What the job shares with other jobs of its fold through the encoder store (see
    #: :func:`shared_artifacts`): the first job that needs one makes it, and executors that
    #: run jobs side by side start the others once it is there.
    shares: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=2)
def _cohort(path: str) -> Cohort:
    return Cohort.load(path)


def make_estimator(job: FoldJob) -> Any:
    """The estimator of ``job.model``, configured by the study."""
    from medweave.models.baselines import (
        CoxNetBaseline,
        CoxPHBaseline,
        ElasticNetBaseline,
        LightGBMBaseline,
    )
    from medweave.models.estimator import MultimodalEstimator

    spec = job.model
    if spec.kind == "lightgbm":
        # On Ray each job gets one core (job.threads); in-process all of them. LightGBM is
        # deterministic whatever its thread count. Survival boosts the Cox partial likelihood.
        return LightGBMBaseline(
            task=job.task,
            modalities=list(spec.modalities),
            random_state=job.seed,
            num_threads=job.threads,
        )
    if spec.kind == "coxph":
        return CoxPHBaseline(modalities=list(spec.modalities), max_features=50)
    if spec.kind == "elasticnet":
        return ElasticNetBaseline(
            modalities=list(spec.modalities),
            max_features=LINEAR_MAX_FEATURES,
            random_state=job.seed,
        )
    if spec.kind == "coxnet":
        return CoxNetBaseline(
            modalities=list(spec.modalities),
            max_features=LINEAR_MAX_FEATURES,
            random_state=job.seed,
        )
    params = dict(job.estimator)
    return MultimodalEstimator(
        task=job.survival_head if job.task == "survival" else "binary",
        modalities=list(spec.modalities),
        fusion=spec.fusion or "concat",
        seed=job.seed,
        encoder_store=job.encoder_store,
        **params,
    )


def _predict(est: Any, cohort: Cohort, task: str) -> np.ndarray:
    if task == "survival":
        return np.asarray(est.predict_risk(cohort), dtype=np.float64)
    proba = np.asarray(est.predict_proba(cohort), dtype=np.float64)
    return proba[:, -1] if proba.ndim == 2 else proba


def run_job(job: FoldJob) -> dict[str, Any]:
    """Run one job and write its result; returns a short summary (name, fold, seconds)."""
    if job.threads:  # beside other jobs: torch, BLAS and OpenMP on this job's share
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(job.threads)
        threadpool_limits(job.threads)
    cohort = _cohort(job.cohort_path)
    train = cohort.take(job.train)
    est = make_estimator(job)
    t0 = time.perf_counter()
    est.fit(train)
    seconds = time.perf_counter() - t0
    arrays: dict[str, np.ndarray] = {"seconds": np.array(seconds)}
    settings = getattr(est, "settings_", None)
    if settings is not None:  # the auto preset's choices and warnings, as JSON text
        chosen = {"settings": settings, "warnings": list(getattr(est, "settings_warnings_", []))}
        arrays["settings"] = np.array(json.dumps(jsonable(chosen), default=str))
    if job.fold >= 0:
        arrays["train"], arrays["test"] = job.train, job.test
        arrays["pred"] = _predict(est, cohort.take(job.test), job.task)
        if job.task == "survival":  # the Breslow baseline hazard needs the training risks
            arrays["train_pred"] = _predict(est, train, job.task)
    elif job.bundle is not None and hasattr(est, "save"):
        est.save(job.bundle, overwrite=True)
    out = Path(job.out)
    with atomic_file(out) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return {"model": job.model.name, "fold": job.fold, "seconds": seconds}


def load_job_result(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def job_settings(result: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """The settings a job's estimator chose (``settings``, ``warnings``), if it recorded
    any."""
    if "settings" not in result:
        return None
    return dict(json.loads(str(result["settings"])))
