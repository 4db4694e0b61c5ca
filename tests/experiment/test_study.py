"""study.yaml validation and the plan of models: clear errors before any training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medweave.cli import main
from medweave.errors import InputError
from medweave.experiment import FoldJob, ModelSpec, load_study, make_folds, parse_study, plan_models
from medweave.experiment._jobs import make_estimator, shared_artifacts
from medweave.experiment._run import check_outcomes, estimator_params

from .conftest import FAST_STUDY


def test_unknown_key_names_file_and_suggests(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("name: x\ncohort: c.yaml\nvalidaton: {folds: 3}\n")
    with pytest.raises(InputError, match=r"study.yaml: validaton: unknown key; did you mean"):
        load_study(path)


def test_unknown_fusion_is_named() -> None:
    with pytest.raises(InputError, match="atention"):
        parse_study({**FAST_STUDY, "models": {"fusions": ["atention"]}})


def test_survival_baseline_on_binary_task_is_refused() -> None:
    with pytest.raises(InputError, match="coxph is a survival baseline"):
        parse_study({**FAST_STUDY, "models": {"baselines": ["coxph"]}})


def test_survival_head_on_binary_task_is_refused() -> None:
    with pytest.raises(InputError, match="survival_head: applies to task: survival only"):
        parse_study({**FAST_STUDY, "survival_head": "discrete_hazard"})
    with pytest.raises(InputError, match="survival_head"):
        parse_study({**FAST_STUDY, "task": "survival", "survival_head": "weibull"})


def test_plan_lists_singles_first_then_fusions_subsets_baselines() -> None:
    study = parse_study(
        {**FAST_STUDY, "models": {"fusions": ["late"], "subsets": True, "baselines": ["lightgbm"]}}
    )
    kinds = {"ehr": "tabular", "imaging": "image", "omics": "omics"}
    names = [m.name for m in plan_models(study, list(kinds), kinds)]
    assert names == [
        "single:ehr", "single:imaging", "single:omics", "fusion:late",
        "subset:ehr+imaging", "subset:ehr+omics", "subset:imaging+omics", "lightgbm",
    ]  # fmt: skip
    lgbm = plan_models(study, list(kinds), kinds)[-1]
    assert lgbm.modalities == ("ehr", "omics")  # images need an encoder


def test_folds_are_stratified_and_cover_every_patient(built_cohort) -> None:
    study = parse_study({**FAST_STUDY, "validation": {"folds": 4, "seed": 1}})
    folds = make_folds(built_cohort, study)
    tests = np.concatenate([t for _, t in folds])
    assert sorted(tests) == list(range(built_cohort.n))
    y = built_cohort.patients["outcome"].to_numpy()
    rates = [y[t].mean() for _, t in folds]
    assert max(rates) - min(rates) < 0.03
    for train, test in folds:
        assert not set(train) & set(test)


def test_split_column_with_one_class_in_a_fold_is_refused(built_cohort) -> None:
    cohort = built_cohort.take(np.arange(built_cohort.n))
    y = cohort.patients["outcome"].to_numpy()
    # Site B holds only patients without the event.
    cohort.patients["site"] = np.where(y, "A", np.where(np.arange(cohort.n) % 2, "A", "B"))
    study = parse_study({**FAST_STUDY, "validation": {"split_column": "site"}})
    with pytest.raises(
        InputError, match=r"validation: site=A has only outcome=False in its training patients"
    ):
        make_folds(cohort, study)
    study = parse_study({**FAST_STUDY, "validation": {"split_column": "centre"}})
    with pytest.raises(InputError, match="no column 'centre'"):
        make_folds(cohort, study)


def test_outcome_without_events_is_refused(built_cohort) -> None:
    cohort = built_cohort.take(np.arange(built_cohort.n))
    cohort.patients["outcome"] = False
    with pytest.raises(InputError, match="all 800 patients have outcome=False"):
        check_outcomes(cohort, "binary")
    cohort.patients["event"] = False
    with pytest.raises(InputError, match="none of the 800 patients has an event"):
        check_outcomes(cohort, "survival")


def test_cli_bad_study_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("name: x\ncohort: missing.yaml\n")
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "missing.yaml not found" in err and "\n" not in err


def test_estimator_takes_imputation_and_a_gene_set_file_beside_the_study(tmp_path: Path) -> None:
    (tmp_path / "sets.gmt").write_text("m1\tdesc\tG1\tG2\n")
    extra = {"impute": True, "impute_weight": 0.5, "gene_sets": "sets.gmt"}
    study = parse_study({**FAST_STUDY, "estimator": {**FAST_STUDY["estimator"], **extra}})
    params = estimator_params(study, tmp_path)
    assert params["gene_sets"] == {"m1": ["G1", "G2"]}  # read here, not by every job
    job = FoldJob(
        model=ModelSpec(
            name="fusion:late", kind="fusion", modalities=("ehr", "omics"), fusion="late"
        ),
        fold=0,
        cohort_path="",
        train=np.arange(3),
        test=np.arange(0),
        task="binary",
        estimator=params,
        seed=0,
        encoder_store="",
        out="",
    )
    est = make_estimator(job)
    assert (est.impute, est.impute_weight, est.gene_sets) == (True, 0.5, params["gene_sets"])
    (tmp_path / "bad.gmt").write_text("m1 G1 G2\n")
    bad = parse_study({**FAST_STUDY, "estimator": {"gene_sets": "bad.gmt"}})
    with pytest.raises(InputError, match=r"^estimator\.gene_sets: .*bad\.gmt, line 1: 1 tab"):
        estimator_params(bad, tmp_path)


def test_baselines_must_fit_the_task() -> None:
    with pytest.raises(InputError, match="coxnet is a survival baseline; for task: binary use"):
        parse_study({**FAST_STUDY, "models": {"baselines": ["elasticnet", "coxnet"]}})
    with pytest.raises(
        InputError, match="elasticnet is a binary baseline; for task: survival use coxph or coxnet"
    ):
        parse_study({**FAST_STUDY, "task": "survival", "models": {"baselines": ["elasticnet"]}})
    with pytest.raises(InputError, match="listed twice"):
        parse_study({**FAST_STUDY, "models": {"baselines": ["elasticnet", "elasticnet"]}})
    with pytest.raises(InputError, match="baselines"):
        parse_study({**FAST_STUDY, "models": {"baselines": ["glmnet"]}})


@pytest.mark.parametrize(
    ("task", "baselines", "classes"),
    [
        ("binary", ["lightgbm", "elasticnet"], ["LightGBMBaseline", "ElasticNetBaseline"]),
        ("survival", ["coxph", "coxnet"], ["CoxPHBaseline", "CoxNetBaseline"]),
    ],
)
def test_the_linear_peers_are_planned_and_built_like_the_other_baselines(
    task: str, baselines: list[str], classes: list[str]
) -> None:
    study = parse_study({**FAST_STUDY, "task": task, "models": {"baselines": baselines}})
    kinds = {"ehr": "tabular", "imaging": "image", "omics": "omics"}
    specs = plan_models(study, list(kinds), kinds)[-2:]
    assert [(s.name, s.kind, s.modalities) for s in specs] == [
        (b, b, ("ehr", "omics")) for b in baselines
    ]
    for spec, cls in zip(specs, classes, strict=True):
        assert shared_artifacts(spec, 0, {"interactions": True}, kinds) == ()
        job = FoldJob(
            model=spec,
            fold=0,
            cohort_path="",
            train=np.arange(3),
            test=np.arange(0),
            task=task,
            estimator={},
            seed=5,
            encoder_store="",
            out="",
        )
        est = make_estimator(job)
        assert type(est).__name__ == cls and est.modalities == ["ehr", "omics"]
        if cls in ("ElasticNetBaseline", "CoxNetBaseline"):
            assert (est.random_state, est.max_features) == (5, 2000)
