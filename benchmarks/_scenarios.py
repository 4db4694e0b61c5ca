"""The synthetic scenarios of the many-cohort benchmark (``bench_cohorts.py``).

Each is one draw of the generator with some knobs turned (:class:`medweave.synth.Scenario`):
the signal's shape and strength per modality, the cross-modal interaction, feature counts,
the number of events, and missingness. Each is scored against its own ceiling (the true
model averaged over what each patient's data leave unknown), so a scenario that is harder
for the data is not counted against the models. At most 2,000 patients each (3 folds): on
2 cores one 2,000-patient default study takes about 5 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medweave.synth import Scenario

__all__ = ["SCENARIOS", "SyntheticScenario", "quick_patients"]


@dataclass(frozen=True)
class SyntheticScenario:
    """One synthetic cohort of the benchmark and the task it is scored on."""

    name: str
    what: str  # one line for BENCHMARKS.md: which knob, and what it tests
    task: Literal["binary", "survival"] = "binary"
    patients: int = 2000
    seed: int = 1
    missing: float = 0.3
    mechanism: str = "mnar"
    knobs: Scenario = field(default_factory=Scenario)


SCENARIOS: dict[str, SyntheticScenario] = {
    s.name: s
    for s in (
        SyntheticScenario(
            "baseline",
            "the demo's cohort: every signal linear, the interaction on, 30% mnar missing",
        ),
        SyntheticScenario(
            "baseline-survival",
            "the same draw scored by Harrell's C (about 800 events)",
            task="survival",
        ),
        SyntheticScenario(
            "small",
            "400 patients, baseline hazard x0.35: about 60 deaths within the horizon",
            patients=400,
            knobs=Scenario(hazard_scale=0.35),
        ),
        SyntheticScenario(
            "few-events-survival",
            "500 patients, baseline hazard x0.07: about 50 events",
            task="survival",
            patients=500,
            knobs=Scenario(hazard_scale=0.07),
        ),
        SyntheticScenario(
            "threshold-ehr",
            "EHR severity acts as a step (risk jumps above +0.5 SD, flat on either side)",
            knobs=Scenario(shapes={"ehr": "threshold"}),
        ),
        SyntheticScenario(
            "u-environment",
            "PM2.5 is U-shaped: both low and high exposure raise the risk",
            knobs=Scenario(shapes={"environment": "u"}),
        ),
        SyntheticScenario(
            "silent-imaging",
            "the images carry no signal: fusion must not lose by listening to them",
            knobs=Scenario(strength={"imaging": 0.0}),
        ),
        SyntheticScenario(
            "no-interaction",
            "no environment x omics term: every signal additive",
            knobs=Scenario(interaction=False),
        ),
        SyntheticScenario(
            "genes-2000",
            "2,000 genes instead of 1,200 (the modules the same size)",
            knobs=Scenario(n_genes=2000),
        ),
        SyntheticScenario(
            "genes-40-ehr-noise",
            "40 genes (four per module) and 30 EHR labs with no signal (about 210 features)",
            knobs=Scenario(n_genes=40, noise_labs=30),
        ),
        SyntheticScenario(
            "mnar-60",
            "60% of patients lack a modality, the sicker more often (mnar)",
            missing=0.6,
        ),
        SyntheticScenario(
            "complete",
            "every patient has every modality (mcar 0%)",
            missing=0.0,
            mechanism="mcar",
        ),
    )
}


def quick_patients(patients: int) -> int:
    """Patients of a scenario under ``--quick`` (a smoke test): a fifth, at least 300."""
    return min(patients, max(300, patients // 5))
