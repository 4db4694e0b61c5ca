"""``study.yaml``: which cohort, which task, which models, how they are validated.

YAML keys are constructor arguments; errors name the file and the key::

    name: copd-mortality
    cohort: cohort.yaml          # a cohort.yaml (built here) or a folder written by Cohort.save
    task: binary                 # binary (outcome column) or survival (time, event)
    survival_head: cox           # survival: cox (partial likelihood) or discrete_hazard
    modalities: [ehr, imaging, omics, environment]
    models:
      singles: true              # each modality alone, same encoder
      fusions: [early, late, concat, attention, gated, tensor]
      subsets: false             # every subset of two or more modalities (first fusion)
      baselines: [lightgbm]      # binary: lightgbm, elasticnet; survival: coxph, coxnet,
                                 # lightgbm (boosting the Cox partial likelihood)
                                 # (default: every peer of the task)
      stack: true                # a super learner of every model's out-of-fold predictions
    estimator: {}                # MultimodalEstimator arguments shared by every model; left
                                 # out, a setting is chosen from the cohort (auto preset);
                                 # e.g. impute: true, gene_sets: h.all.gmt (beside this file)
    validation: {folds: 5, seed: 0}          # or {split_column: site}
    evaluation: {n_bootstrap: 1000, subgroups: [sex, age_band]}
    stratification: {k: null, risk_groups: 3}
    executor: local              # or ray (ray_address: auto | host:port)
    workers: null                # local: jobs side by side, each in its own process on
                                 # cores/workers cores (null: one per core, at most 8)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from medweave.config import _Strict, read_yaml_mapping, validate_model
from medweave.errors import InputError

__all__ = ["ModelsSpec", "StudyConfig", "load_study", "parse_study"]

FUSION_DEFAULT = ["early", "late", "concat", "attention", "gated", "tensor"]
#: the classical peers per task (``models/baselines.py``); for survival, ``lightgbm`` boosts
#: the Cox partial likelihood (gradient-boosted survival)
Baseline = Literal["lightgbm", "elasticnet", "coxph", "coxnet"]
BINARY_BASELINES: tuple[Baseline, ...] = ("lightgbm", "elasticnet")
SURVIVAL_BASELINES: tuple[Baseline, ...] = ("coxph", "coxnet", "lightgbm")


class ModelsSpec(_Strict):
    """Which models the study compares."""

    singles: bool = True
    fusions: list[str] = Field(default_factory=lambda: list(FUSION_DEFAULT))
    subsets: bool = False
    #: binary: ``lightgbm``, ``elasticnet``; survival: ``coxph``, ``coxnet``, ``lightgbm``
    #: (gradient boosting of the Cox partial likelihood). Not given:
    #: every classical peer of the task (a reviewer asks for them, and the stack uses them).
    baselines: list[Baseline] | None = None
    #: A super learner over every other model's out-of-fold predictions
    #: (``experiment/_stack.py``), reported as a model of its own.
    stack: bool = True


class Validation(_Strict):
    """Patient-grouped, outcome-stratified k-fold cross-validation, or a split column:
    each distinct value of ``split_column`` (a column of the cohort's patient table, e.g. a
    site) is held out in turn, training on the others (external validation)."""

    folds: int = Field(default=5, ge=2, le=50)
    seed: int = 0
    split_column: str | None = None


class Evaluation(_Strict):
    n_bootstrap: int = Field(default=1000, ge=0, le=100_000)
    level: float = Field(default=0.95, gt=0.5, lt=1.0)
    #: ``sex`` and ``age_band`` (from the EHR block's ``sex_male`` / ``age_at_index``) or
    #: any column of the cohort's patient table.
    subgroups: list[str] = Field(default_factory=lambda: ["sex", "age_band"])
    min_subgroup: int = Field(default=30, ge=1)


class Stratification(_Strict):
    #: Number of clusters of the fused representation; null chooses it by silhouette.
    k: int | None = Field(default=None, ge=2, le=20)
    k_range: tuple[int, int] = (2, 6)
    risk_groups: int = Field(default=3, ge=2, le=10)


class StudyConfig(_Strict):
    name: str = Field(min_length=1)
    cohort: str
    task: Literal["binary", "survival"] = "binary"
    #: The neural models' survival head: Cox partial likelihood or a discrete-time hazard.
    survival_head: Literal["cox", "discrete_hazard"] = "cox"
    modalities: list[str] | None = None
    models: ModelsSpec = Field(default_factory=ModelsSpec)
    estimator: dict[str, Any] = Field(default_factory=dict)
    validation: Validation = Field(default_factory=Validation)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    stratification: Stratification = Field(default_factory=Stratification)
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    #: ``executor: local``: jobs run side by side in this many processes (None: one per
    #: core, at most 8; 1: one after the other in this process, on every core).
    workers: int | None = Field(default=None, ge=1, le=256)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        if self.modalities is not None and len(set(self.modalities)) != len(self.modalities):
            raise ValueError("modalities: a modality is listed twice")
        for key in ("task", "modalities", "seed"):
            if key in self.estimator:
                raise ValueError(
                    f"estimator.{key}: set by the study (top-level {key!r}), not per estimator"
                )
        if self.task == "binary" and "survival_head" in self.model_fields_set:
            raise ValueError("survival_head: applies to task: survival only; remove it")
        fits = BINARY_BASELINES if self.task == "binary" else SURVIVAL_BASELINES
        baselines = self.models.baselines
        if baselines is None:
            # frozen model: the filled-in default is a copy of the models section
            baselines = list(fits)
            models = self.models.model_copy(update={"baselines": baselines})
            object.__setattr__(self, "models", models)
        for name in baselines:
            if name not in fits:
                other = "binary" if self.task == "survival" else "survival"
                raise ValueError(
                    f"models.baselines: {name} is a {other} baseline; for task: {self.task} "
                    f"use {' or '.join(fits)}"
                )
        if len(set(baselines)) != len(baselines):
            raise ValueError("models.baselines: a baseline is listed twice")
        return self


def parse_study(raw: dict[str, Any], *, where: str = "study.yaml") -> StudyConfig:
    """Validate a study mapping; errors name ``where`` and the key."""
    from medweave.models.fusion import FUSIONS

    study = validate_model(StudyConfig, raw, where="")
    for name in study.models.fusions:
        try:
            FUSIONS.get(name)
        except InputError as exc:
            raise InputError(f"{where}: models.fusions: {exc}") from None
    return study


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate ``study.yaml``."""
    p = Path(path)
    raw = read_yaml_mapping(p, what="study.yaml", keys="name, cohort, task, models, ...")
    try:
        return parse_study(raw, where=p.name)
    except InputError as exc:
        msg = str(exc)
        raise InputError(msg if msg.startswith(p.name) else f"{p.name}: {msg}") from None
