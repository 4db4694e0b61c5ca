"""The grid's schedule: which jobs wait for which, and how many run side by side."""

from __future__ import annotations

import numpy as np

from medweave.experiment._executors import MAX_AUTO_WORKERS, _local_workers, job_order
from medweave.experiment._jobs import FoldJob, ModelSpec, shared_artifacts

KINDS = {"ehr": "tabular", "imaging": "image", "omics": "omics"}
SPECS = [
    ModelSpec("single:ehr", "single", ("ehr",)),
    ModelSpec("single:imaging", "single", ("imaging",)),
    ModelSpec("fusion:concat", "fusion", ("ehr", "imaging", "omics"), "concat"),
    ModelSpec("fusion:late", "fusion", ("ehr", "imaging", "omics"), "late"),
    ModelSpec("lightgbm", "lightgbm", ("ehr", "omics")),
]


def _jobs(estimator: dict, folds: tuple[int, ...] = (0, 1)) -> list[FoldJob]:
    rows = np.arange(4)
    return [
        FoldJob(
            model=spec,
            fold=k,
            cohort_path="cohort",
            train=rows,
            test=rows[:0],
            task="binary",
            estimator=estimator,
            seed=0,
            encoder_store="store",
            out=f"{spec.name}-{k}",
            shares=shared_artifacts(spec, k, estimator, KINDS),
        )
        for k in folds
        for spec in SPECS
    ]


def test_shared_artifacts_name_the_stage1_encoders_and_the_glm_of_a_fold() -> None:
    assert shared_artifacts(SPECS[0], 0, {}, KINDS) == ()
    assert shared_artifacts(SPECS[1], 0, {}, KINDS) == ("fold 0: imaging encoder",)
    assert shared_artifacts(SPECS[2], 1, {"interactions": 1}, KINDS) == (
        "fold 1: imaging encoder",
        "fold 1: GLM of ehr+imaging+omics",
    )
    both = {"pretrain": ["ehr", "imaging"]}
    assert shared_artifacts(SPECS[2], 0, both, KINDS)[:2] == (
        "fold 0: ehr encoder",
        "fold 0: imaging encoder",
    )
    assert shared_artifacts(SPECS[2], 0, {"pretrain": False, "interactions": None}, KINDS) == ()
    # the auto preset plans a GLM, so the grid shares it; the plain constants do not
    assert shared_artifacts(SPECS[2], 0, {"pretrain": False}, KINDS) == (
        "fold 0: GLM of ehr+imaging+omics",
    )
    assert shared_artifacts(SPECS[2], 0, {"pretrain": False, "preset": "none"}, KINDS) == ()
    assert shared_artifacts(SPECS[4], 0, {"interactions": 1}, KINDS) == ()


def test_a_fold_s_fusions_wait_for_the_job_that_trains_their_encoder_and_glm() -> None:
    after = job_order(_jobs({"interactions": 1}))
    # fold 0: ehr, imaging, concat, late, lightgbm; fold 1 the same from index 5.
    assert after[:5] == [set(), set(), {1}, {1, 2}, set()]
    assert after[5:] == [set(), set(), {6}, {6, 7}, set()]
    # Without the image single model, the first fusion trains the encoder for the rest.
    without = [j for j in _jobs({}) if j.model.name != "single:imaging"]
    assert job_order(without)[:4] == [set(), set(), {1}, set()]


def test_side_by_side_by_default_on_cpu_but_not_on_an_accelerator() -> None:
    jobs = _jobs({})
    assert _local_workers(jobs, 3) == 3
    assert _local_workers(jobs[:2], 3) == 2  # never more workers than jobs
    assert 1 <= _local_workers(jobs, None) <= MAX_AUTO_WORKERS
    assert _local_workers(_jobs({"accelerator": "gpu"}), 4) == 1
    assert _local_workers(_jobs({"devices": 2}), 4) == 1
