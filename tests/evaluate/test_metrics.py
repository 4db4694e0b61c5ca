"""Metrics and curves against scikit-learn, lifelines, torchsurv and hand computations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.utils import concordance_index
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve
from torchsurv.metrics.auc import Auc
from torchsurv.metrics.brier_score import BrierScore
from torchsurv.metrics.cindex import ConcordanceIndex
from torchsurv.stats.ipcw import get_ipcw

from medweave.errors import InputError
from medweave.evaluate import (
    breslow_survival,
    calibration_points,
    classification_metrics,
    default_horizons,
    default_tau,
    pr_points,
    roc_points,
    survival_metrics,
    td_auc_curve,
)
from medweave.evaluate._metrics import _censoring_survival


def binary_data(n: int, seed: int, *, rounded: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes and imperfect probabilities; rounding makes many tied scores."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = (rng.uniform(size=n) < expit(1.5 * x - 1.0)).astype(int)
    p = expit(1.2 * x - 0.8 + 0.4 * rng.normal(size=n))
    return y, np.round(p, 2) if rounded else p


def survival_data(n: int, seed: int) -> dict[str, np.ndarray]:
    """Day-resolution times (many ties), censoring, risk rounded to 0.1 (tied risks)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = np.ceil(rng.exponential(500 * np.exp(-x)))
    t_censor = np.ceil(rng.uniform(1, 1500, n))
    return {
        "time": np.minimum(t_event, t_censor),
        "event": t_event <= t_censor,
        "risk": np.round(x + 0.5 * rng.normal(size=n), 1),
    }


# ---------------------------------------------------------------- binary


def test_classification_metrics_match_sklearn() -> None:
    y, p = binary_data(600, 0)
    m = classification_metrics(y, p)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["auprc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)


def test_calibration_slope_and_intercept_match_reference_fits() -> None:
    y, p = binary_data(800, 1, rounded=False)
    lp = logit(np.clip(p, 1e-6, 1 - 1e-6))
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(lp[:, None], y)

    def nll(a: float) -> float:
        eta = a + lp
        return float(-(y * eta - np.logaddexp(0.0, eta)).sum())

    citl = minimize_scalar(nll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-10}).x
    m = classification_metrics(y, p)
    assert m["calibration_slope"] == pytest.approx(lr.coef_[0, 0], abs=1e-6)
    assert m["calibration_intercept"] == pytest.approx(citl, abs=1e-6)


def test_calibration_recovers_known_miscalibration() -> None:
    rng = np.random.default_rng(2)
    lp_true = rng.normal(-0.5, 1.2, 20_000)
    y = (rng.uniform(size=lp_true.size) < expit(lp_true)).astype(int)
    good = classification_metrics(y, expit(lp_true))
    assert good["calibration_slope"] == pytest.approx(1.0, abs=0.05)
    assert good["calibration_intercept"] == pytest.approx(0.0, abs=0.05)
    over = classification_metrics(y, expit(2.0 * lp_true))  # overconfident: slope 1/2
    assert over["calibration_slope"] == pytest.approx(0.5, abs=0.03)
    shifted = classification_metrics(y, expit(lp_true - 1.0))  # predicts too low
    assert shifted["calibration_intercept"] == pytest.approx(1.0, abs=0.05)


def test_one_class_gives_none_except_brier() -> None:
    p = np.array([0.1, 0.4, 0.3, 0.8])
    m = classification_metrics(np.zeros(4), p)
    assert m["auroc"] is m["auprc"] is None
    assert m["calibration_slope"] is m["calibration_intercept"] is None
    assert m["brier"] == pytest.approx(np.mean(p**2))
    json.dumps(m, allow_nan=False)
    assert roc_points(np.ones(4), p) == {"x": [], "y": []}
    assert pr_points(np.ones(4), p) == {"x": [], "y": []}


def test_perfect_separation_leaves_calibration_undefined() -> None:
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert m["auroc"] == 1.0
    assert m["calibration_slope"] is None


