"""Assemble the synthetic cohort: draw everything, then write each modality's files."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medweave import __version__
from medweave._atomic import atomic_dir, check_output_dir
from medweave.errors import InputError
from medweave.synth import _model, environment, imaging, omics, omop
from medweave.synth._ceiling import ceilings, measured_posteriors
from medweave.synth._scenario import DEFAULT_SCENARIO, Scenario

__all__ = ["MECHANISMS", "Scenario", "SynthSummary", "synthesize"]

MECHANISMS = ("mcar", "mar", "mnar")
MIN_PATIENTS = 20
DATA_CUTOFF = np.datetime64("2025-06-30")
#: The ready-made `medweave build` config for a synthetic folder (paths relative to it).
COHORT_YAML = f"""\
# medweave build cohort.yaml --out DIR   (written by medweave synth)
name: synthetic-copd
lookback_days: {_model.LOOKBACK_DAYS}
index:
  rule: column
  table: index.parquet
  id_column: patient_id
  date_column: index_date
outcome:
  binary: {{column: outcome}}
  survival: {{time_column: time, event_column: event}}
sources:
  - name: ehr
    type: omop
    database: omop.duckdb
  - name: imaging
    type: dicom
    path: imaging
  - name: omics
    type: h5ad
    path: omics/expression.h5ad
    date_key: collection_date
  - name: environment
    type: exposures
    path: environment/exposures.parquet
    omop: omop.duckdb
    windows_days: [30, 365]
    thresholds: {{pm25: 12.0, temperature: 30.0}}
"""
# Streams are spawned in this order; a new one goes last, so the others keep their numbers.
_STREAMS = (
    "demo",
    "env",
    "latent",
    "lesion",
    "outcome",
    "missing",
    "ehr",
    "omics",
    "dates",
    "mc",
    "noise",
)


@dataclass
class SynthSummary:
    """What was written, for the CLI to print and for callers to inspect."""

    out: Path
    n_patients: int
    seed: int
    missing: float
    mechanism: str
    outcome_rate: float
    event_rate: float
    median_followup_days: float
    present: dict[str, int]
    rows: dict[str, int]
    ceiling: dict[str, dict[str, float]]
    files: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    scenario: dict[str, Any] = field(default_factory=DEFAULT_SCENARIO.to_dict)


def validate(n_patients: int, missing: float, mechanism: str) -> None:
    """Check the generator's arguments; raise :class:`InputError` with a one-line fix."""
    if n_patients < MIN_PATIENTS:
        raise InputError(
            f"--patients must be at least {MIN_PATIENTS} (got {n_patients}); "
            f"pass a positive count, e.g. --patients 2000"
        )
    if not 0.0 <= missing < 1.0:
        raise InputError(
            f"--missing must be a fraction in [0, 1) (got {missing}); "
            "it is the share of patients lacking at least one modality, e.g. --missing 0.3"
        )
    if mechanism not in MECHANISMS:
        raise InputError(
            f"--mechanism must be one of {', '.join(MECHANISMS)} (got {mechanism!r}); "
            "e.g. --mechanism mnar"
        )


