"""Pooling out-of-fold predictions (``medweave.experiment._results.pooled``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medweave.evaluate import breslow_survival
from medweave.experiment._results import Outcomes, pooled, subgroup_frame
from medweave.models.tasks import c_index


class _Patients:
    """The one attribute of a cohort that ``Outcomes`` reads."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.patients = frame


def _survival(n: int = 600, seed: int = 0) -> tuple[Outcomes, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    t_event = rng.exponential(1000 * np.exp(-risk))
    t_censor = rng.uniform(200, 3000, n)
    frame = pd.DataFrame({"time": np.minimum(t_event, t_censor), "event": t_event <= t_censor})
    return Outcomes(_Patients(frame), "survival"), risk  # type: ignore[arg-type]


def _folds(risk: np.ndarray, offsets: list[float]) -> list[dict[str, np.ndarray]]:
    rows = np.random.default_rng(1).permutation(len(risk))
    parts = np.array_split(rows, len(offsets))
    folds = []
    for k, (test, shift) in enumerate(zip(parts, offsets, strict=True)):
        train = np.sort(np.concatenate([p for j, p in enumerate(parts) if j != k]))
        noisy = risk + np.random.default_rng(k).normal(0, 0.5, len(risk)) + shift
        folds.append(
            {
                "train": train,
                "test": np.sort(test),
                "pred": noisy[np.sort(test)],
                "train_pred": noisy[train],
            }
        )
    return folds


def test_pooled_survival_scores_do_not_depend_on_each_folds_offset() -> None:
    out, risk = _survival()
    assert out.time is not None and out.event is not None and out.horizons is not None
    same, _ = pooled(out, _folds(risk, [0.0, 0.0, 0.0]), len(risk))
    shifted, surv = pooled(out, _folds(risk, [0.0, 4.0, -3.0]), len(risk))
    # A Cox score's origin is arbitrary: each fold's shift cancels against its baseline.
    np.testing.assert_allclose(shifted, same, atol=1e-9)
    c = c_index(shifted, (out.time, out.event))
    raw = np.concatenate([f["pred"] for f in _folds(risk, [0.0, 4.0, -3.0])])
    order = np.concatenate([f["test"] for f in _folds(risk, [0.0, 4.0, -3.0])])
    c_raw = c_index(raw, (out.time[order], out.event[order]))
    assert c > c_raw + 0.05  # pooled as they came, the offsets scramble the ranking
    # The survival curves are each fold's Breslow prediction, unchanged by the pooling.
    f = _folds(risk, [0.0, 4.0, -3.0])[1]
    expected = breslow_survival(
        out.time[f["train"]], out.event[f["train"]], f["train_pred"], f["pred"], out.horizons
    )
    assert surv is not None
    np.testing.assert_allclose(surv[f["test"]], expected)


def test_subgroup_variables_the_cohort_cannot_give_are_named_with_the_reason() -> None:
    cohort = _Patients(pd.DataFrame({"patient_id": ["a", "b"], "site": ["x", "y"]}))
    cohort.modalities = {}  # type: ignore[attr-defined]
    cohort.n = 2  # type: ignore[attr-defined]
    groups, unavailable = subgroup_frame(cohort, ["site", "sex", "ward"])  # type: ignore[arg-type]
    assert list(groups.columns) == ["site"]
    assert set(unavailable) == {"sex", "ward"}
    assert "sex_male" in unavailable["sex"] and "index.columns" in unavailable["ward"]
