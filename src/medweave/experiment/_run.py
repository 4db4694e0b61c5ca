"""``medweave run``: cohort → folds → grid of models × folds → evaluation → report.

Everything a run produces lives in ``RUNDIR``: ``cohort/`` (the cohort the grid ran on),
``folds/<model>/fold-<k>.npz`` (each finished job, written atomically — ``--resume``
skips them), ``cache/encoders/`` (stage-1 encoders shared across the grid),
``models/<model>/`` (bundles trained on all patients), ``results.json``, ``report.html``
and ``log.txt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from medweave._atomic import atomic_file
from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.experiment._executors import execute
from medweave.experiment._jobs import (
    FoldJob,
    job_settings,
    load_job_result,
    plan_models,
    shared_artifacts,
)
from medweave.experiment._results import MAIN_METRIC, Outcomes, assemble, ceilings
from medweave.experiment._stack import STACK, fit_stack
from medweave.experiment._stratify import stratification
from medweave.experiment._study import StudyConfig, load_study
from medweave.sources.genesets import read_gmt

__all__ = ["RunResult", "make_folds", "run_study"]

log = logging.getLogger("medweave.run")


@dataclass
class RunResult:
    out: Path
    results: dict[str, Any]

    @property
    def report(self) -> Path:
        return self.out / "report.html"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def load_cohort(study: StudyConfig, base: Path) -> tuple[Cohort, Path | None]:
    """Build the study's cohort (a cohort.yaml) or load a saved one (a folder); also
    return the synthetic ground truth next to it, if any."""
    from medweave.cohort import build

    path = (base / study.cohort).resolve()
    if path.is_dir():
        cohort = Cohort.load(path)
        root = path.parent
    elif path.is_file():
        cohort = build(path)
        root = path.parent
    else:
        raise InputError(
            f"cohort: {study.cohort} not found (relative to {base}); give a cohort.yaml or a "
            "folder written by `medweave build`"
        )
    truth = root / "truth" / "patients.parquet"
    return cohort, truth if truth.is_file() else None


def check_outcomes(cohort: Cohort, task: str) -> None:
    """The outcome the task needs exists and has events, before any training starts."""
    pat = cohort.patients
    if task == "binary":
        if "outcome" not in pat.columns:
            raise InputError("task binary: the cohort has no 'outcome' column; set outcome.binary")
        y = pat["outcome"]
        if y.isna().any():
            raise InputError(f"outcome: {int(y.isna().sum())} patients have no outcome value")
        n_pos = int(y.astype(bool).sum())
        if n_pos == 0 or n_pos == len(y):
            raise InputError(
                f"outcome: all {len(y)} patients have outcome={bool(n_pos)}; a binary task "
                "needs patients with and without the event"
            )
    else:
        missing = {"time", "event"} - set(pat.columns)
        if missing:
            raise InputError(
                f"task survival: the cohort lacks {sorted(missing)}; set outcome.survival"
            )
        if int(pat["event"].astype(bool).sum()) == 0:
            raise InputError(
                f"event: none of the {len(pat)} patients has an event; survival needs events"
            )


def make_folds(cohort: Cohort, study: StudyConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-grouped, outcome-stratified k folds, or one fold per value of the split
    column; every fold's training and test parts must hold both outcome states."""
    v = study.validation
    pat = cohort.patients
    strata = (
        pat["outcome"].to_numpy(dtype=int)
        if study.task == "binary"
        else pat["event"].to_numpy(dtype=int)
    )
    rows = np.arange(cohort.n)
    if v.split_column is not None:
        if v.split_column not in pat.columns:
            raise InputError(
                f"validation.split_column: the cohort's patient table has no column "
                f"{v.split_column!r} (it has {', '.join(map(str, pat.columns))}); carry it "
                "from the index table with index.columns in cohort.yaml, e.g. "
                f"columns: [{v.split_column}]"
            )
        absent = pat[v.split_column].isna()
        if absent.any():
            raise InputError(
                f"validation.split_column {v.split_column!r}: {int(absent.sum())} patients "
                f"have no value (e.g. {pat.loc[absent, 'patient_id'].iloc[0]!r}); every "
                "patient needs a group to be held out with: fill it in the index table"
            )
        values = pat[v.split_column].astype(str).to_numpy()
        levels = sorted(set(values))
        if len(levels) < 2:
            raise InputError(
                f"validation.split_column {v.split_column!r} has one value ({levels[0]!r}); "
                "it needs at least two groups to hold out"
            )
        folds = [(rows[values != lv], rows[values == lv]) for lv in levels]
        names = [f"{v.split_column}={lv}" for lv in levels]
    else:
        cv = StratifiedGroupKFold(n_splits=v.folds, shuffle=True, random_state=v.seed)
        if np.bincount(strata).min() < v.folds:
            raise InputError(
                f"validation.folds: {v.folds} folds but only {np.bincount(strata).min()} "
                "patients in the rarer outcome class; use fewer folds"
            )
        folds = list(cv.split(rows, strata, groups=cohort.ids))
        names = [f"fold {k}" for k in range(len(folds))]
    what = "outcome" if study.task == "binary" else "event"
    for name, (train, test) in zip(names, folds, strict=True):
        for part, idx in (("training", train), ("test", test)):
            classes = set(strata[idx].tolist())
            if len(classes) < 2:
                raise InputError(
                    f"validation: {name} has only {what}={bool(classes.pop())} in its {part} "
                    "patients; every fold needs both (choose another split column or fewer folds)"
                )
    return folds


