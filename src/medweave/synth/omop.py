"""The synthetic EHR as an OMOP CDM 5.4 database in DuckDB.

Every patient is a person with chronic obstructive lung disease first diagnosed at the
index date. Before it: outpatient, inpatient and emergency visits over three years, with
comorbidities, prescriptions, labs and vitals. The latent clinical severity ``s_ehr``
raises CRP and white cells, lowers haemoglobin, and brings more inpatient stays,
pneumonia, heart failure and steroid bursts. After the index date the records go on
(follow-up visits, labs that track the true risk, death), so a feature extractor that
does not stop at the index date leaks the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from medweave.synth._model import LOOKBACK_DAYS
from medweave.synth.concepts import RACE_CONCEPTS, concept_table

__all__ = ["CDM_TABLES", "EhrTables", "simulate_ehr", "write_duckdb"]

EHR_TYPE = 32817
COPD = 255573

#: OMOP CDM 5.4 columns of the tables written (name, DuckDB type).
CDM_TABLES: dict[str, list[tuple[str, str]]] = {
    "person": [
        ("person_id", "BIGINT"),
        ("gender_concept_id", "INTEGER"),
        ("year_of_birth", "INTEGER"),
        ("month_of_birth", "INTEGER"),
        ("day_of_birth", "INTEGER"),
        ("birth_datetime", "TIMESTAMP"),
        ("race_concept_id", "INTEGER"),
        ("ethnicity_concept_id", "INTEGER"),
        ("location_id", "BIGINT"),
        ("provider_id", "BIGINT"),
        ("care_site_id", "BIGINT"),
        ("person_source_value", "VARCHAR"),
        ("gender_source_value", "VARCHAR"),
        ("gender_source_concept_id", "INTEGER"),
        ("race_source_value", "VARCHAR"),
        ("race_source_concept_id", "INTEGER"),
        ("ethnicity_source_value", "VARCHAR"),
        ("ethnicity_source_concept_id", "INTEGER"),
    ],
    "location": [
        ("location_id", "BIGINT"),
        ("address_1", "VARCHAR"),
        ("address_2", "VARCHAR"),
        ("city", "VARCHAR"),
        ("state", "VARCHAR"),
        ("zip", "VARCHAR"),
        ("county", "VARCHAR"),
        ("location_source_value", "VARCHAR"),
        ("country_concept_id", "INTEGER"),
        ("country_source_value", "VARCHAR"),
        ("latitude", "DOUBLE"),
        ("longitude", "DOUBLE"),
    ],
    "observation_period": [
        ("observation_period_id", "BIGINT"),
        ("person_id", "BIGINT"),
        ("observation_period_start_date", "DATE"),
        ("observation_period_end_date", "DATE"),
        ("period_type_concept_id", "INTEGER"),
    ],
    "visit_occurrence": [
        ("visit_occurrence_id", "BIGINT"),
        ("person_id", "BIGINT"),
        ("visit_concept_id", "INTEGER"),
        ("visit_start_date", "DATE"),
        ("visit_start_datetime", "TIMESTAMP"),
        ("visit_end_date", "DATE"),
        ("visit_end_datetime", "TIMESTAMP"),
        ("visit_type_concept_id", "INTEGER"),
        ("provider_id", "BIGINT"),
        ("care_site_id", "BIGINT"),
        ("visit_source_value", "VARCHAR"),
        ("visit_source_concept_id", "INTEGER"),
        ("admitted_from_concept_id", "INTEGER"),
        ("admitted_from_source_value", "VARCHAR"),
        ("discharged_to_concept_id", "INTEGER"),
        ("discharged_to_source_value", "VARCHAR"),
        ("preceding_visit_occurrence_id", "BIGINT"),
    ],
    "condition_occurrence": [
        ("condition_occurrence_id", "BIGINT"),
        ("person_id", "BIGINT"),
        ("condition_concept_id", "INTEGER"),
        ("condition_start_date", "DATE"),
        ("condition_start_datetime", "TIMESTAMP"),
        ("condition_end_date", "DATE"),
        ("condition_end_datetime", "TIMESTAMP"),
        ("condition_type_concept_id", "INTEGER"),
        ("condition_status_concept_id", "INTEGER"),
        ("stop_reason", "VARCHAR"),
        ("provider_id", "BIGINT"),
        ("visit_occurrence_id", "BIGINT"),
        ("visit_detail_id", "BIGINT"),
        ("condition_source_value", "VARCHAR"),
        ("condition_source_concept_id", "INTEGER"),
        ("condition_status_source_value", "VARCHAR"),
    ],
    "drug_exposure": [
        ("drug_exposure_id", "BIGINT"),
        ("person_id", "BIGINT"),
        ("drug_concept_id", "INTEGER"),
        ("drug_exposure_start_date", "DATE"),
        ("drug_exposure_start_datetime", "TIMESTAMP"),
        ("drug_exposure_end_date", "DATE"),
        ("drug_exposure_end_datetime", "TIMESTAMP"),
        ("verbatim_end_date", "DATE"),
        ("drug_type_concept_id", "INTEGER"),
        ("stop_reason", "VARCHAR"),
        ("refills", "INTEGER"),
        ("quantity", "DOUBLE"),
        ("days_supply", "INTEGER"),
        ("sig", "VARCHAR"),
        ("route_concept_id", "INTEGER"),
        ("lot_number", "VARCHAR"),
        ("provider_id", "BIGINT"),
        ("visit_occurrence_id", "BIGINT"),
        ("visit_detail_id", "BIGINT"),
        ("drug_source_value", "VARCHAR"),
        ("drug_source_concept_id", "INTEGER"),
        ("route_source_value", "VARCHAR"),
        ("dose_unit_source_value", "VARCHAR"),
    ],
    "measurement": [
        ("measurement_id", "BIGINT"),
        ("person_id", "BIGINT"),
        ("measurement_concept_id", "INTEGER"),
        ("measurement_date", "DATE"),
        ("measurement_datetime", "TIMESTAMP"),
        ("measurement_time", "VARCHAR"),
        ("measurement_type_concept_id", "INTEGER"),
        ("operator_concept_id", "INTEGER"),
        ("value_as_number", "DOUBLE"),
        ("value_as_concept_id", "INTEGER"),
        ("unit_concept_id", "INTEGER"),
        ("range_low", "DOUBLE"),
        ("range_high", "DOUBLE"),
        ("provider_id", "BIGINT"),
        ("visit_occurrence_id", "BIGINT"),
        ("visit_detail_id", "BIGINT"),
        ("measurement_source_value", "VARCHAR"),
        ("measurement_source_concept_id", "INTEGER"),
        ("unit_source_value", "VARCHAR"),
        ("unit_source_concept_id", "INTEGER"),
        ("value_source_value", "VARCHAR"),
        ("measurement_event_id", "BIGINT"),
        ("meas_event_field_concept_id", "INTEGER"),
    ],
    "death": [
        ("person_id", "BIGINT"),
        ("death_date", "DATE"),
        ("death_datetime", "TIMESTAMP"),
        ("death_type_concept_id", "INTEGER"),
        ("cause_concept_id", "INTEGER"),
        ("cause_source_value", "VARCHAR"),
        ("cause_source_concept_id", "INTEGER"),
    ],
    "concept": [
        ("concept_id", "INTEGER"),
        ("concept_name", "VARCHAR"),
        ("domain_id", "VARCHAR"),
        ("vocabulary_id", "VARCHAR"),
        ("concept_class_id", "VARCHAR"),
        ("standard_concept", "VARCHAR"),
        ("concept_code", "VARCHAR"),
        ("valid_start_date", "DATE"),
        ("valid_end_date", "DATE"),
        ("invalid_reason", "VARCHAR"),
    ],
}

# Labs: concept -> (unit concept, unit text, range low, range high, decimals).
LABS: dict[int, tuple[int, str, float, float, int]] = {
    3020460: (8751, "mg/L", 0.0, 5.0, 1),  # CRP
    3000905: (8848, "10*3/uL", 4.0, 11.0, 1),  # white cells
    3000963: (8713, "g/dL", 12.0, 17.5, 1),  # haemoglobin
    3016723: (8840, "mg/dL", 0.6, 1.3, 2),  # creatinine
    3004410: (8554, "%", 4.0, 5.6, 1),  # HbA1c
    3004249: (8876, "mm[Hg]", 90.0, 120.0, 0),  # systolic BP
    3012888: (8876, "mm[Hg]", 60.0, 80.0, 0),  # diastolic BP
    3038553: (9531, "kg/m2", 18.5, 25.0, 1),  # BMI
}
#: The EHR features that carry the latent severity (documented in truth/signal.json).
EHR_SIGNAL_CONCEPTS = {
    "measurement": [3020460, 3000905, 3000963],
    "condition_occurrence": [255848, 316139],
    "drug_exposure": [1551099],
    "visit_occurrence": [9201, 9203],
}


@dataclass
class EhrTables:
    """The OMOP tables as data frames, keyed by table name."""

    tables: dict[str, pd.DataFrame]

    def row_counts(self) -> dict[str, int]:
        return {name: len(df) for name, df in self.tables.items()}


def _days(x: np.ndarray) -> np.ndarray:
    return x.astype("timedelta64[D]")


def _pick(
    rng: np.random.Generator, start: np.ndarray, size: np.ndarray, owner: np.ndarray
) -> np.ndarray:
    """For each event of ``owner``, a random position in that owner's block [start, start+size)."""
    return start[owner] + np.floor(rng.random(owner.size) * size[owner]).astype(np.int64)


