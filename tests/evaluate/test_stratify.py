"""Stratification on generated data whose groups and hazards are known."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from medweave.errors import InputError
from medweave.evaluate.stratify import Grouping, cluster_patients, risk_groups, stratify

GROUPING_KEYS = {"method", "k", "silhouette", "groups", "km", "logrank", "profiles"}
GROUP_KEYS = {"label", "n", "n_events", "event_rate", "median_time"}
KM_KEYS = {"label", "time", "survival", "ci_low", "ci_high"}
LOGRANK_KEYS = {"statistic", "p_value", "df"}
PROFILE_KEYS = {"label", "top_features", "modality_presence"}
FEATURE_KEYS = {"feature", "modality", "smd", "mean_in", "mean_out"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # k-means' OpenMP threads spin when the machine is busy (tests run in parallel): 30×
    # slower on a few hundred patients, which gain nothing from threads anyway.
    with threadpool_limits(1):
        yield


def _blobs(n: int = 300, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(n_samples=n, centers=k, n_features=5, cluster_std=0.6, random_state=seed)
    return x, y


def _cohort(n: int, *, effect: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Risk scores and exponential survival times whose log-hazard is ``effect`` × risk."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    event_time = rng.exponential(365.0 / np.exp(effect * risk))
    censor = rng.uniform(365.0, 3650.0, size=n)
    return risk, np.minimum(event_time, censor), event_time <= censor


# ----------------------------------------------------------------------------- clustering
def test_silhouette_finds_the_blobs() -> None:
    x, y = _blobs()
    res = cluster_patients(x, seed=0)
    assert res.k == 4
    assert sorted(res.silhouette) == [2, 3, 4, 5, 6]
    assert max(res.silhouette, key=lambda k: res.silhouette[k] or -1) == 4
    assert adjusted_rand_score(y, np.asarray(res.labels)) == pytest.approx(1.0)
    assert list(res.labels.categories) == ["C1", "C2", "C3", "C4"]
    sizes = pd.Series(np.asarray(res.labels)).value_counts()
    assert sizes["C1"] == sizes.max()


def test_clustering_is_deterministic_and_k_can_be_fixed() -> None:
    x, _ = _blobs(k=3, seed=5)
    a = cluster_patients(x, k_range=(2, 4), seed=3)
    b = cluster_patients(x, k_range=(2, 4), seed=3)
    assert np.array_equal(np.asarray(a.labels), np.asarray(b.labels))
    assert a.silhouette == b.silhouette
    fixed = cluster_patients(x, k=5, seed=3)
    assert fixed.k == 5 and list(fixed.silhouette) == [5]
    assert len(set(np.asarray(fixed.labels))) == 5


def test_clustering_rejects_bad_embeddings() -> None:
    x, _ = _blobs(n=20)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values in 1 rows"):
        cluster_patients(x)
    with pytest.raises(InputError, match="3 patients are fewer than k=4"):
        cluster_patients(np.ones((3, 2)), k=4)
    with pytest.raises(InputError, match="too few"):
        cluster_patients(np.arange(2.0).reshape(2, 1))
    with pytest.raises(InputError, match="2-D"):
        cluster_patients(np.arange(10.0))


# ----------------------------------------------------------------------------- risk groups
def test_risk_groups_are_ordered_and_balanced() -> None:
    risk = np.random.default_rng(1).normal(size=300)
    groups = risk_groups(risk)
    assert list(groups.categories) == ["low", "intermediate", "high"] and groups.ordered
    s = pd.Series(risk).groupby(np.asarray(groups)).agg(["size", "min", "max"])
    assert (s["size"] == 100).all()
    assert s.loc["low", "max"] < s.loc["intermediate", "min"]
    assert s.loc["intermediate", "max"] < s.loc["high", "min"]
    quartiles = risk_groups(risk, n_groups=4)
    assert list(quartiles.categories) == ["Q1", "Q2", "Q3", "Q4"]
    assert pd.Series(np.asarray(quartiles)).value_counts().tolist() == [75] * 4


def test_tied_risks_share_a_group() -> None:
    risk = np.array([0.1, 0.5, 0.5, 0.5, 0.5, 0.9])
    groups = np.asarray(risk_groups(risk))
    assert len(set(groups[1:5])) == 1
    with pytest.raises(InputError, match="NaN"):
        risk_groups(np.array([0.1, np.nan, 0.3]))
    with pytest.raises(InputError, match="fewer than 3 groups"):
        risk_groups(np.array([0.1, 0.2]))


# ----------------------------------------------------------------------------- survival
def test_risk_that_drives_hazard_separates_survival() -> None:
    risk, time, event = _cohort(600, effect=1.0, seed=0)
    g = stratify(risk_groups(risk), time=time, event=event, method="risk_quantiles")
    assert [x.label for x in g.groups] == ["low", "intermediate", "high"]
    assert g.logrank is not None and g.logrank.df == 2
    assert g.logrank.p_value is not None and g.logrank.p_value < 1e-10
    medians = [x.median_time for x in g.groups]
    assert all(m is not None for m in medians)
    assert medians[0] > medians[1] > medians[2]  # type: ignore[operator]
    rates = [x.event_rate for x in g.groups]
    assert rates[0] < rates[1] < rates[2]
    assert sum(x.n for x in g.groups) == 600
    assert sum(x.n_events for x in g.groups) == int(event.sum())


def test_null_risk_gives_a_large_p_value() -> None:
    _, time, event = _cohort(600, effect=1.0, seed=0)
    unrelated = np.random.default_rng(99).normal(size=600)
    g = stratify(risk_groups(unrelated), time=time, event=event, method="risk_quantiles")
    assert g.logrank is not None and g.logrank.p_value is not None
    assert g.logrank.p_value > 0.2


def test_km_curves_are_thinned_steps_that_agree_with_lifelines() -> None:
    risk, time, event = _cohort(2000, effect=0.5, seed=4)
    labels = np.where(risk > 0, "B", "A")
    g = stratify(labels, time=time, event=event, method="split")
    assert g.km is not None and [c.label for c in g.km] == ["A", "B"]
    for curve in g.km:
        m = labels == curve.label
        assert len(curve.time) <= 200
        assert curve.time[0] == 0.0 and curve.survival[0] == 1.0
        assert curve.time[-1] == pytest.approx(time[m].max())  # the curve runs to the end
        assert np.all(np.diff(curve.time) > 0) and np.all(np.diff(curve.survival) <= 0)
        full = KaplanMeierFitter().fit(time[m], event[m])
        expected = full.survival_function_at_times(curve.time).to_numpy()
        assert np.allclose(curve.survival, expected)
        low, high = np.asarray(curve.ci_low, float), np.asarray(curve.ci_high, float)
        assert np.all(low <= np.asarray(curve.survival) + 1e-12)
        assert np.all(high >= np.asarray(curve.survival) - 1e-12)


def test_binary_outcome_has_rates_but_no_curves() -> None:
    labels = np.array(["C1"] * 4 + ["C2"] * 6)
    outcome = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 1])
    g = stratify(labels, outcome=outcome, method="kmeans", silhouette={2: 0.4, 3: float("nan")})
    assert g.km is None and g.logrank is None and g.profiles is None
    assert [(x.n, x.n_events, x.event_rate) for x in g.groups] == [(4, 2, 0.5), (6, 1, 1 / 6)]
    assert all(x.median_time is None for x in g.groups)
    assert g.to_dict()["silhouette"] == {"2": 0.4, "3": None}


def test_outcome_inputs_are_checked() -> None:
    labels = np.array(["a", "b", "a"])
    with pytest.raises(InputError, match="not both"):
        stratify(labels, time=np.ones(3), event=np.ones(3), outcome=np.ones(3), method="x")
    with pytest.raises(InputError, match="no outcome"):
        stratify(labels, method="x")
    with pytest.raises(InputError, match="0/1"):
        stratify(labels, outcome=np.array([0, 2, 1]), method="x")
    with pytest.raises(InputError, match="features has 2 rows but there are 3 labels"):
        stratify(labels, outcome=np.ones(3), features=pd.DataFrame({"a": [1, 2]}), method="x")
    with pytest.raises(InputError, match="labels are missing"):
        stratify(np.array(["a", None, "b"]), outcome=np.ones(3), method="x")


# ----------------------------------------------------------------------------- profiles
def _profiled(seed: int = 0, *, top_n: int = 3) -> Grouping:
    rng = np.random.default_rng(seed)
    n = 240
    labels = np.repeat(["C1", "C2", "C3"], n // 3)
    features = pd.DataFrame(rng.normal(size=(n, 6)), columns=[f"omics:g{i}" for i in range(6)])
    features["ehr.age"] = rng.normal(60, 10, size=n)
    features["bmi"] = rng.normal(27, 4, size=n)
    features["crp"] = rng.normal(5, 1, size=n)
    features.loc[labels == "C2", "omics:g3"] += 3.0  # the one feature that marks C2
    features.loc[labels == "C3", "ehr.age"] -= 25.0  # and C3 is younger
    features.iloc[::7, 0] = np.nan
    presence = pd.DataFrame({"omics": labels != "C1", "ehr": np.ones(n, dtype=bool)})
    outcome = (rng.uniform(size=n) < 0.3).astype(int)
    return stratify(
        labels,
        outcome=outcome,
        features=features,
        feature_modality={"bmi": "tabular"},
        presence=presence,
        method="kmeans",
        top_n=top_n,
    )


def test_profiles_name_the_separating_feature_first() -> None:
    g = _profiled()
    assert g.profiles is not None
    by_label = {p.label: p for p in g.profiles}
    top_c2 = by_label["C2"].top_features[0]
    assert (top_c2.feature, top_c2.modality) == ("omics:g3", "omics")
    assert top_c2.smd > 2 and top_c2.mean_in is not None and top_c2.mean_out is not None
    assert top_c2.mean_in - top_c2.mean_out == pytest.approx(3.0, abs=0.5)
    top_c3 = by_label["C3"].top_features[0]
    assert (top_c3.feature, top_c3.modality) == ("ehr.age", "ehr") and top_c3.smd < -2
    assert all(len(p.top_features) == 3 for p in g.profiles)
    assert by_label["C1"].modality_presence == {"omics": 0.0, "ehr": 1.0}
    assert by_label["C2"].modality_presence["omics"] == 1.0
    every = _profiled(top_n=100).profiles
    assert every is not None and len(every[0].top_features) == 9
    modalities = {f.feature: f.modality for f in every[0].top_features}
    assert modalities["bmi"] == "tabular" and modalities["crp"] == "unknown"


# ----------------------------------------------------------------------------- serialisation
def _check_keys(d: dict) -> None:
    assert set(d) == GROUPING_KEYS
    assert all(set(x) == GROUP_KEYS for x in d["groups"])
    if d["km"] is not None:
        assert all(set(c) == KM_KEYS for c in d["km"])
    if d["logrank"] is not None:
        assert set(d["logrank"]) == LOGRANK_KEYS
    if d["profiles"] is not None:
        assert all(set(p) == PROFILE_KEYS for p in d["profiles"])
        assert all(set(f) == FEATURE_KEYS for p in d["profiles"] for f in p["top_features"])


def test_to_dict_is_strict_json_with_the_grouping_keys() -> None:
    x, _ = _blobs(n=200, k=3)
    clusters = cluster_patients(x, seed=0)
    _, time, event = _cohort(200, effect=0.0, seed=1)
    features = pd.DataFrame(x, columns=[f"img:d{i}" for i in range(x.shape[1])])
    features["lab:all_missing"] = np.nan  # undefined SMD: left out, not NaN in JSON
    g = stratify(
        clusters.labels,
        time=time,
        event=event,
        features=features,
        presence=pd.DataFrame({"img": np.ones(200, dtype=bool)}),
        method="kmeans",
        silhouette=clusters.silhouette,
    )
    d = g.to_dict()
    _check_keys(d)
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    assert d["k"] == clusters.k == 3 and d["method"] == "kmeans"
    assert set(d["silhouette"]) == {"2", "3", "4", "5", "6"}
    assert "lab:all_missing" not in text
    assert d["logrank"]["df"] == 2
    binary = _profiled().to_dict()
    _check_keys(binary)
    json.dumps(binary, allow_nan=False)
    assert binary["km"] is None and binary["logrank"] is None


def test_stratify_is_deterministic() -> None:
    assert json.dumps(_profiled(seed=3).to_dict()) == json.dumps(_profiled(seed=3).to_dict())
    x, _ = _blobs(n=150, k=3, seed=8)
    _, time, event = _cohort(150, effect=0.3, seed=8)
    runs = [
        stratify(cluster_patients(x, k=3, seed=11).labels, time=time, event=event, method="kmeans")
        for _ in range(2)
    ]
    assert runs[0].to_dict() == runs[1].to_dict()