def synthesize(
    out: str | os.PathLike[str],
    *,
    n_patients: int,
    seed: int,
    missing: float = 0.3,
    mechanism: str = "mnar",
    overwrite: bool = False,
    workers: int | None = None,
    scenario: Scenario | None = None,
) -> SynthSummary:
    """Write a synthetic multimodal cohort with known ground truth to the folder ``out``.

    The folder is built under a temporary name beside ``out`` and renamed at the end, so
    an interrupted run leaves nothing half-written. ``workers`` processes write the DICOM
    files (default: the number of CPU cores). ``scenario`` sets the generator's knobs
    (signal shape and strength per modality, the interaction, gene and noise-lab counts,
    the baseline hazard); none: the default cohort, unchanged.
    """
    validate(n_patients, missing, mechanism)
    scenario = scenario or DEFAULT_SCENARIO
    if not isinstance(scenario, Scenario):
        raise InputError(f"scenario: expected a medweave.synth.Scenario, got {type(scenario)}")
    out = Path(out)
    check_output_dir(out, overwrite=overwrite)
    workers = workers or os.cpu_count() or 1
    rng = dict(
        zip(
            _STREAMS,
            map(np.random.default_rng, np.random.SeedSequence(seed).spawn(len(_STREAMS))),
            strict=True,
        )
    )
    n = n_patients
    clock = _Clock()
    n_locations = int(np.clip(n // 40, 10, 200))

    # --- draw --------------------------------------------------------------------------
    demo = _model.sample_demographics(rng["demo"], n, n_locations)
    index = demo["index_date"].to_numpy().astype("datetime64[D]")
    exp_start = (_model.INDEX_START - np.timedelta64(_model.LOOKBACK_DAYS + 400, "D")).astype(
        "datetime64[Y]"
    )
    exposures = environment.simulate_exposures(
        rng["env"], n_locations, exp_start.astype("datetime64[D]"), DATA_CUTOFF
    )
    pm25_mean = exposures.window_mean_pm25(
        demo["location_idx"].to_numpy(), index, environment.PM25_WINDOW_DAYS
    )
    s_img = rng["latent"].normal(0, 1, n)
    lesions = imaging.sample_lesions(rng["lesion"], s_img)
    latents: dict[str, np.ndarray] = {
        "age_z": (demo["age"].to_numpy() - 66.0) / 9.0,
        "male": demo["male"].to_numpy().astype(float),
        "s_ehr": rng["latent"].normal(0, 1, n),
        "img": imaging.lesion_signal(lesions.area),
        "env": environment.exposure_signal(pm25_mean),
        **_model.sample_omics_latents(rng["latent"], n),
    }
    eta = _model.linear_predictor(latents, scenario)
    outcomes = _model.sample_outcomes(
        rng["outcome"],
        eta,
        index,
        max_followup=(DATA_CUTOFF - index).astype(int),
        hazard_scale=scenario.hazard_scale,
    )
    locations = environment.make_locations(rng["env"], n_locations)
    ehr = omop.simulate_ehr(
        rng["ehr"],
        demo=demo,
        locations=locations,
        s_ehr=latents["s_ehr"],
        eta=eta,
        outcomes=outcomes,
        noise_labs=scenario.noise_labs,
        noise_rng=rng["noise"],
    )
    visits = ehr.tables["visit_occurrence"]
    inpatient_before = (
        visits[
            (visits["visit_concept_id"] == 9201)
            & (
                visits["visit_start_date"]
                < visits["person_id"].map(
                    dict(zip(demo["person_id"], demo["index_date"], strict=True))
                )
            )
        ]
        .groupby("person_id")
        .size()
        .reindex(demo["person_id"], fill_value=0)
        .to_numpy()
    )
    present = _model.sample_missingness(
        rng["missing"],
        n=n,
        fraction=missing,
        mechanism=mechanism,
        eta=eta,
        mar_score=latents["age_z"] + 0.5 * np.log1p(inpatient_before),
    )
    person = ehr.tables["person"]
    person.loc[~present["environment"], "location_id"] = pd.NA
    clock.lap("draw")

    # --- write -------------------------------------------------------------------------
    with atomic_dir(out, overwrite=overwrite) as tmp:
        omop.write_duckdb(tmp / "omop.duckdb", ehr)
        clock.lap("omop")
        img_rows = np.flatnonzero(present["imaging"])
        img_patients = demo.iloc[img_rows][["patient_id", "birth_date", "male"]].assign(
            row=img_rows,
            study_date=index[img_rows]
            - rng["dates"].integers(0, 61, img_rows.size).astype("timedelta64[D]"),
        )
        dicoms = imaging.write_dicoms_parallel(
            tmp / "imaging",
            seed=seed,
            patients=img_patients,
            lesions=lesions.of(img_rows),
            workers=workers,
        )
        clock.lap("imaging")
        om_rows = np.flatnonzero(present["omics"])
        x, var, members, batch = omics.simulate_expression(
            rng["omics"], latents, om_rows, n_genes=scenario.n_genes
        )
        (tmp / "omics").mkdir()
        omics.write_h5ad(
            tmp / "omics" / "expression.h5ad",
            x=x,
            var=var,
            patient_ids=demo["patient_id"].iloc[om_rows].tolist(),
            batch=batch,
            collection_date=index[om_rows]
            - rng["dates"].integers(0, 15, om_rows.size).astype("timedelta64[D]"),
        )
        clock.lap("omics")
        (tmp / "environment").mkdir()
        n_exposure_rows = environment.write_exposures(
            tmp / "environment" / "exposures.parquet", exposures, locations["zip"].tolist()
        )
        clock.lap("environment")
        index_table = pd.DataFrame(
            {
                "person_id": demo["person_id"],
                "patient_id": demo["patient_id"],
                "index_date": pd.to_datetime(index),
                "outcome": outcomes["outcome"],
                "time": outcomes["time"],
                "event": outcomes["event"],
            }
        )
        index_table.to_parquet(tmp / "index.parquet", index=False)
        (tmp / "cohort.yaml").write_text(COHORT_YAML)
        clock.lap("index")
        # The ceilings need the written data: what the data reveal of each latent is
        # measured the way a user would read it.
        scores = _scores(
            rng["mc"],
            tmp,
            demo=demo,
            latents=latents,
            eta=eta,
            present=present,
            seed=seed,
            scenario=scenario,
        )
        ceiling = ceilings(
            outcome=outcomes["outcome"].to_numpy(),
            time=outcomes["time"].to_numpy(),
            event=outcomes["event"].to_numpy(),
            oracle=scores["true"],
            observed=scores["observed"],
            observed_latents=scores["observed_latents"],
        )
        clock.lap("ceilings")
        truth = _truth_table(demo, latents, lesions, pm25_mean, scores, present)
        (tmp / "truth").mkdir()
        truth.to_parquet(tmp / "truth" / "patients.parquet", index=False)
        _write_json(tmp / "truth" / "signal.json", _signal_description(members, scenario))
        _write_json(tmp / "truth" / "ceiling.json", ceiling)
        summary = SynthSummary(
            out=out,
            n_patients=n,
            seed=seed,
            missing=missing,
            mechanism=mechanism,
            outcome_rate=float(outcomes["outcome"].mean()),
            event_rate=float(outcomes["event"].mean()),
            median_followup_days=float(np.median(outcomes["time"])),
            present={"ehr": n, **{m: int(v.sum()) for m, v in present.items()}},
            rows={**ehr.row_counts(), "dicom_files": len(dicoms), "exposure_rows": n_exposure_rows},
            ceiling={k: ceiling[k] for k in ("oracle", "observed_latents", "observed")},
            scenario=scenario.to_dict(),
        )
        summary.files = sorted(
            str(p.relative_to(tmp))
            for p in tmp.rglob("*")
            if p.is_file() and p.parent.name != "imaging"
        )
        _write_json(tmp / "manifest.json", _manifest(summary))
        clock.lap("truth")
    summary.seconds = clock.laps
    return summary


class _Clock:
    """Wall time per stage."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 3)
        self._t = now


def _scores(
    rng: np.random.Generator,
    folder: Path,
    *,
    demo: pd.DataFrame,
    latents: dict[str, np.ndarray],
    eta: np.ndarray,
    present: dict[str, np.ndarray],
    seed: int,
    scenario: Scenario,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(event probability, risk score) per patient: the truth, and the true model averaged
    over what is unknown given the latents of the modalities present (``observed_latents``)
    or given the data written to ``folder`` (``observed``)."""
    latents_only = _model.observed_expectation(rng, latents, present, scenario=scenario)
    posteriors = measured_posteriors(
        folder, patient_ids=demo["patient_id"].tolist(), latents=latents, seed=seed
    )
    observed = _model.measured_expectation(rng, latents, present, posteriors, scenario=scenario)
    return {
        "true": (_model.event_probability(eta, hazard_scale=scenario.hazard_scale), eta),
        "observed": observed,
        "observed_latents": latents_only,
    }


def _truth_table(
    demo: pd.DataFrame,
    latents: dict[str, np.ndarray],
    lesions: imaging.LesionSet,
    pm25_mean: np.ndarray,
    scores: dict[str, tuple[np.ndarray, np.ndarray]],
    present: dict[str, np.ndarray],
) -> pd.DataFrame:
    table = pd.DataFrame({"person_id": demo["person_id"], "patient_id": demo["patient_id"]})
    for name in (
        "age_z",
        "male",
        "s_ehr",
        "img",
        "m_prolif",
        "m_inflam",
        "m_epithelial",
        "m_stromal",
        "env",
    ):
        table[name] = latents[name]
    table["subtype"] = pd.Categorical(np.array(["S1", "S2", "S3"])[latents["subtype"]])
    table["lesion_count"] = lesions.count
    table["lesion_area_px"] = lesions.area
    table["pm25_mean_365d"] = pm25_mean
    for name in ("true", "observed", "observed_latents"):
        table[f"risk_{name}"] = scores[name][1]
        table[f"p_{name}"] = scores[name][0]
    for m, mask in present.items():
        table[f"has_{m}"] = mask
    return table


def _signal_description(members: dict[str, list[str]], scenario: Scenario) -> dict[str, Any]:
    return {
        "scenario": {
            **scenario.to_dict(),
            "definitions": {
                "shapes": "applied to the modality's latents in risk_true (ehr: s_ehr; imaging: "
                "img; omics: m_prolif, m_inflam; environment: env): linear x, threshold "
                "(x > 0.5 - 0.3085) / 0.4619, u (x^2 - 1) / sqrt(2) (each mean 0, variance 1 "
                "for a standard normal x)",
                "strength": "multiplies every coefficient of the modality; the interaction's "
                "by the product of the environment and omics strengths",
                "interaction": "env_x_m_inflam on or off",
                "hazard_scale": "multiplies the Weibull baseline hazard",
                "noise_labs": "EHR measurements with no signal (concept ids above 2e9)",
            },
        },
        "outcome": {
            "binary": f"death within {_model.HORIZON_DAYS} days of the index date",
            "survival": "days from the index date to death (event) or end of follow-up",
            "horizon_days": _model.HORIZON_DAYS,
            "hazard": "Weibull proportional hazards, log hazard ratio = risk_true",
            "weibull_shape": _model.WEIBULL_SHAPE,
            "weibull_scale_days": _model.WEIBULL_SCALE_DAYS,
        },
        "risk_true": {
            "coefficients": _model.COEFFICIENTS,
            "term_modalities": {k: list(v) for k, v in _model.TERM_MODALITIES.items()},
            "interaction": "env_x_m_inflam = env * m_inflam (environment x omics)",
        },
        "modalities": {
            "ehr": {
                "latents": ["age_z", "male", "s_ehr"],
                "concepts_carrying_s_ehr": omop.EHR_SIGNAL_CONCEPTS,
                "leakage_bait": "after the index date, pneumonia, prednisone, CRP and white "
                "cells track risk_true",
            },
            "imaging": {
                "latents": ["img"],
                "definition": "img = (log1p(total lesion area in px / 20) - "
                f"{imaging.LESION_CENTER}) / {imaging.LESION_SCALE}",
            },
            "omics": {
                "latents": ["m_prolif", "m_inflam"],
                "modules": members,
                "module_latents": {k: v for k, v in omics.MODULES.items() if v},
                "subtype": "S1/S2/S3 shift m_prolif, m_epithelial and m_stromal",
            },
            "environment": {
                "latents": ["env"],
                "definition": f"env = (mean PM2.5 over the {environment.PM25_WINDOW_DAYS} days "
                f"before the index date - {environment.PM25_CENTER}) / {environment.PM25_SCALE}",
                "variables_without_signal": ["ozone", "temperature"],
            },
        },
    }


def _manifest(summary: SynthSummary) -> dict[str, Any]:
    return {
        "generator": "medweave synth",
        "medweave_version": __version__,
        "seed": summary.seed,
        "n_patients": summary.n_patients,
        "missing": summary.missing,
        "mechanism": summary.mechanism,
        "scenario": summary.scenario,
        "horizon_days": _model.HORIZON_DAYS,
        "present": summary.present,
        "rows": summary.rows,
        "files": summary.files,
    }


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