def simulate_ehr(
    rng: np.random.Generator,
    *,
    demo: pd.DataFrame,
    locations: pd.DataFrame,
    s_ehr: np.ndarray,
    eta: np.ndarray,
    outcomes: pd.DataFrame,
    noise_labs: int = 0,
    noise_rng: np.random.Generator | None = None,
) -> EhrTables:
    """Build every OMOP table for the patients in ``demo`` (rows aligned with the arrays).

    Every person gets a location; the caller blanks ``person.location_id`` for patients
    whose home address is unknown (the environment modality is then missing).
    ``noise_labs`` further measurements carry no signal (:func:`noise_lab_concepts`),
    drawn from ``noise_rng`` so the rest of the EHR is the same with or without them.
    """
    n = len(demo)
    pid = demo["person_id"].to_numpy()
    index = demo["index_date"].to_numpy().astype("datetime64[D]")
    male = demo["male"].to_numpy()
    age_z = (demo["age"].to_numpy() - 66.0) / 9.0
    time = outcomes["time"].to_numpy()
    event = outcomes["event"].to_numpy()

    # --- visits: pre-index (out, in, ER), the index visit, post-index follow-up ---------
    n_out = 1 + rng.poisson(5.0, n)
    n_inp = rng.poisson(np.exp(-1.0 + 0.7 * s_ehr))
    n_er = rng.poisson(np.exp(-1.3 + 0.5 * s_ehr))
    n_pre = n_out + n_inp + n_er
    n_fu = np.minimum(rng.poisson(time / 240.0), 12)
    n_post = n_fu + event  # death comes with a final inpatient stay
    per_patient = n_pre + 1 + n_post
    owner = np.repeat(np.arange(n), per_patient)
    start = np.concatenate([[0], np.cumsum(per_patient)[:-1]])
    pos = np.arange(owner.size) - start[owner]
    phase = np.where(pos < n_pre[owner], 0, np.where(pos == n_pre[owner], 1, 2))
    kind = np.full(owner.size, 9202)
    kind[(phase == 0) & (pos >= n_out[owner])] = 9201
    kind[(phase == 0) & (pos >= (n_out + n_inp)[owner])] = 9203
    offset = np.zeros(owner.size, dtype=np.int64)
    pre = phase == 0
    offset[pre] = -rng.integers(1, LOOKBACK_DAYS + 1, int(pre.sum()))
    post = phase == 2
    offset[post] = 1 + np.floor(rng.random(int(post.sum())) * (time[owner[post]] - 1))
    last = start + per_patient - 1
    terminal = last[event]
    kind[terminal] = 9201
    los = np.where(kind == 9201, 1 + rng.poisson(np.exp(1.0 + 0.3 * s_ehr[owner])), 0)
    los[terminal] = np.minimum(los[terminal], time[event] - 1)  # admitted after the index
    offset[terminal] = time[event] - los[terminal]
    # Sort each patient's visits by date so phases stay contiguous (pre < index < post).
    order = np.lexsort((offset, owner))
    owner, phase, kind, offset, los = (
        owner[order],
        phase[order],
        kind[order],
        offset[order],
        los[order],
    )
    v_start = index[owner] + _days(offset)
    v_end = v_start + _days(los)
    visit_id = np.arange(1, owner.size + 1, dtype=np.int64)
    visits = pd.DataFrame(
        {
            "visit_occurrence_id": visit_id,
            "person_id": pid[owner],
            "visit_concept_id": kind,
            "visit_start_date": v_start,
            "visit_end_date": v_end,
            "visit_type_concept_id": EHR_TYPE,
            "visit_source_value": pd.Series(kind).map({9201: "IP", 9202: "OP", 9203: "ER"}),
        }
    )
    index_visit = start + n_pre  # position of each patient's index visit (after sorting)
    post_start = index_visit + 1

    # --- conditions ----------------------------------------------------------------------
    flags = {
        320128: rng.random(n) < 1 / (1 + np.exp(-(-0.3 + 0.8 * age_z))),  # hypertension
        201826: rng.random(n) < 0.22,  # type 2 diabetes
        432867: rng.random(n) < 1 / (1 + np.exp(-(-0.5 + 0.5 * age_z))),  # hyperlipidaemia
        316139: rng.random(n) < 1 / (1 + np.exp(-(-2.0 + 0.9 * s_ehr + 0.4 * age_z))),  # HF
        313217: rng.random(n) < 1 / (1 + np.exp(-(-2.5 + 0.6 * age_z))),  # AF
    }
    cond_parts: list[tuple[np.ndarray, int]] = []  # (visit positions, concept)
    for concept, has in flags.items():
        k = np.where(has, 1 + rng.poisson(1.5, n), 0)
        cond_parts.append((_pick(rng, start, n_pre, np.repeat(np.arange(n), k)), concept))
    k = rng.poisson(np.exp(-1.2 + 0.8 * s_ehr))
    cond_parts.append((_pick(rng, start, n_pre, np.repeat(np.arange(n), k)), 255848))
    cond_parts.append((index_visit, COPD))
    has_post = n_post > 0
    post_owner = np.repeat(np.arange(n), np.where(has_post, n_post, 0))
    cond_parts.append((post_start[post_owner] + _rank_in_group(post_owner), COPD))
    k = np.where(has_post, rng.poisson(np.exp(-1.0 + 0.6 * eta)), 0)  # post-index pneumonia
    cond_parts.append((_pick(rng, post_start, n_post, np.repeat(np.arange(n), k)), 255848))
    cpos = np.concatenate([p for p, _ in cond_parts])
    cconcept = np.concatenate([np.full(p.size, c) for p, c in cond_parts])
    corder = np.lexsort((cconcept, cpos))
    cpos, cconcept = cpos[corder], cconcept[corder]
    conditions = pd.DataFrame(
        {
            "condition_occurrence_id": np.arange(1, cpos.size + 1, dtype=np.int64),
            "person_id": pid[owner[cpos]],
            "condition_concept_id": cconcept,
            "condition_start_date": v_start[cpos],
            "condition_type_concept_id": EHR_TYPE,
            "visit_occurrence_id": visit_id[cpos],
        }
    )

    # --- drugs ---------------------------------------------------------------------------
    htn, t2dm, hld = flags[320128], flags[201826], flags[432867]
    ace = rng.random(n) < 0.6
    drug_counts = {
        1154343: (rng.poisson(2.0, n), 30),  # albuterol
        1149380: (np.where(rng.random(n) < 0.35, 1 + rng.poisson(3.0, n), 0), 30),
        1551099: (rng.poisson(np.exp(-0.9 + 0.7 * s_ehr)), 5),  # prednisone bursts
        1503297: (np.where(t2dm, 1 + rng.poisson(4.0, n), 0), 30),
        1308216: (np.where(htn & ace, 1 + rng.poisson(4.0, n), 0), 30),
        1332418: (np.where(htn & ~ace, 1 + rng.poisson(4.0, n), 0), 30),
        1545958: (np.where(hld, 1 + rng.poisson(4.0, n), 0), 30),
        1112807: (np.where(rng.random(n) < 0.25, 1 + rng.poisson(2.0, n), 0), 90),
    }
    dpos_l, dconcept_l, dsupply_l = [], [], []
    for concept, (k, supply) in drug_counts.items():
        p = _pick(rng, start, n_pre, np.repeat(np.arange(n), k))
        dpos_l.append(p)
        dconcept_l.append(np.full(p.size, concept))
        dsupply_l.append(np.full(p.size, supply))
    k = np.where(has_post, rng.poisson(np.exp(-0.6 + 0.5 * eta)), 0)  # post-index steroids
    p = _pick(rng, post_start, n_post, np.repeat(np.arange(n), k))
    dpos_l.append(p)
    dconcept_l.append(np.full(p.size, 1551099))
    dsupply_l.append(np.full(p.size, 5))
    dpos, dconcept, dsupply = map(np.concatenate, (dpos_l, dconcept_l, dsupply_l))
    dorder = np.lexsort((dconcept, dpos))
    dpos, dconcept, dsupply = dpos[dorder], dconcept[dorder], dsupply[dorder]
    d_start = v_start[dpos]
    drugs = pd.DataFrame(
        {
            "drug_exposure_id": np.arange(1, dpos.size + 1, dtype=np.int64),
            "person_id": pid[owner[dpos]],
            "drug_concept_id": dconcept,
            "drug_exposure_start_date": d_start,
            "drug_exposure_end_date": d_start + _days(dsupply - 1),
            "drug_type_concept_id": EHR_TYPE,
            "quantity": dsupply.astype(float),
            "days_supply": dsupply,
            "visit_occurrence_id": visit_id[dpos],
        }
    )

    measurements = _measurements(
        rng,
        owner=owner,
        phase=phase,
        kind=kind,
        s_ehr=s_ehr,
        eta=eta,
        male=male,
        age_z=age_z,
        flags=flags,
        noise=_noise_labs(noise_rng, owner=owner, kind=kind, n=n, count=noise_labs),
    )
    measurements.insert(1, "person_id", pid[owner[measurements.pop("_visit").to_numpy()]])
    mvisit = measurements["visit_occurrence_id"].to_numpy() - 1
    measurements.insert(3, "measurement_date", v_start[mvisit])

    # --- person, observation period, death, location -----------------------------------
    birth = demo["birth_date"].to_numpy().astype("datetime64[D]")
    bts = pd.DatetimeIndex(birth)
    location_id = locations["location_id"].to_numpy()[demo["location_idx"].to_numpy()]
    race = demo["race"].to_numpy()
    person = pd.DataFrame(
        {
            "person_id": pid,
            "gender_concept_id": np.where(male, 8507, 8532),
            "year_of_birth": bts.year,
            "month_of_birth": bts.month,
            "day_of_birth": bts.day,
            "birth_datetime": bts,
            "race_concept_id": pd.Series(race).map(RACE_CONCEPTS).to_numpy(),
            "ethnicity_concept_id": np.where(demo["hispanic"].to_numpy(), 38003563, 38003564),
            "location_id": pd.array(location_id, dtype="Int64"),
            "person_source_value": demo["patient_id"].to_numpy(),
            "gender_source_value": np.where(male, "M", "F"),
            "race_source_value": race,
            "ethnicity_source_value": np.where(demo["hispanic"].to_numpy(), "hispanic", "not"),
        }
    )
    first_visit = v_start[start]
    obs_start = np.minimum(index - _days(LOOKBACK_DAYS + rng.integers(0, 366, n)), first_visit)
    end = index + _days(time)
    observation_period = pd.DataFrame(
        {
            "observation_period_id": pid,
            "person_id": pid,
            "observation_period_start_date": obs_start,
            "observation_period_end_date": end,
            "period_type_concept_id": EHR_TYPE,
        }
    )
    death = pd.DataFrame(
        {"person_id": pid[event], "death_date": end[event], "death_type_concept_id": EHR_TYPE}
    )
    return EhrTables(
        {
            "person": person,
            "location": locations,
            "observation_period": observation_period,
            "visit_occurrence": visits,
            "condition_occurrence": conditions,
            "drug_exposure": drugs,
            "measurement": measurements,
            "death": death,
            "concept": pd.concat(
                [concept_table(), noise_lab_concepts(noise_labs)], ignore_index=True
            )
            if noise_labs
            else concept_table(),
        }
    )


