"""Bootstrap intervals and paired comparisons: exactness, coverage, determinism, speed."""

from __future__ import annotations

import json
import time as clock

import numpy as np
import pytest
from lifelines.utils import concordance_index
from scipy.special import expit
from scipy.stats import norm
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from medweave.errors import InputError
from medweave.evaluate import (
    bootstrap_ci,
    breslow_survival,
    classification_metrics,
    default_horizons,
    default_tau,
    metric_table,
    paired_bootstrap,
    paired_table,
    resample_weights,
    survival_metrics,
)


def binary(n: int, seed: int, *, shift: float = 1.0) -> dict[str, np.ndarray]:
    """Binormal scores: negatives N(0, 1), positives N(shift, 1); true AUROC Φ(shift/√2)."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.4).astype(int)
    score = rng.normal(size=n) + shift * y
    return {"y": y, "p": expit(score - 1.0)}


def survival(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = np.ceil(rng.exponential(400 * np.exp(-x)))
    t_censor = np.ceil(rng.uniform(1, 1200, n))
    return {
        "time": np.minimum(t_event, t_censor),
        "event": t_event <= t_censor,
        "risk": x + 0.7 * rng.normal(size=n),
    }


def _or_none(fn):  # type: ignore[no-untyped-def]
    """A scikit-learn metric that returns None on a one-class resample instead of raising."""
    return lambda y, p: None if y.min() == y.max() else fn(y, p)


def test_resample_weights_are_multinomial_counts_and_deterministic() -> None:
    blocks = list(resample_weights(50, 30, seed=3))
    w = np.concatenate(blocks)
    assert w.shape == (30, 50)
    assert np.all(w.sum(axis=1) == 50) and np.all(w >= 0)
    np.testing.assert_array_equal(w, np.concatenate(list(resample_weights(50, 30, seed=3))))
    assert not np.array_equal(w, np.concatenate(list(resample_weights(50, 30, seed=4))))
    assert sum(len(b) for b in resample_weights(3_000, 1_500, seed=0)) == 1_500  # in blocks


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("auroc", _or_none(roc_auc_score)),
        ("auprc", _or_none(average_precision_score)),
        ("brier", lambda y, p: brier_score_loss(y, p)),
        ("calibration_slope", lambda y, p: classification_metrics(y, p)["calibration_slope"]),
    ],
)
def test_weighted_binary_resamples_equal_metrics_on_resampled_patients(
    name: str, reference: object
) -> None:
    """The fast path (count weights) and a plain metric on each resample agree exactly."""
    arrays = binary(120, 0)
    arrays["p"] = np.round(arrays["p"], 2)  # ties
    fast = bootstrap_ci(name, arrays, n_boot=60, seed=5)
    slow = bootstrap_ci(reference, arrays, n_boot=60, seed=5)  # type: ignore[arg-type]
    for key in ("estimate", "ci_low", "ci_high"):
        assert fast[key] == pytest.approx(slow[key], abs=1e-9), key


def test_weighted_survival_resamples_equal_metrics_on_resampled_patients() -> None:
    d = survival(150, 1)
    d["risk"] = np.round(d["risk"], 1)
    times = default_horizons(d["time"], d["event"])
    d["surv"] = breslow_survival(d["time"], d["event"], d["risk"], d["risk"], times)
    # The horizons and the truncation time are fixed: those of every patient.
    tau = default_tau(d["time"])
    context = {"times": times, "train_time": d["time"], "train_event": d["event"], "tau": tau}
    harrell = bootstrap_ci("c_harrell", d, n_boot=40, seed=2, context=context)
    ref = bootstrap_ci(
        lambda time, event, risk, surv: concordance_index(time, -risk, event),
        d,
        n_boot=40,
        seed=2,
    )
    assert harrell == pytest.approx(ref, abs=1e-12)
    for name in ("c_uno", "td_auc", "ibs"):
        fast = bootstrap_ci(name, d, n_boot=40, seed=2, context=context)
        slow = bootstrap_ci(
            lambda time, event, risk, surv, n=name, **ctx: survival_metrics(
                time, event, risk, surv=surv, **ctx
            )[n],
            d,
            n_boot=40,
            seed=2,
            context=context,
        )
        assert fast == pytest.approx(slow, abs=1e-10), name


def test_auroc_interval_covers_truth_at_nominal_rate() -> None:
    shift, hits, reps = 1.0, 0, 150
    truth = norm.cdf(shift / np.sqrt(2))
    for seed in range(reps):
        ci = bootstrap_ci("auroc", binary(150, 100 + seed, shift=shift), n_boot=200, seed=seed)
        assert ci["ci_low"] is not None and ci["ci_high"] is not None
        hits += ci["ci_low"] <= truth <= ci["ci_high"]
    assert 0.86 <= hits / reps <= 0.99  # nominal 0.95; sd of the rate ≈ 0.018


def test_calibration_intervals_cover_perfect_calibration() -> None:
    reps, hits_slope, hits_int = 80, 0, 0
    for seed in range(reps):
        rng = np.random.default_rng(500 + seed)
        p = expit(rng.normal(-0.5, 1.2, 300))
        arrays = {"y": (rng.uniform(size=300) < p).astype(int), "p": p}
        table = metric_table("binary", arrays, n_boot=200, seed=seed)
        slope, intercept = table["calibration_slope"], table["calibration_intercept"]
        hits_slope += slope["ci_low"] <= 1.0 <= slope["ci_high"]  # type: ignore[operator]
        hits_int += intercept["ci_low"] <= 0.0 <= intercept["ci_high"]  # type: ignore[operator]
    assert 0.85 <= hits_slope / reps <= 1.0
    assert 0.85 <= hits_int / reps <= 1.0


def test_harrell_interval_covers_large_sample_value() -> None:
    big = survival(40_000, 999)
    truth = concordance_index(big["time"], -big["risk"], big["event"])
    reps, hits = 60, 0
    for seed in range(reps):
        ci = bootstrap_ci("c_harrell", survival(200, 2_000 + seed), n_boot=200, seed=seed)
        hits += ci["ci_low"] <= truth <= ci["ci_high"]  # type: ignore[operator]
    assert 0.83 <= hits / reps <= 1.0


def test_paired_bootstrap_detects_a_better_model() -> None:
    rng = np.random.default_rng(7)
    y = (rng.uniform(size=400) < 0.4).astype(int)
    good = expit(2.0 * y + rng.normal(size=400) - 1)
    poor = expit(0.4 * y + rng.normal(size=400) - 0.2)
    res = paired_bootstrap("auroc", {"y": y}, {"p": good}, {"p": poor}, n_boot=500, seed=1)
    assert res["difference"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, poor))
    assert res["ci_low"] > 0  # type: ignore[operator]
    assert res["p_value"] == pytest.approx(2 / 501)  # no resample favoured the poor model
    same = paired_bootstrap("auroc", {"y": y}, {"p": good}, {"p": good.copy()}, n_boot=200)
    assert same == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}


def test_paired_p_value_is_large_for_equally_good_models() -> None:
    rng = np.random.default_rng(8)
    y = (rng.uniform(size=400) < 0.4).astype(int)
    a = expit(y + rng.normal(size=400))
    b = expit(y + rng.normal(size=400))
    res = paired_bootstrap("auroc", {"y": y}, {"p": a}, {"p": b}, n_boot=500, seed=2)
    assert res["p_value"] > 0.05
    assert res["ci_low"] < 0 < res["ci_high"]  # type: ignore[operator]


def test_paired_table_shares_resamples_and_survival_context() -> None:
    d = survival(300, 9)
    times = default_horizons(d["time"], d["event"])
    rng = np.random.default_rng(0)
    noisy = d["risk"] + 2.0 * rng.normal(size=300)
    outcome = {"time": d["time"], "event": d["event"]}
    table = paired_table(
        "survival",
        outcome,
        {"risk": d["risk"]},
        {"risk": noisy},
        n_boot=200,
        context={"times": times},
    )
    assert set(table) == {"c_harrell", "c_uno", "td_auc", "ibs"}
    single = paired_bootstrap(
        "c_harrell",
        outcome,
        {"risk": d["risk"]},
        {"risk": noisy},
        n_boot=200,
        context={"times": times},
    )
    assert table["c_harrell"] == single
    assert table["c_harrell"]["p_value"] < 0.05  # type: ignore[operator]
    assert table["ibs"]["difference"] is None and table["ibs"]["p_value"] is None  # no surv


def test_undefined_metric_gives_none_and_valid_json() -> None:
    one_class = {"y": np.zeros(40), "p": np.linspace(0.1, 0.9, 40)}
    table = metric_table("binary", one_class, n_boot=50)
    assert table["auroc"] == {"estimate": None, "ci_low": None, "ci_high": None}
    assert table["brier"]["estimate"] is not None and table["brier"]["ci_low"] is not None
    json.dumps(table, allow_nan=False)


def test_bounds_none_when_most_resamples_are_undefined() -> None:
    # defined only when both patient 0 and patient 1 are drawn: about 40% of resamples
    def needs_both(x: np.ndarray) -> float | None:
        return float(x.mean()) if {0, 1} <= set(x.tolist()) else None

    res = bootstrap_ci(needs_both, {"x": np.arange(30)}, n_boot=400)
    assert res["estimate"] == pytest.approx(14.5)
    assert res["ci_low"] is None and res["ci_high"] is None
    # a rare positive: about 1/3 of resamples lack it, and those are skipped
    y = np.zeros(30)
    y[0] = 1
    rare = bootstrap_ci("auroc", {"y": y, "p": np.linspace(0.9, 0.1, 30)}, n_boot=400)
    assert rare["estimate"] == 1.0 and rare["ci_low"] == 1.0


def test_results_are_deterministic_given_seed() -> None:
    arrays = binary(300, 3)
    a = metric_table("binary", arrays, n_boot=100, seed=11)
    assert a == metric_table("binary", arrays, n_boot=100, seed=11)
    assert a != metric_table("binary", arrays, n_boot=100, seed=12)
    assert a["auroc"] == bootstrap_ci("auroc", arrays, n_boot=100, seed=11)


def test_level_and_zero_resamples() -> None:
    arrays = binary(300, 4)
    wide = bootstrap_ci("auroc", arrays, n_boot=300, level=0.99)
    narrow = bootstrap_ci("auroc", arrays, n_boot=300, level=0.5)
    assert wide["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < wide["ci_high"]  # type: ignore[operator]
    assert bootstrap_ci("auroc", arrays, n_boot=0)["ci_low"] is None
    with pytest.raises(InputError, match="level"):
        bootstrap_ci("auroc", arrays, level=95)


def test_bad_names_and_keys_are_explained() -> None:
    arrays = binary(50, 5)
    with pytest.raises(InputError, match="did you mean 'auroc'"):
        bootstrap_ci("aucroc", arrays)
    with pytest.raises(InputError, match="did you mean 'survival'"):
        metric_table("survivl", arrays)
    with pytest.raises(InputError, match="lack"):
        metric_table("binary", {"y": arrays["y"]})
    d = survival(50, 6)
    with pytest.raises(InputError, match="context="):
        metric_table("survival", {**d, "times": np.array([100.0])})
    with pytest.raises(InputError, match="did you mean 'risk'"):
        metric_table("survival", {"time": d["time"], "event": d["event"], "risks": d["risk"]})
    with pytest.raises(InputError, match="both in arrays"):
        paired_bootstrap("auroc", arrays, {"p": arrays["p"]}, {"p": arrays["p"]})


def test_metric_table_speed_on_a_study_sized_cohort() -> None:
    """2,000 patients × 1,000 resamples: a few seconds, not minutes (budget is generous so
    that a busy machine does not fail it; typical times are printed with -s)."""
    arrays = binary(2_000, 6)
    start = clock.perf_counter()
    metric_table("binary", arrays, n_boot=1_000)
    binary_seconds = clock.perf_counter() - start
    d = survival(2_000, 7)
    times = default_horizons(d["time"], d["event"])
    d["surv"] = breslow_survival(d["time"], d["event"], d["risk"], d["risk"], times)
    start = clock.perf_counter()
    table = metric_table("survival", d, n_boot=1_000, context={"times": times})
    survival_seconds = clock.perf_counter() - start
    print(f"metric_table: binary {binary_seconds:.1f} s, survival {survival_seconds:.1f} s")
    assert all(v["ci_low"] is not None for v in table.values())
    assert binary_seconds < 15 and survival_seconds < 40
