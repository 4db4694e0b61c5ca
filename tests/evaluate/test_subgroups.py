"""Subgroup tables and age bands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from medweave.errors import InputError
from medweave.evaluate import (
    BINARY_METRICS,
    age_bands,
    default_horizons,
    metric_table,
    subgroup_table,
)


def cohort(n: int, seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    age = rng.uniform(30, 95, n)
    sex = rng.choice(["F", "M"], n)
    y = (rng.uniform(size=n) < 0.35).astype(int)
    p = expit(1.5 * y + rng.normal(size=n) - 1.0)
    groups = pd.DataFrame({"age": age_bands(age), "sex": sex})
    return groups, {"y": y, "p": p}


def test_age_bands_labels_and_order() -> None:
    bands = age_bands(np.array([10, 49.9, 50, 64.99, 65, 79.5, 80, 101, np.nan]))
    assert list(bands.categories) == ["<50", "50-64", "65-79", "80+"]
    assert bands.ordered
    assert list(bands.astype(object)[:8]) == [
        "<50",
        "<50",
        "50-64",
        "50-64",
        "65-79",
        "65-79",
        "80+",
        "80+",
    ]
    assert pd.isna(bands[8])
    assert list(age_bands([40, 70], edges=(60,)).categories) == ["<60", "60+"]
    with pytest.raises(InputError, match="increasing"):
        age_bands([40], edges=(65, 50))


def test_subgroup_table_rows_match_metric_table_on_each_level() -> None:
    groups, arrays = cohort(600, 0)
    rows = subgroup_table("binary", groups, arrays, n_boot=50, seed=3)
    assert [(r["variable"], r["level"]) for r in rows] == [
        ("age", "<50"),
        ("age", "50-64"),
        ("age", "65-79"),
        ("age", "80+"),
        ("sex", "F"),
        ("sex", "M"),
    ]
    female = groups["sex"].to_numpy() == "F"
    row = rows[4]
    assert row["n"] == female.sum() and row["n_events"] == arrays["y"][female].sum()
    expected = metric_table("binary", {k: v[female] for k, v in arrays.items()}, n_boot=50, seed=3)
    assert row["metrics"] == expected
    assert sum(r["n"] for r in rows if r["variable"] == "age") == 600
    json.dumps(rows, allow_nan=False)


def test_small_missing_and_eventless_levels_are_reported_not_dropped() -> None:
    groups, arrays = cohort(300, 1)
    site = np.array(["a"] * 200 + ["b"] * 90 + ["c"] * 10, dtype=object)
    site[:5] = None
    arrays["y"][200:290] = 0  # site b: no events
    groups = pd.DataFrame({"site": site})
    rows = {r["level"]: r for r in subgroup_table("binary", groups, arrays, n_boot=30)}
    assert list(rows) == ["a", "b", "c", "missing"]
    assert rows["missing"]["n"] == 5 and rows["c"]["n"] == 10
    for small in ("c", "missing"):  # under min_n: listed, every metric None
        assert set(rows[small]["metrics"]) == set(BINARY_METRICS)
        assert all(v["estimate"] is None for v in rows[small]["metrics"].values())
    b = rows["b"]
    assert b["n_events"] == 0
    assert b["metrics"]["auroc"]["estimate"] is None
    assert b["metrics"]["brier"]["estimate"] is not None  # defined without events


def test_survival_subgroups_share_the_cohort_horizons() -> None:
    rng = np.random.default_rng(2)
    n = 400
    x = rng.normal(size=n)
    t_event = np.ceil(rng.exponential(400 * np.exp(-x)))
    t_censor = np.ceil(rng.uniform(1, 1200, n))
    arrays = {
        "time": np.minimum(t_event, t_censor),
        "event": t_event <= t_censor,
        "risk": x + rng.normal(size=n),
    }
    groups = pd.DataFrame({"arm": np.where(np.arange(n) < 200, "control", "treated")})
    rows = subgroup_table("survival", groups, arrays, n_boot=40, seed=1)
    assert [r["level"] for r in rows] == ["control", "treated"]
    first = {k: v[:200] for k, v in arrays.items()}
    context = {
        "times": default_horizons(arrays["time"], arrays["event"]),
        "train_time": arrays["time"],
        "train_event": arrays["event"],
    }
    expected = metric_table("survival", first, n_boot=40, seed=1, context=context)
    assert rows[0]["metrics"] == expected
    assert rows[0]["metrics"]["c_harrell"]["estimate"] is not None


def test_subgroup_inputs_are_validated() -> None:
    groups, arrays = cohort(100, 3)
    with pytest.raises(InputError, match="same patients"):
        subgroup_table("binary", groups.iloc[:50], arrays)
    with pytest.raises(InputError, match="DataFrame"):
        subgroup_table("binary", groups["sex"], arrays)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown task"):
        subgroup_table("regression", groups, arrays)
