"""`medweave run` end to end on a small cohort: results.json against its schema, the
report, bundles, resuming a killed run, and the same results from every executor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medweave.cli import main
from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.experiment import RunResult, run_study
from medweave.models.baselines import CoxPHBaseline, LightGBMBaseline
from medweave.models.estimator import MultimodalEstimator
from medweave.models.stack import load_model
from medweave.report import validate_results

from .conftest import write_study

MODALITIES = ["ehr", "imaging", "environment"]
MODELS = {"singles": True, "fusions": ["concat"], "baselines": ["lightgbm"]}


@pytest.fixture(scope="module")
def finished(study_root: Path) -> RunResult:
    # Two jobs side by side in worker processes (the default on a machine with 2 cores).
    path = write_study(study_root, "small", modalities=MODALITIES, models=MODELS, workers=2)
    return run_study(path, study_root / "run-small", quiet=True)


def _estimates(results: dict) -> dict[str, float]:
    return {m["name"]: m["metrics"]["auroc"]["estimate"] for m in results["models"]}


def test_results_follow_the_schema_and_name_every_model(finished: RunResult) -> None:
    on_disk = json.loads((finished.out / "results.json").read_text())
    validate_results(on_disk)
    assert on_disk["schema_version"] == "1.0" and on_disk["task"] == "binary"
    # The neural models' settings travel with the results (the report describes them).
    assert on_disk["study"]["estimator"]["max_epochs"] == 4
    names = [m["name"] for m in on_disk["models"]]
    assert names == [
        "single:ehr", "single:imaging", "single:environment", "fusion:concat", "lightgbm",
        "stack",
    ]  # fmt: skip
    for m in on_disk["models"]:
        assert len(m["folds"]) == 2
        est = m["metrics"]["auroc"]
        assert est["ci_low"] <= est["estimate"] <= est["ci_high"]
        assert {"brier", "calibration_slope", "auprc"} <= set(m["metrics"])
    assert on_disk["best_single"].startswith("single:")
    compared = {c["model"] for c in on_disk["comparisons"]}
    assert compared == {"fusion:concat", "lightgbm", "stack"}
    # Neural models carry the settings their estimator chose, with the reasons.
    concat = next(m for m in on_disk["models"] if m["name"] == "fusion:concat")
    assert concat["settings"]["events_per_1k_parameters"]["reason"]
    assert "settings" not in on_disk["models"][4]  # LightGBM chooses nothing
    # The stack: non-negative weights over every other model, one set per fold.
    stack = on_disk["models"][-1]["stack"]
    assert stack["members"] == names[:-1] and stack["bundle"] is True
    assert all(w >= 0 for w in stack["weights"].values()) and sum(stack["weights"].values()) > 0
    assert [f["fold"] for f in stack["folds"]] == [0, 1]
    # The synthetic cohort's ceilings, scored on these patients.
    assert on_disk["ceiling"]["observed"]["auroc"] <= on_disk["ceiling"]["oracle"]["auroc"]
    strat = on_disk["stratification"]
    assert strat["model"] == "fusion:concat"
    assert strat["risk_groups"]["k"] == 3 and strat["risk_groups"]["logrank"] is not None
    assert strat["clusters"] is not None and strat["clusters"]["k"] >= 2
    variables = {s["variable"] for s in on_disk["models"][0]["subgroups"]}
    assert variables == {"sex", "age_band"}


def test_run_folder_holds_report_log_and_reloadable_bundles(finished: RunResult) -> None:
    out = finished.out
    assert finished.report.is_file() and finished.report.stat().st_size > 10_000
    assert "single:imaging" in (out / "log.txt").read_text()
    est = MultimodalEstimator.load(out / "models" / "fusion_concat")
    assert est.modalities_ == MODALITIES
    assert LightGBMBaseline.load(out / "models" / "lightgbm").modalities_ == ["ehr", "environment"]
    # The image encoder was trained once per fold and reused by the fusion model.
    assert len(list((out / "cache" / "encoders").glob("*.safetensors"))) == 3
    assert not list(out.rglob("*.tmp-*"))  # nothing half-written
    # The stack's bundle combines the members' final models (JSON only, members beside it).
    stack = load_model(out / "models" / "stack")
    cohort = Cohort.load(out / "cohort")
    p = stack.predict_proba(cohort)[:, 1]
    assert p.shape == (cohort.n,) and np.all((p > 0) & (p < 1))
    assert sorted(x.name for x in (out / "models" / "stack").iterdir()) == ["bundle.json"]


def test_refuses_to_overwrite_without_flag(
    finished: RunResult, study_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = study_root / "small.yaml"
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--out", str(finished.out), "--quiet"])
    assert exc.value.code == 2
    assert "pass --resume" in capsys.readouterr().err


def test_killed_run_resumes_without_redoing_finished_folds(
    finished: RunResult, study_root: Path
) -> None:
    path = study_root / "small.yaml"
    out = study_root / "run-killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medweave.cli", "run", str(path), "--out", str(out), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = out / "folds" / "single_ehr" / "fold-0.npz"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.exists(), "the run did not finish its first job"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    done_before = {p: p.stat().st_mtime_ns for p in (out / "folds").rglob("*.npz")}
    resumed = run_study(path, out, resume=True, quiet=True)
    for p, mtime in done_before.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was redone"
    assert _estimates(resumed.results) == _estimates(finished.results)


@pytest.mark.parametrize(
    "executor", [{"workers": 1}, {"executor": "ray"}], ids=["in-process", "ray"]
)
def test_every_executor_gives_the_same_results(
    finished: RunResult, study_root: Path, executor: dict[str, Any]
) -> None:
    name = "small-" + "-".join(map(str, executor.values()))
    path = write_study(study_root, name, modalities=MODALITIES, models=MODELS, **executor)
    other = run_study(path, study_root / f"run-{name}", quiet=True)
    a, b = _estimates(other.results), _estimates(finished.results)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == pytest.approx(b[name], abs=1e-6), name


def test_survival_study_end_to_end(study_root: Path) -> None:
    path = write_study(
        study_root,
        "small-survival",
        task="survival",
        modalities=["ehr", "environment"],
        models={"singles": True, "fusions": ["late"], "baselines": ["coxph"]},
    )
    run = run_study(path, study_root / "run-survival", quiet=True)
    res = run.results
    validate_results(json.loads((run.out / "results.json").read_text()))
    assert res["task"] == "survival"
    follow_up = run_cohort_times(study_root)
    assert res["cohort"]["tau"] == pytest.approx(np.quantile(follow_up, 0.8))
    names = [m["name"] for m in res["models"]]
    assert names == ["single:ehr", "single:environment", "fusion:late", "coxph", "stack"]
    for m in res["models"]:
        metrics = m["metrics"]
        assert {"c_harrell", "c_uno", "td_auc", "ibs"} <= set(metrics)
        assert 0.5 < metrics["c_harrell"]["estimate"] < 1.0, m["name"]
        assert m["curves"]["td_auc"]["times"]
    assert res["ceiling"]["observed"]["c_harrell"] <= res["ceiling"]["oracle"]["c_harrell"]
    assert res["stratification"]["risk_groups"]["logrank"]["p_value"] < 0.05
    assert run.report.is_file()
    assert CoxPHBaseline.load(run.out / "models" / "coxph").columns_
    # the survival stack: fold-stratified Cox weights; its bundle predicts log-risks
    stack = res["models"][-1]["stack"]
    assert stack["members"] == names[:-1] and sum(stack["weights"].values()) > 0
    risk = load_model(run.out / "models" / "stack").predict_risk(Cohort.load(run.out / "cohort"))
    assert np.all(np.isfinite(risk)) and np.std(risk) > 0


def test_survival_study_with_a_discrete_hazard_head(study_root: Path) -> None:
    path = write_study(
        study_root,
        "small-hazard",
        task="survival",
        survival_head="discrete_hazard",
        modalities=["ehr", "environment"],
        models={"singles": False, "fusions": ["late"], "baselines": [], "stack": False},
    )
    run = run_study(path, study_root / "run-hazard", quiet=True)
    (model,) = run.results["models"]
    assert 0.5 < model["metrics"]["c_harrell"]["estimate"] < 1.0  # 240 patients, 4 epochs
    bundle = MultimodalEstimator.load(run.out / "models" / "fusion_late")
    assert bundle.task == "discrete_hazard"


def test_study_with_an_event_sequence_modality(study_root: Path) -> None:
    """An EHR source with ``form: sequence`` beside the features: built, trained (GRU),
    evaluated, stratified and reported like any other modality."""
    import yaml

    cohort = study_root / "cohort"
    config = yaml.safe_load((cohort / "cohort.yaml").read_text())
    config["sources"].append(
        {"name": "ehr_seq", "type": "omop", "database": "omop.duckdb", "form": "sequence"}
    )
    (cohort / "cohort-seq.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    path = write_study(
        study_root,
        "small-seq",
        cohort="cohort/cohort-seq.yaml",
        modalities=["ehr_seq", "environment"],
        models={"singles": True, "fusions": ["late"], "baselines": []},
    )
    run = run_study(path, study_root / "run-seq", quiet=True)
    validate_results(json.loads((run.out / "results.json").read_text()))
    names = [m["name"] for m in run.results["models"]]
    assert names == ["single:ehr_seq", "single:environment", "fusion:late", "stack"]
    assert run.report.is_file()
    est = MultimodalEstimator.load(run.out / "models" / "fusion_late")
    assert est.encoder_configs_["ehr_seq"]["name"] == "gru"


def test_log_scaled_expression_trains_instead_of_ending_the_run(study_root: Path) -> None:
    """Log2 expression (negative values) is detected as such at the build and the models
    skip log1p, where the run used to stop with exit code 1."""
    import anndata as ad
    import yaml

    cohort = study_root / "cohort"
    adata = ad.read_h5ad(cohort / "omics" / "expression.h5ad")
    adata.X = np.log2(np.asarray(adata.X, dtype=np.float64) + 0.01).astype(np.float32)
    assert (adata.X < 0).any()
    adata.write_h5ad(cohort / "omics" / "expression-log2.h5ad")
    config = yaml.safe_load((cohort / "cohort.yaml").read_text())
    for src in config["sources"]:
        if src["name"] == "omics":
            src["path"] = "omics/expression-log2.h5ad"
    (cohort / "cohort-log2.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    path = write_study(
        study_root,
        "small-log2",
        cohort="cohort/cohort-log2.yaml",
        modalities=["omics"],
        models={"singles": True, "fusions": [], "baselines": []},
        estimator={"preset": "none", "max_epochs": 2, "patience": 1, "omics_top_genes": 50},
        workers=1,
    )
    run = run_study(path, study_root / "run-log2", quiet=True)
    assert [m["name"] for m in run.results["models"]] == ["single:omics"]
    est = MultimodalEstimator.load(run.out / "models" / "single_omics")
    assert est.preps_["omics"].config == {"expression_scale": "log", "log1p": False}


def test_a_study_of_classical_peers_only(study_root: Path) -> None:
    """No neural model: the elastic-net and LightGBM peers are evaluated and reported, and
    the stratification (which needs a fused representation) is said to be absent."""
    path = write_study(
        study_root,
        "small-peers",
        models={"singles": False, "fusions": [], "baselines": ["lightgbm", "elasticnet"]},
        workers=1,
    )
    run = run_study(path, study_root / "run-peers", quiet=True)
    validate_results(json.loads((run.out / "results.json").read_text()))
    assert [m["kind"] for m in run.results["models"]] == ["lightgbm", "elasticnet", "stack"]
    assert run.results["stratification"] is None
    assert "No stratification is in the results." in run.report.read_text()


def test_an_image_size_of_the_wrong_dimensionality_stops_the_run_before_any_job(
    study_root: Path,
) -> None:
    path = write_study(
        study_root,
        "small-3d-size",
        modalities=["imaging"],
        models={"singles": True, "fusions": [], "baselines": []},
        estimator={"max_epochs": 1, "image_size": [16, 16, 16]},
        workers=1,
    )
    out = study_root / "run-3d-size"
    with pytest.raises(InputError, match=r"^estimator.image_size=\[16, 16, 16\] has 3 values"):
        run_study(path, out, quiet=True)
    # stopped before the run began: no folder left that a retry would have to --overwrite
    assert not out.exists()


def test_bad_input_found_in_a_worker_is_the_same_one_line_error(study_root: Path) -> None:
    path = write_study(
        study_root,
        "small-bad",
        modalities=MODALITIES,
        models={"singles": True, "fusions": [], "baselines": []},
        estimator={"max_epochs": 2, "pretrain": ["imagery"]},
        workers=2,
    )
    with pytest.raises(InputError, match=r"^pretrain: \['imagery'\] not among the cohort's"):
        run_study(path, study_root / "run-bad", quiet=True)


def test_comparison_table_fits_80_columns_and_names_every_model(
    finished: RunResult, capsys: pytest.CaptureFixture[str]
) -> None:
    from rich.console import Console

    from medweave import cli

    original = cli.console
    cli.console = Console(width=80, force_terminal=False)
    try:
        cli.print_results(finished.results, quiet=False)
    finally:
        cli.console = original
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    assert {m["name"] for m in finished.results["models"]} <= set(rows)
    assert "all 3" in rows["fusion:concat"]  # the study's every modality, not a long list
    assert "ceiling (observed)" in rows
    assert "vs best: difference from the best single modality" in out


def run_cohort_times(study_root: Path) -> np.ndarray:
    """The synthetic cohort's follow-up times (days), as the study reads them."""
    import pandas as pd

    index = pd.read_parquet(study_root / "cohort" / "index.parquet")
    return index["time"].to_numpy(dtype=float)