def estimator_params(study: StudyConfig, base: Path) -> dict[str, Any]:
    """The study's ``estimator`` arguments; a ``gene_sets`` GMT path is taken relative to
    the study file (like ``cohort``) and read once here — a malformed file fails before any
    training, naming its line, and the jobs receive the sets themselves, not a file to
    open."""
    params = dict(study.estimator)
    sets = params.get("gene_sets")
    if isinstance(sets, str):
        try:
            params["gene_sets"] = read_gmt((base / sets).resolve())
        except InputError as exc:
            raise InputError(f"estimator.gene_sets: {exc}") from None
    return params


def _fingerprint(study: StudyConfig, cohort: Cohort, estimator: dict[str, Any]) -> str:
    """What a resumed run must share with the first: the study, the estimator arguments as
    read (a gene-set file's contents, not only its name) and the cohort's patients."""
    h = hashlib.sha256(study.model_dump_json().encode())
    h.update(json.dumps(estimator, sort_keys=True, default=str).encode())
    h.update("\n".join(map(str, cohort.ids)).encode())
    return h.hexdigest()[:16]


def _prepare_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, expected a folder; choose another path")
    if out.is_dir() and any(out.iterdir()):
        if resume:
            if not (out / "run.json").is_file():
                raise InputError(f"--resume: {out} holds no medweave run (no run.json)")
            return
        if not overwrite:
            raise InputError(
                f"--out {out} is not empty; pass --resume to continue that run, --overwrite "
                "to replace it, or choose another folder"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _log_to(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("medweave")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def run_study(
    study: StudyConfig | str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    base_dir: str | Path | None = None,
) -> RunResult:
    """Run a study end to end; see the module docstring for what lands in ``out``."""
    if not isinstance(study, StudyConfig):
        base = Path(study).resolve().parent
        study = load_study(study)
    else:
        base = Path(base_dir or ".").resolve()
    out = Path(out)
    fresh = not out.exists() or not any(out.iterdir()) or overwrite
    _prepare_dir(out, resume=resume, overwrite=overwrite)
    handler = _log_to(out)
    try:
        return _run(study, base, out, resume=resume, quiet=quiet)
    except BaseException:
        if fresh and not (out / "run.json").is_file():
            # stopped before the run began (bad input found by the checks): leave no
            # folder that the next attempt would call a run to resume or overwrite
            handler.close()
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        logging.getLogger("medweave").removeHandler(handler)
        handler.close()


def _run(
    study: StudyConfig,
    base: Path,
    out: Path,
    *,
    resume: bool,
    quiet: bool,
) -> RunResult:
    from medweave.report import render, validate_results

    t_start = time.perf_counter()
    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    cohort_dir = out / "cohort"
    if resume and cohort_dir.is_dir():
        cohort = Cohort.load(cohort_dir)
        saved = json.loads((out / "run.json").read_text()).get("truth")
        truth = Path(saved) if saved and Path(saved).is_file() else None
    else:
        cohort, truth = load_cohort(study, base)
    modalities = list(study.modalities or cohort.modalities)
    unknown = [m for m in modalities if m not in cohort.modalities]
    if unknown:
        raise InputError(
            f"modalities: {unknown} not in the cohort (it has {list(cohort.modalities)})"
        )
    check_outcomes(cohort, study.task)
    folds = make_folds(cohort, study)
    kinds = {m: cohort.modalities[m].kind for m in modalities}
    specs = plan_models(study, modalities, kinds)
    estimator = estimator_params(study, base)
    # A wrong image_size for the cohort's images stops the run here, before any job.
    from medweave.models._prep_image import check_image_sizes

    check_image_sizes(
        cohort, modalities, estimator.get("image_size", "auto"), key="estimator.image_size"
    )
    fingerprint = _fingerprint(study, cohort, estimator)
    run_json = out / "run.json"
    if resume and run_json.is_file():
        previous = json.loads(run_json.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise InputError(
                f"--resume: {out} was run with a different study or cohort; use a new --out"
            )
    else:
        cohort.save(cohort_dir, overwrite=True)
        with atomic_file(run_json) as tmp:
            tmp.write_text(
                json.dumps(
                    {
                        "fingerprint": fingerprint,
                        "study": study.model_dump(mode="json"),
                        "truth": str(truth) if truth else None,
                    },
                    indent=2,
                )
            )
    steps["cohort"] = time.perf_counter() - t0
    log.info(
        "cohort: %d patients, modalities %s; %d folds, %d models",
        cohort.n,
        modalities,
        len(folds),
        len(specs),
    )

    jobs: list[FoldJob] = []
    store = str(out / "cache" / "encoders")
    all_rows = np.arange(cohort.n)
    # Every model on each fold, then on all patients (fold -1: the bundle the run keeps).
    parts = [
        *((k, train, test) for k, (train, test) in enumerate(folds)),
        (-1, all_rows, all_rows[:0]),
    ]
    for k, train, test in parts:
        for spec in specs:
            name = _safe(spec.name)
            jobs.append(
                FoldJob(
                    model=spec,
                    fold=k,
                    cohort_path=str(cohort_dir),
                    train=train,
                    test=test,
                    task=study.task,
                    survival_head=study.survival_head,
                    estimator=dict(estimator),
                    seed=study.seed,
                    encoder_store=store,
                    out=str(
                        out / "models" / f"{name}.done.npz"
                        if k < 0
                        else out / "folds" / name / f"fold-{k}.npz"
                    ),
                    bundle=str(out / "models" / name) if k < 0 else None,
                    shares=shared_artifacts(spec, k, estimator, kinds),
                )
            )
    pending = [j for j in jobs if not Path(j.out).is_file()]
    if resume:
        log.info("resume: %d of %d jobs already done", len(jobs) - len(pending), len(jobs))
    t0 = time.perf_counter()
    execute(
        pending,
        executor=study.executor,
        address=study.ray_address,
        workers=study.workers,
        quiet=quiet,
    )
    steps["training"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    results: dict[str, list[dict[str, np.ndarray]]] = {s.name: [] for s in specs}
    fit_seconds: dict[str, float] = {}
    chosen: dict[str, dict[str, Any]] = {}
    for job in jobs:
        res = load_job_result(job.out)
        fit_seconds[job.model.name] = fit_seconds.get(job.model.name, 0.0) + float(res["seconds"])
        if job.fold >= 0:
            results[job.model.name].append(res)
        settings = job_settings(res)
        if settings is not None:
            # the final model's settings; every fold's warnings, each said once
            entry = chosen.setdefault(job.model.name, {"settings": {}, "warnings": []})
            if job.fold < 0:
                entry["settings"] = settings["settings"]
            for w in settings["warnings"]:
                where = "all patients" if job.fold < 0 else f"fold {job.fold}"
                entry["warnings"].append(f"{where}: {w}")
    stack_info = None
    if study.models.stack:
        fitted = fit_stack(
            task=study.task,
            outcomes=Outcomes(cohort, study.task),
            results=results,
            modalities=modalities,
            n=cohort.n,
            bundle_of=lambda name: out / "models" / _safe(name),
            out=out / "models" / STACK,
        )
        if fitted is not None:
            spec, results[STACK], stack_info = fitted
            specs = [*specs, spec]
            fit_seconds[STACK] = sum(float(f["seconds"]) for f in results[STACK])
    validation = {
        "kind": "split" if study.validation.split_column else "kfold",
        "folds": len(folds),
        "seed": study.validation.seed,
        "split_column": study.validation.split_column,
    }
    doc, preds = assemble(
        study=study,
        cohort=cohort,
        specs=specs,
        results=results,
        validation=validation,
        stratification=None,
        ceiling=ceilings(cohort, Outcomes(cohort, study.task), truth),
        timing={},
    )
    for m in doc["models"]:
        if m["kind"] == STACK:
            m["stack"] = stack_info
        if m["name"] in chosen:
            m.update(chosen[m["name"]])
    steps["evaluation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    doc["stratification"] = stratification(
        study=study,
        cohort=cohort,
        models=doc["models"],
        preds=preds,
        bundles=out / "models",
        main=MAIN_METRIC[study.task],
    )
    steps["stratification"] = time.perf_counter() - t0
    steps.update({f"fit {name}": round(s, 2) for name, s in fit_seconds.items()})
    doc["timing"] = {"total_seconds": time.perf_counter() - t_start, "steps": steps}
    validate_results(doc)
    with atomic_file(out / "results.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))
    t0 = time.perf_counter()
    render(doc, out)
    log.info("report written in %.1f s: %s", time.perf_counter() - t0, out / "report.html")
    return RunResult(out=out, results=doc)