def test_binary_inputs_are_validated() -> None:
    with pytest.raises(InputError, match="not 0/1"):
        classification_metrics(np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        classification_metrics(np.array([0, 1]), np.array([0.1, 1.2]))
    with pytest.raises(InputError, match="p has 2 values, expected 3"):
        classification_metrics(np.array([0, 1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(InputError, match="missing or infinite"):
        classification_metrics(np.array([0, 1]), np.array([0.1, np.nan]))


# ---------------------------------------------------------------- curves


def test_roc_points_follow_sklearn_and_are_downsampled() -> None:
    y, p = binary_data(150, 3)
    fpr, tpr, _ = roc_curve(y, p)
    assert len(fpr) <= 200
    pts = roc_points(y, p)
    np.testing.assert_allclose(pts["x"], fpr)
    np.testing.assert_allclose(pts["y"], tpr)
    y, p = binary_data(5000, 4, rounded=False)
    pts = roc_points(y, p)
    assert 100 < len(pts["x"]) <= 200
    assert (pts["x"][0], pts["y"][0]) == (0.0, 0.0)
    assert (pts["x"][-1], pts["y"][-1]) == (1.0, 1.0)
    assert np.all(np.diff(pts["x"]) >= 0)


def test_pr_points_by_increasing_recall() -> None:
    y, p = binary_data(5000, 5, rounded=False)
    pts = pr_points(y, p)
    assert len(pts["x"]) <= 200
    assert pts["x"][0] == 0.0 and pts["x"][-1] == 1.0
    assert np.all(np.diff(pts["x"]) >= 0)
    assert pts["y"][-1] == pytest.approx(y.mean())  # recall 1: precision is the prevalence


def test_calibration_points_are_quantile_bins() -> None:
    y, p = binary_data(1000, 6, rounded=False)
    pts = calibration_points(y, p, n_bins=10)
    assert pts["n"] == [100] * 10
    order = np.argsort(p)
    first = order[:100]
    assert pts["predicted"][0] == pytest.approx(p[first].mean())
    assert pts["observed"][0] == pytest.approx(y[first].mean())
    assert np.all(np.diff(pts["predicted"]) > 0)
    tied = calibration_points(np.array([0, 1, 0, 1]), np.array([0.2, 0.2, 0.2, 0.7]), n_bins=4)
    assert sum(tied["n"]) == 4


# ---------------------------------------------------------------- survival


def test_harrell_matches_lifelines_with_ties() -> None:
    d = survival_data(500, 7)
    assert len(np.unique(d["time"])) < 500 and len(np.unique(d["risk"])) < 100
    m = survival_metrics(d["time"], d["event"], d["risk"])
    ref = concordance_index(d["time"], -d["risk"], d["event"])
    assert m["c_harrell"] == pytest.approx(ref, abs=1e-12)


def test_harrell_tie_rules_by_hand() -> None:
    # Pairs: event at 5 vs censored at 5 is comparable (the censored outlived it);
    # two events at 5 are not. Risks: 1 (event, t=5), 1 (event, t=5), 0 (censored, t=5),
    # 2 (event, t=9). Comparable: (0,2) concordant, (1,2) concordant, (0,3) discordant,
    # (1,3) discordant -> 2/4.
    time = np.array([5.0, 5.0, 5.0, 9.0])
    event = np.array([True, True, False, True])
    risk = np.array([1.0, 1.0, 0.0, 2.0])
    m = survival_metrics(time, event, risk, times=[6.0])
    assert m["c_harrell"] == 0.5
    assert concordance_index(time, -risk, event) == 0.5


def test_close_risks_are_not_ties() -> None:
    # torchsurv (0.2.0) compares risks in float32 and scores this perfect ranking 0.7.
    time = np.arange(5.0, 0.0, -1.0)
    event = np.ones(5, dtype=bool)
    risk = 1000.0 + np.arange(5) * 1e-5
    assert survival_metrics(time, event, risk, times=[2.0])["c_harrell"] == 1.0
    assert concordance_index(time, -risk, event) == 1.0


def test_uno_equals_harrell_without_censoring() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=400)
    time = np.ceil(rng.exponential(300 * np.exp(-x)))
    event = np.ones(400, dtype=bool)
    risk = np.round(x + rng.normal(size=400), 1)
    # Untruncated (tau=inf): every weight is 1.
    m = survival_metrics(time, event, risk, train_time=time, train_event=event, tau=np.inf)
    ref = concordance_index(time, -risk, event)
    assert m["c_harrell"] == pytest.approx(ref, abs=1e-12)
    assert m["c_uno"] == pytest.approx(ref, abs=1e-12)


def test_censoring_survival_matches_torchsurv_and_lifelines() -> None:
    d = survival_data(300, 9)
    at = np.linspace(0, 1600, 57)
    g = _censoring_survival(d["time"], d["event"], at, left=False)
    ipcw = get_ipcw(torch.tensor(d["event"]), torch.tensor(d["time"]), torch.tensor(at)).numpy()
    ok = g > 0
    # torchsurv's Kaplan-Meier runs in float32, hence the tolerance
    np.testing.assert_allclose(1.0 / g[ok], ipcw[ok], rtol=1e-5)
    # without tied times, the reverse Kaplan-Meier is lifelines' KM of the censoring times
    rng = np.random.default_rng(10)
    t = rng.uniform(0, 100, 200)
    e = rng.uniform(size=200) < 0.6
    km = KaplanMeierFitter().fit(t, event_observed=~e)
    at = np.sort(rng.uniform(0, 100, 40))
    np.testing.assert_allclose(
        _censoring_survival(t, e, at, left=False), km.survival_function_at_times(at).to_numpy()
    )
    # left limit: just before a censoring time the drop has not happened yet
    tc = np.sort(t[~e])[3]
    left = _censoring_survival(t, e, np.array([tc]), left=True)
    assert left[0] == pytest.approx(km.survival_function_at_times(tc - 1e-9).iloc[0])


def ipcw_left(train: dict[str, np.ndarray], time: np.ndarray) -> np.ndarray:
    g = _censoring_survival(train["time"], train["event"], time, left=True)
    return np.divide(1.0, g, out=np.zeros_like(g), where=g > 0)


def test_uno_td_auc_and_ibs_match_torchsurv() -> None:
    test, train = survival_data(400, 11), survival_data(600, 12)
    times = default_horizons(test["time"], test["event"])
    surv = breslow_survival(train["time"], train["event"], train["risk"], test["risk"], times)
    m = survival_metrics(
        test["time"],
        test["event"],
        test["risk"],
        surv=surv,
        times=times,
        train_time=train["time"],
        train_event=train["event"],
        tau=np.inf,  # torchsurv does not truncate
    )
    w = torch.tensor(ipcw_left(train, test["time"]))
    g_t = _censoring_survival(train["time"], train["event"], times, left=False)
    ev, tt, risk = (torch.tensor(test[k]) for k in ("event", "time", "risk"))
    uno = ConcordanceIndex()(risk, ev, tt, weight=w)
    assert m["c_uno"] == pytest.approx(float(uno), abs=1e-10)
    auc = Auc()(
        risk, ev, tt, new_time=torch.tensor(times), weight=w, weight_new_time=torch.tensor(1 / g_t)
    )
    curve = td_auc_curve(
        test["time"],
        test["event"],
        test["risk"],
        times=times,
        train_time=train["time"],
        train_event=train["event"],
    )
    # torchsurv divides integer control counts in float32, hence the tolerance
    np.testing.assert_allclose(curve["auc"], auc.numpy(), rtol=0, atol=1e-6)
    assert curve["times"] == times.tolist()
    assert m["td_auc"] == pytest.approx(float(auc.mean()), abs=1e-6)
    brier = BrierScore()
    brier(
        torch.tensor(surv),
        ev,
        tt,
        new_time=torch.tensor(times),
        weight=w,
        weight_new_time=torch.tensor(1 / g_t),
    )
    assert m["ibs"] == pytest.approx(float(brier.integral()), abs=1e-10)


def test_td_auc_is_weighted_auc_of_cases_against_controls() -> None:
    d = survival_data(300, 13)
    t = 200.0
    curve = td_auc_curve(d["time"], d["event"], d["risk"], times=[t])
    case = (d["time"] <= t) & d["event"]
    control = d["time"] > t
    keep = case | control
    weight = np.where(case, ipcw_left(d, d["time"]), 1.0)
    ref = roc_auc_score(case[keep], d["risk"][keep], sample_weight=weight[keep])
    assert curve["auc"][0] == pytest.approx(ref, abs=1e-12)


def test_brier_score_by_hand() -> None:
    # No censoring: G = 1, so the Brier score at t is the mean of (1{T > t} - S(t))^2.
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.ones(4, dtype=bool)
    surv = np.array([0.2, 0.5, 0.7, 0.9])
    m = survival_metrics(time, event, np.zeros(4), surv=surv[:, None], times=[2.5])
    alive = (time > 2.5).astype(float)
    assert m["ibs"] == pytest.approx(np.mean((alive - surv) ** 2))


def test_breslow_matches_lifelines_cox() -> None:
    rng = np.random.default_rng(14)
    x = rng.normal(size=(300, 2))
    t_event = np.ceil(rng.exponential(100 * np.exp(-x @ [1.0, 0.5])))
    t_censor = np.ceil(rng.uniform(0, 300, 300))
    df = pd.DataFrame(
        {"a": x[:, 0], "b": x[:, 1], "T": np.minimum(t_event, t_censor), "E": t_event <= t_censor}
    )
    cph = CoxPHFitter().fit(df, "T", "E")
    risk = np.asarray(cph.predict_log_partial_hazard(df[["a", "b"]]))
    # lifelines interpolates linearly between its baseline steps, so compare at durations
    times = cph.baseline_cumulative_hazard_.index.to_numpy()[[5, 20, 40]]
    ref = cph.predict_survival_function(df[["a", "b"]].iloc[:25], times=times).to_numpy().T
    got = breslow_survival(df["T"], df["E"], risk, risk[:25], times)
    np.testing.assert_allclose(got, ref, atol=1e-10)
    # the Breslow hazard is invariant to shifting all scores
    np.testing.assert_allclose(
        breslow_survival(df["T"], df["E"], risk + 50, risk[:25] + 50, times), got, atol=1e-10
    )


def test_default_horizons_inside_follow_up() -> None:
    d = survival_data(500, 15)
    h = default_horizons(d["time"], d["event"])
    ev = d["time"][d["event"]]
    assert 1 <= len(h) <= 5
    assert h[0] >= np.quantile(ev, 0.1) - 1e-9 and h[-1] <= np.quantile(ev, 0.8) + 1e-9
    assert h.max() < d["time"].max() and np.all(np.diff(h) > 0)
    assert len(default_horizons(d["time"], d["event"], n=2)) == 2
    with pytest.raises(InputError, match="no events"):
        default_horizons(d["time"], np.zeros(500, dtype=bool))


def test_undefined_survival_metrics_are_none() -> None:
    d = survival_data(100, 16)
    none = survival_metrics(d["time"], np.zeros(100, dtype=bool), d["risk"])
    assert none == {"c_harrell": None, "c_uno": None, "td_auc": None, "ibs": None}
    no_surv = survival_metrics(d["time"], d["event"], d["risk"])
    assert no_surv["ibs"] is None and no_surv["c_harrell"] is not None
    json.dumps(none, allow_nan=False)


def test_survival_inputs_are_validated() -> None:
    d = survival_data(50, 17)
    with pytest.raises(InputError, match="surv has shape"):
        survival_metrics(d["time"], d["event"], d["risk"], surv=np.ones((50, 2)), times=[100.0])
    with pytest.raises(InputError, match="without times"):
        survival_metrics(d["time"], d["event"], d["risk"], surv=np.ones((50, 2)))
    with pytest.raises(InputError, match="strictly increasing"):
        survival_metrics(d["time"], d["event"], d["risk"], times=[200.0, 100.0])
    with pytest.raises(InputError, match="negative"):
        survival_metrics(-d["time"], d["event"], d["risk"])
    with pytest.raises(InputError, match="both train_time and train_event"):
        survival_metrics(d["time"], d["event"], d["risk"], train_time=d["time"])


def _late_censoring(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """300 patients whose study ends after 1,000-1,400 days, five of them followed for ten
    years; two of those die late (days 2,000 and 2,500), and the model ranked them lowest.
    The censoring survival is ~0.03 by then, so each such pair weighs ~1,000 early ones."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=300)
    risk = x + rng.normal(0, 0.5, 300)
    t_event = np.ceil(rng.exponential(3000 * np.exp(-x)))
    follow = np.ceil(rng.uniform(1000, 1400, 300))
    follow[:5] = 3650
    event = t_event <= follow
    time = np.minimum(t_event, follow)
    time[:2], event[:2], risk[:2] = (2000, 2500), True, risk.min() - 1
    time[2:5], event[2:5] = 3650, False
    return time, event, risk


def test_uno_is_truncated_at_a_high_quantile_of_follow_up_by_default() -> None:
    time, event, risk = _late_censoring(0)
    untruncated = survival_metrics(time, event, risk, tau=np.inf)
    harrell = untruncated["c_harrell"]
    assert harrell is not None and harrell > 0.7
    # Two late pairs carry most of the weight: Uno's C without truncation is degenerate.
    assert untruncated["c_uno"] is not None and untruncated["c_uno"] < harrell - 0.1
    tau = default_tau(time)
    assert tau == np.quantile(time, 0.8)
    m = survival_metrics(time, event, risk)
    assert m["c_uno"] == pytest.approx(harrell, abs=0.02)
    assert m == survival_metrics(time, event, risk, tau=tau)
    with pytest.raises(InputError, match="tau must be a time > 0"):
        survival_metrics(time, event, risk, tau=0.0)


def test_default_horizons_stay_within_the_truncation_time() -> None:
    # Three patients in five censored within 200 days, deaths spread over 1,000: the
    # event-time quantiles pass the 80th percentile of follow-up, where few are followed.
    rng = np.random.default_rng(0)
    t_event = rng.uniform(10, 1000, 1000)
    censor = np.where(rng.random(1000) < 0.6, rng.uniform(10, 200, 1000), 1000)
    event = t_event <= censor
    time = np.minimum(t_event, censor).round()
    tau = default_tau(time)
    assert np.quantile(time[event], 0.8) > tau
    horizons = default_horizons(time, event)
    assert len(horizons) == 3 and (horizons <= tau).all()
    assert horizons[0] == np.quantile(time[event], 0.1)
