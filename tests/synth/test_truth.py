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


def test_ceiling_matches_truth(data: pd.DataFrame, ceiling: dict) -> None:
    y = data["outcome"]
    assert ceiling["oracle"]["auroc"] == pytest.approx(roc_auc_score(y, data["p_true"]))
    assert ceiling["observed"]["auroc"] == pytest.approx(roc_auc_score(y, data["p_observed"]))
    c_oracle = concordance_index(data["time"], -data["risk_true"], data["event"])
    c_observed = concordance_index(data["time"], -data["risk_observed"], data["event"])
    assert ceiling["oracle"]["c_index"] == pytest.approx(c_oracle)
    assert ceiling["observed"]["c_index"] == pytest.approx(c_observed)


def test_observed_ceiling_below_oracle(ceiling: dict) -> None:
    for metric in ("auroc", "c_index"):
        assert ceiling["observed"][metric] <= ceiling["oracle"][metric]
        assert ceiling["observed"][metric] > 0.7


def test_observed_equals_true_model_for_complete_patients(data: pd.DataFrame) -> None:
    complete = data[["has_imaging", "has_omics", "has_environment"]].all(axis=1)
    assert complete.mean() == pytest.approx(0.7, abs=0.01)
    sub = data[complete]
    assert np.allclose(sub["p_observed"], sub["p_true"])
    assert np.allclose(sub["risk_observed"], sub["risk_true"])
    # A patient lacking a modality is pulled towards the population average.
    lacking = data[~complete]
    assert lacking["p_observed"].std() < lacking["p_true"].std()


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
    assert cv_auc(x_int) > ceiling["observed"]["auroc"] - 0.01  # all latents reach the ceiling


def test_mnar_sicker_patients_lack_imaging_more_often(data: pd.DataFrame) -> None:
    lacking = data.loc[~data["has_imaging"], "risk_true"].mean()
    present = data.loc[data["has_imaging"], "risk_true"].mean()
    assert lacking > present + 0.3
