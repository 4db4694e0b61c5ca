"""``medweave demo``: the default study on a freshly synthesised cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from medweave._atomic import atomic_file
from medweave.experiment._run import RunResult, run_study

__all__ = ["DEMO_STUDY", "run_demo"]

#: The default study, as the README shows it: every single modality, every fusion strategy,
#: every classical peer and the stack, under 3-fold cross-validation (5 folds take
#: proportionally longer; set validation.folds). The estimator's settings are left to the
#: auto preset (medweave.models._auto), which chooses them from each training cohort: on
#: this cohort exactly the settings tuned on another draw of it (benchmarks/bench_models.py,
#: bench_seeds.py, image_signal.py) — principal components for the EHR (8) and expression
#: (16) with age and sex beside them, a slower rate and at least 30 epochs, images flipped
#: at random, three networks averaged 1:1 with the cross-modal interactions GLM.
DEMO_STUDY: dict[str, Any] = {
    "name": "synthetic-copd: death within two years",
    "cohort": "cohort/cohort.yaml",
    "task": "binary",
    "modalities": ["ehr", "imaging", "omics", "environment"],
    "models": {
        "singles": True,
        "fusions": ["early", "late", "concat", "attention", "gated", "tensor"],
        "baselines": ["lightgbm", "elasticnet"],
        "stack": True,
    },
    "estimator": {},
    "validation": {"folds": 3, "seed": 0},
    "evaluation": {"n_bootstrap": 1000, "subgroups": ["sex", "age_band"]},
    "stratification": {"k": None, "risk_groups": 3},
}


def run_demo(
    out: str | Path, *, patients: int = 2000, seed: int = 0, quiet: bool = False
) -> RunResult:
    """Synthesise a cohort into ``out/cohort`` (kept if already there), write
    ``out/study.yaml`` and run it into ``out/run`` (resuming an interrupted demo)."""
    from medweave.synth import synthesize

    out = Path(out)
    cohort = out / "cohort"
    if not (cohort / "manifest.json").is_file():
        synthesize(cohort, n_patients=patients, seed=seed, overwrite=True)
    study = out / "study.yaml"
    with atomic_file(study) as tmp:
        tmp.write_text(yaml.safe_dump(DEMO_STUDY, sort_keys=False))
    run = out / "run"
    resume = (run / "run.json").is_file()
    return run_study(study, run, resume=resume, overwrite=not resume, quiet=quiet)
