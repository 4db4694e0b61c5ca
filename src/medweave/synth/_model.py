"""The generative model behind the synthetic cohort: who the patients are, their latent
signals, their true risk, their outcomes, which modalities they lack, and the ceilings.

Each modality carries a distinct part of the signal:

* EHR: age, sex and a latent clinical severity ``s_ehr`` that shows in labs (CRP, white
  cells, haemoglobin), inpatient stays, pneumonia, heart failure and steroid bursts;
* imaging: the total lesion area visible in the chest image (``img``);
* omics: a proliferation module (``m_prolif``, tied to the molecular subtype) and an
  inflammation module (``m_inflam``);
* environment: the patient's mean PM2.5 over the year before the index date (``env``),
  whose harm is amplified by the inflammation module (a cross-modal interaction).

The linear predictor ``eta`` drives a Weibull proportional-hazards time to death; the
binary outcome is death within ``HORIZON_DAYS`` of the index date.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medweave.synth._scenario import DEFAULT_SCENARIO, SHAPE_LATENTS, Scenario, shaped

__all__ = [
    "COEFFICIENTS",
    "HORIZON_DAYS",
    "LOOKBACK_DAYS",
    "OPTIONAL_MODALITIES",
    "event_probability",
    "linear_predictor",
    "measured_expectation",
    "observed_expectation",
    "sample_demographics",
    "sample_missingness",
    "sample_omics_latents",
    "sample_outcomes",
]

#: The binary outcome: death within this many days of the index date.
HORIZON_DAYS = 730
#: EHR history is generated over this many days before the index date.
LOOKBACK_DAYS = 3 * 365
#: Modalities a patient may lack; the EHR (which defines the cohort) is always present.
OPTIONAL_MODALITIES = ("imaging", "omics", "environment")

#: Log hazard ratios per standardised unit. Fixed: models must get better, not the data easier.
COEFFICIENTS: dict[str, float] = {
    "age_z": 0.30,  # EHR (person.year_of_birth)
    "male": 0.20,  # EHR (person.gender_concept_id)
    "s_ehr": 0.80,  # EHR (labs, visits, conditions, drugs)
    "img": 0.80,  # imaging (lesion area)
    "m_prolif": 0.70,  # omics (proliferation module)
    "m_inflam": 0.25,  # omics (inflammation module)
    "env": 0.40,  # environment (PM2.5, 365 days before index)
    "env_x_m_inflam": 0.60,  # environment x omics interaction
}
#: Which modality each term of the linear predictor belongs to.
TERM_MODALITIES: dict[str, tuple[str, ...]] = {
    "age_z": ("ehr",),
    "male": ("ehr",),
    "s_ehr": ("ehr",),
    "img": ("imaging",),
    "m_prolif": ("omics",),
    "m_inflam": ("omics",),
    "env": ("environment",),
    "env_x_m_inflam": ("environment", "omics"),
}
#: Which latent signals each optional modality reveals.
MODALITY_LATENTS: dict[str, tuple[str, ...]] = {
    "imaging": ("img",),
    "omics": ("m_prolif", "m_inflam"),
    "environment": ("env",),
}

# Weibull baseline: S0(t) = exp(-(t / SCALE) ** SHAPE).
WEIBULL_SHAPE = 1.2
WEIBULL_SCALE_DAYS = 3400.0
# Follow-up: at least the horizon, then up to FOLLOWUP_EXTRA_DAYS more (uniform).
FOLLOWUP_EXTRA_DAYS = 4 * 365
INDEX_START = np.datetime64("2016-01-01")
INDEX_END = np.datetime64("2021-12-31")


def linear_predictor(
    latents: dict[str, np.ndarray], scenario: Scenario = DEFAULT_SCENARIO
) -> np.ndarray:
    """The true log hazard ratio from the latent signals (arrays broadcast together).

    ``scenario`` shapes and scales each modality's terms (:class:`Scenario`); the default
    is today's model, computed with the very same operations (bit for bit).
    """
    c = COEFFICIENTS
    if scenario.is_default:
        return (
            c["age_z"] * latents["age_z"]
            + c["male"] * latents["male"]
            + c["s_ehr"] * latents["s_ehr"]
            + c["img"] * latents["img"]
            + c["m_prolif"] * latents["m_prolif"]
            + c["m_inflam"] * latents["m_inflam"]
            + c["env"] * latents["env"]
            + c["env_x_m_inflam"] * latents["env"] * latents["m_inflam"]
        )
    terms = [t for t, ms in TERM_MODALITIES.items() if len(ms) == 1]
    eta: np.ndarray = np.zeros(np.broadcast(*(latents[t] for t in terms)).shape)
    for term, (modality, *others) in TERM_MODALITIES.items():
        if others:  # the interaction: raw latents, both modalities' strengths
            if not scenario.interaction:
                continue
            weight = c[term] * scenario.weight(modality) * scenario.weight(others[0])
            eta = eta + weight * latents["env"] * latents["m_inflam"]
            continue
        weight = c[term] * scenario.weight(modality)
        x = latents[term]
        if term in SHAPE_LATENTS[modality]:
            x = shaped(x, scenario.shape(modality))
        eta = eta + weight * x
    return eta


def event_probability(
    eta: np.ndarray, horizon_days: float = HORIZON_DAYS, *, hazard_scale: float = 1.0
) -> np.ndarray:
    """P(death within ``horizon_days``) under the Weibull proportional-hazards model, its
    baseline hazard multiplied by ``hazard_scale``."""
    h0 = (horizon_days / WEIBULL_SCALE_DAYS) ** WEIBULL_SHAPE
    if hazard_scale != 1.0:
        h0 = h0 * hazard_scale
    return -np.expm1(-h0 * np.exp(eta))


def sample_demographics(rng: np.random.Generator, n: int, n_locations: int) -> pd.DataFrame:
    """Ids, sex, age, index date, race, ethnicity and home location for ``n`` patients."""
    width = max(6, len(str(n)))
    span = int((INDEX_END - INDEX_START).astype(int))
    index_date = INDEX_START + rng.integers(0, span + 1, n).astype("timedelta64[D]")
    age = np.clip(rng.normal(66.0, 9.0, n), 40.0, 92.0)
    birth = index_date - np.round(age * 365.25).astype("timedelta64[D]")
    male = rng.random(n) < 0.52
    race = rng.choice(np.array(["white", "black", "asian", "other"]), n, p=[0.7, 0.14, 0.08, 0.08])
    hispanic = rng.random(n) < 0.12
    return pd.DataFrame(
        {
            "person_id": np.arange(1, n + 1, dtype=np.int64),
            "patient_id": [f"P{i:0{width}d}" for i in range(1, n + 1)],
            "male": male,
            "birth_date": birth,
            "index_date": index_date,
            "age": (index_date - birth).astype(int) / 365.25,
            "race": race,
            "hispanic": hispanic,
            "location_idx": rng.integers(0, n_locations, n),
        }
    )


def sample_omics_latents(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Molecular subtype and module scores; the subtype shifts proliferation."""
    subtype = rng.choice(3, n, p=[0.40, 0.35, 0.25])
    # Mean module scores per subtype, chosen so each module is roughly N(0, 1) overall.
    prolif_mean = np.array([0.75, -0.45, -0.55])
    epith_mean = np.array([-0.5, -0.3, 1.2])
    strom_mean = np.array([-0.3, 0.9, -0.7])
    return {
        "subtype": subtype,
        "m_prolif": prolif_mean[subtype] + rng.normal(0, 0.75, n),
        "m_inflam": rng.normal(0, 1, n),
        "m_epithelial": epith_mean[subtype] + rng.normal(0, 0.7, n),
        "m_stromal": strom_mean[subtype] + rng.normal(0, 0.7, n),
    }


