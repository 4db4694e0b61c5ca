"""Studies: a grid of models × folds on one cohort, evaluated and reported."""

from __future__ import annotations

from medweave.experiment._jobs import FoldJob, ModelSpec, plan_models, run_job
from medweave.experiment._run import RunResult, make_folds, run_study
from medweave.experiment._study import StudyConfig, load_study, parse_study

__all__ = [
    "FoldJob",
    "ModelSpec",
    "RunResult",
    "StudyConfig",
    "load_study",
    "make_folds",
    "parse_study",
    "plan_models",
    "run_job",
    "run_study",
]