def _rank_in_group(group: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a sorted ``group`` array."""
    if group.size == 0:
        return group.astype(np.int64)
    first = np.concatenate([[True], group[1:] != group[:-1]])
    starts = np.flatnonzero(first)
    run = np.cumsum(first) - 1
    return np.arange(group.size) - starts[run]


def _measurements(
    rng: np.random.Generator,
    *,
    owner: np.ndarray,
    phase: np.ndarray,
    kind: np.ndarray,
    s_ehr: np.ndarray,
    eta: np.ndarray,
    male: np.ndarray,
    age_z: np.ndarray,
    flags: dict[int, np.ndarray],
    noise: list[pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Labs and vitals at visits; each patient has some labs never ordered. ``noise``:
    further measurement rows (in the same columns) to file among them."""
    n = s_ehr.size
    htn, t2dm = flags[320128], flags[201826]
    drift = np.where(phase == 2, 0.35 * eta[owner], 0.0)  # after the index date only
    # Per patient: (log-)mean of each lab and whether it is ever ordered.
    pt = {
        3020460: (np.log(4.0) + 0.7 * s_ehr, rng.random(n) < 0.80),
        3000905: (7.5 + 1.2 * s_ehr, rng.random(n) < 0.90),
        3000963: (13.0 + 1.1 * male - 0.5 * s_ehr + rng.normal(0, 0.5, n), rng.random(n) < 0.90),
        3016723: (
            np.log(0.95) + 0.08 * age_z + 0.15 * male + rng.normal(0, 0.15, n),
            rng.random(n) < 0.90,
        ),
        3004410: (
            5.5 + 1.6 * t2dm + rng.normal(0, 0.3, n),
            rng.random(n) < np.where(t2dm, 0.9, 0.25),
        ),
        3004249: (126 + 10 * htn + 4 * age_z + rng.normal(0, 8, n), np.ones(n, bool)),
        3012888: (77 + 5 * htn + rng.normal(0, 5, n), np.ones(n, bool)),
        3038553: (rng.normal(27.5, 4.5, n), np.ones(n, bool)),
    }
    visit_sd = {
        3020460: 0.30,
        3000905: 0.8,
        3000963: 0.5,
        3016723: 0.08,
        3004410: 0.3,
        3004249: 8.0,
        3012888: 6.0,
        3038553: 0.4,
    }
    log_scale = {3020460, 3016723}
    vitals = {3004249, 3012888, 3038553}
    frames = []
    for concept, (mean, ordered) in pt.items():
        unit, unit_text, lo, hi, decimals = LABS[concept]
        if concept in vitals:
            prob = np.where(kind == 9202, 0.9, 0.3)
        else:
            prob = np.where(kind == 9201, 0.9, 0.5)
        take = ordered[owner] & (rng.random(owner.size) < prob)
        v = np.flatnonzero(take)
        value = mean[owner[v]] + rng.normal(0, visit_sd[concept], v.size)
        if concept in (3020460, 3000905):
            value = value + drift[v] * (1.0 if concept in log_scale else 1.5)
        if concept in log_scale:
            value = np.exp(value)
        frames.append(
            pd.DataFrame(
                {
                    "_visit": v,
                    "measurement_concept_id": concept,
                    "measurement_type_concept_id": EHR_TYPE,
                    "value_as_number": np.round(value, decimals),
                    "unit_concept_id": unit,
                    "range_low": lo,
                    "range_high": hi,
                    "visit_occurrence_id": v + 1,
                    "unit_source_value": unit_text,
                }
            )
        )
    frames += noise or []
    out = pd.concat(frames, ignore_index=True).sort_values(
        ["_visit", "measurement_concept_id"], kind="stable", ignore_index=True
    )
    out.insert(0, "measurement_id", np.arange(1, len(out) + 1, dtype=np.int64))
    return out


#: Concept ids of the noise labs: OMOP's range for local concepts (above 2,000,000,000).
NOISE_LAB_BASE = 2_000_000_000


def noise_lab_concepts(count: int) -> pd.DataFrame:
    """``concept`` rows of ``count`` noise labs (vocabulary ``medweave``, local ids)."""
    ids = NOISE_LAB_BASE + 1 + np.arange(count)
    return pd.DataFrame(
        {
            "concept_id": ids,
            "concept_name": [f"Synthetic noise lab {k + 1}" for k in range(count)],
            "domain_id": "Measurement",
            "vocabulary_id": "medweave",
            "concept_class_id": "Lab Test",
            "standard_concept": "S",
            "concept_code": [f"NOISE-{k + 1}" for k in range(count)],
            "valid_start_date": pd.Timestamp("1970-01-01").date(),
            "valid_end_date": pd.Timestamp("2099-12-31").date(),
            "invalid_reason": None,
        }
    )


def _noise_labs(
    rng: np.random.Generator | None,
    *,
    owner: np.ndarray,
    kind: np.ndarray,
    n: int,
    count: int,
) -> list[pd.DataFrame]:
    """Measurement rows of ``count`` labs unrelated to any latent or outcome: per patient a
    mean and whether the lab is ever ordered, per visit whether it is taken and its value.
    They look like the real labs to a feature builder (counts, last, mean, slope...), so
    they are features a model must learn to ignore."""
    if count == 0:
        return []
    if rng is None:
        raise ValueError("noise labs need their own random generator (noise_rng)")
    frames = []
    for k in range(count):
        mean = rng.normal(50.0, 10.0, n)
        ordered = rng.random(n) < rng.uniform(0.3, 0.9)
        prob = np.where(kind == 9201, 0.6, 0.3)
        v = np.flatnonzero(ordered[owner] & (rng.random(owner.size) < prob))
        value = mean[owner[v]] + rng.normal(0.0, 5.0, v.size)
        frames.append(
            pd.DataFrame(
                {
                    "_visit": v,
                    "measurement_concept_id": NOISE_LAB_BASE + 1 + k,
                    "measurement_type_concept_id": EHR_TYPE,
                    "value_as_number": np.round(value, 1),
                    "unit_concept_id": 0,
                    "range_low": 30.0,
                    "range_high": 70.0,
                    "visit_occurrence_id": v + 1,
                    "unit_source_value": "{score}",
                }
            )
        )
    return frames


def write_duckdb(path: Path, ehr: EhrTables) -> None:
    """Create the CDM tables (5.4 columns) in a new DuckDB file and insert the rows."""
    con = duckdb.connect(str(path))
    try:
        for name, columns in CDM_TABLES.items():
            cols = ", ".join(f"{c} {t}" for c, t in columns)
            con.execute(f"CREATE TABLE {name} ({cols})")
            df = ehr.tables[name]  # noqa: F841 (read by DuckDB below)
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM df")
        con.execute("CHECKPOINT")
    finally:
        con.close()