def sample_outcomes(
    rng: np.random.Generator,
    eta: np.ndarray,
    index_date: np.ndarray,
    *,
    max_followup: np.ndarray,
    hazard_scale: float = 1.0,
) -> pd.DataFrame:
    """Weibull time to death, follow-up of at least the horizon, and the binary outcome.

    Follow-up ends at the horizon plus a uniform extra, or at ``max_followup`` days (the
    data cut-off), whichever is first; it always covers the horizon, so the binary outcome
    is known for everyone while survival times are censored. ``hazard_scale`` multiplies
    the baseline hazard (more or fewer deaths, same relative risks).
    """
    n = len(eta)
    u = rng.random(n)
    hazard = np.exp(eta) if hazard_scale == 1.0 else hazard_scale * np.exp(eta)
    t_death = WEIBULL_SCALE_DAYS * (-np.log(u) / hazard) ** (1.0 / WEIBULL_SHAPE)
    t_death = np.maximum(np.ceil(t_death), 1.0)
    followup = HORIZON_DAYS + np.floor(rng.random(n) * FOLLOWUP_EXTRA_DAYS)
    followup = np.minimum(followup, max_followup)
    if (followup < HORIZON_DAYS).any():
        raise ValueError("follow-up shorter than the horizon: the data cut-off is too early")
    event = t_death <= followup
    time = np.where(event, t_death, followup).astype(np.int64)
    outcome = t_death <= HORIZON_DAYS
    return pd.DataFrame(
        {
            "outcome": outcome,
            "time": time,
            "event": event,
            "end_date": index_date + time.astype("timedelta64[D]"),
        }
    )


