"""The ground truth: ceilings recomputed from truth, and the signal spread over modalities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict


@pytest.fixture(scope="module")
def data(cohort_dir: Path) -> pd.DataFrame:
    index = pd.read_parquet(cohort_dir / "index.parquet")
    truth = pd.read_parquet(cohort_dir / "truth" / "patients.parquet")
    return index.merge(truth, on=["person_id", "patient_id"], validate="one_to_one")


@pytest.fixture(scope="module")
def ceiling(cohort_dir: Path) -> dict:
    return json.loads((cohort_dir / "truth" / "ceiling.json").read_text())


CEILINGS = {"oracle": "true", "observed_latents": "observed_latents", "observed": "observed"}


def test_ceiling_matches_truth(data: pd.DataFrame, ceiling: dict) -> None:
    y = data["outcome"]
    for key, column in CEILINGS.items():
        assert ceiling[key]["auroc"] == pytest.approx(roc_auc_score(y, data[f"p_{column}"]))
        c_index = concordance_index(data["time"], -data[f"risk_{column}"], data["event"])
        assert ceiling[key]["c_index"] == pytest.approx(c_index)
    assert set(CEILINGS) < set(ceiling["definitions"])


def test_ceilings_are_ordered(ceiling: dict) -> None:
    """Data reveal less than the latents behind them, and missing modalities cost more."""
    for metric in ("auroc", "c_index"):
        assert ceiling["observed"][metric] < ceiling["observed_latents"][metric]
        assert ceiling["observed_latents"][metric] < ceiling["oracle"][metric]
        assert ceiling["observed"][metric] > 0.7


def test_observed_latents_equal_true_model_for_complete_patients(data: pd.DataFrame) -> None:
    complete = data[["has_imaging", "has_omics", "has_environment"]].all(axis=1)
    assert complete.mean() == pytest.approx(0.7, abs=0.01)
    sub = data[complete]
    assert np.allclose(sub["p_observed_latents"], sub["p_true"])
    assert np.allclose(sub["risk_observed_latents"], sub["risk_true"])
    # A patient lacking a modality is pulled towards the population average.
    lacking = data[~complete]
    assert lacking["p_observed_latents"].std() < lacking["p_true"].std()


def test_observed_averages_over_measurement_noise(data: pd.DataFrame) -> None:
    """With every modality present, the data still leave s_ehr and the omics modules
    slightly uncertain: close to the truth, never equal, and pulled towards the middle."""
    complete = data[data[["has_imaging", "has_omics", "has_environment"]].all(axis=1)]
    assert np.corrcoef(complete["risk_observed"], complete["risk_true"])[0, 1] > 0.95
    assert not np.allclose(complete["p_observed"], complete["p_true"])
    assert complete["p_observed"].std() < complete["p_true"].std()


LATENTS = {
    "ehr": ["age_z", "male", "s_ehr"],
    "imaging": ["img"],
    "omics": ["m_prolif", "m_inflam"],
    "environment": ["env"],
}


@pytest.mark.parametrize("modality", list(LATENTS))
def test_single_modality_true_signal_stays_below_ceiling(
    data: pd.DataFrame, ceiling: dict, modality: str
) -> None:
    """A model given one modality's true signal features is clearly below the ceiling."""
    x = data[LATENTS[modality]].to_numpy()
    prob = cross_val_predict(
        LogisticRegression(), x, data["outcome"], cv=5, method="predict_proba"
    )[:, 1]
    auc = roc_auc_score(data["outcome"], prob)
    assert auc < ceiling["observed"]["auroc"] - 0.07
    assert auc > 0.5  # and yet each modality carries part of the signal


def test_interaction_needs_both_modalities(data: pd.DataFrame, ceiling: dict) -> None:
    """All latents with the env x inflammation product beat all latents without it."""
    names = [n for group in LATENTS.values() for n in group]
    x = data[names].to_numpy()
    x_int = np.column_stack([x, data["env"] * data["m_inflam"]])

    def cv_auc(features: np.ndarray) -> float:
        prob = cross_val_predict(
            LogisticRegression(), features, data["outcome"], cv=5, method="predict_proba"
        )[:, 1]
        return roc_auc_score(data["outcome"], prob)

    assert cv_auc(x_int) > cv_auc(x) + 0.01
    # All latents reach the ceiling that knows the latents of the modalities present.
    assert cv_auc(x_int) > ceiling["observed_latents"]["auroc"] - 0.01


def test_mnar_sicker_patients_lack_imaging_more_often(data: pd.DataFrame) -> None:
    lacking = data.loc[~data["has_imaging"], "risk_true"].mean()
    present = data.loc[data["has_imaging"], "risk_true"].mean()
    assert lacking > present + 0.3