def sample_missingness(
    rng: np.random.Generator,
    *,
    n: int,
    fraction: float,
    mechanism: str,
    eta: np.ndarray,
    mar_score: np.ndarray,
) -> dict[str, np.ndarray]:
    """Choose exactly ``round(fraction * n)`` patients who lack at least one optional modality.

    ``mcar``: every patient equally likely. ``mar``: driven by ``mar_score``, a value seen in
    the EHR. ``mnar``: driven by the unobserved true risk ``eta``; sicker patients also lack
    imaging more often.
    """
    present = {m: np.ones(n, dtype=bool) for m in OPTIONAL_MODALITIES}
    k = round(fraction * n)
    if k == 0:
        return present
    drive = {"mcar": np.zeros(n), "mar": mar_score, "mnar": eta}[mechanism]
    drive = (drive - drive.mean()) / (drive.std() + 1e-12)
    weight = np.exp(1.0 * drive)
    chosen = rng.choice(n, size=k, replace=False, p=weight / weight.sum())
    base = {"imaging": 0.55, "omics": 0.45, "environment": 0.30}
    tilt = {"imaging": 0.8 if mechanism == "mnar" else 0.0, "omics": 0.0, "environment": 0.0}
    lacks = np.zeros((k, len(OPTIONAL_MODALITIES)), dtype=bool)
    todo = np.arange(k)
    while todo.size:
        for j, m in enumerate(OPTIONAL_MODALITIES):
            logit = np.log(base[m] / (1 - base[m])) + tilt[m] * drive[chosen[todo]]
            lacks[todo, j] = rng.random(todo.size) < 1 / (1 + np.exp(-logit))
        todo = todo[~lacks[todo].any(axis=1)]
    for j, m in enumerate(OPTIONAL_MODALITIES):
        present[m][chosen[lacks[:, j]]] = False
    return present


def observed_expectation(
    rng: np.random.Generator,
    latents: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    *,
    n_draws: int = 256,
    scenario: Scenario = DEFAULT_SCENARIO,
) -> tuple[np.ndarray, np.ndarray]:
    """The true model averaged over the prior of every latent whose modality is missing.

    The prior of a latent is its distribution over the whole synthetic population; latents
    revealed by one modality (the two omics modules) are drawn jointly. Returns the
    expected event probability within the horizon and the log of the expected hazard
    ratio (the risk score for the C-index).
    """
    return _expectation(_prior_draws(rng, latents, present, n_draws=n_draws), scenario)


def measured_expectation(
    rng: np.random.Generator,
    latents: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    posteriors: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    n_draws: int = 256,
    scenario: Scenario = DEFAULT_SCENARIO,
) -> tuple[np.ndarray, np.ndarray]:
    """The true model averaged over what each patient's data leave unknown about the latents.

    As :func:`observed_expectation` for the latents of missing modalities (their population
    prior); in addition, the latents in ``posteriors`` are drawn, for the patients in its
    mask, from a normal posterior: ``posteriors[names] = (mask (n,), mean (n, k), covariance
    (k, k))`` with ``k = len(names)``. Latents in neither stay at their true value (measured
    exactly). Returns the expected event probability and the log expected hazard ratio.
    """
    draws = _prior_draws(rng, latents, present, n_draws=n_draws)
    for names, (mask, mean, cov) in posteriors.items():
        rows = np.flatnonzero(mask)
        # A square root of the covariance that also takes a singular one.
        w, v = np.linalg.eigh(np.atleast_2d(cov))
        noise = rng.standard_normal((rows.size, n_draws, len(names)))
        noise = noise @ (v * np.sqrt(np.clip(w, 0.0, None))).T
        for j, name in enumerate(names):
            draws[name][rows] = mean[rows, j][:, None] + noise[:, :, j]
    return _expectation(draws, scenario)


def _prior_draws(
    rng: np.random.Generator,
    latents: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    *,
    n_draws: int,
) -> dict[str, np.ndarray]:
    """(n, n_draws) draws of every latent: the patient's own value, or for a missing
    modality, values of random patients (the population prior, modules drawn jointly)."""
    n = len(latents["s_ehr"])
    draws = {k: np.broadcast_to(v[:, None], (n, n_draws)).copy() for k, v in latents.items()}
    for modality, names in MODALITY_LATENTS.items():
        missing = ~present[modality]
        if not missing.any():
            continue
        donor = rng.integers(0, n, (int(missing.sum()), n_draws))
        for name in names:
            draws[name][missing] = latents[name][donor]
    return draws


def _expectation(draws: dict[str, np.ndarray], scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    eta = linear_predictor(draws, scenario)
    p = event_probability(eta, hazard_scale=scenario.hazard_scale).mean(axis=1)
    log_mean_hr = np.log(np.exp(eta).mean(axis=1))
    return p, log_mean_hr
