"""The many-cohort benchmark's bookkeeping: which model is multimodal or a peer, the
verdicts against the target, and the scenarios' knobs (no study is run here: a default
study takes minutes)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_cohorts

        yield bench_cohorts
    finally:
        sys.path.remove(str(BENCH))


def _result(
    bench: ModuleType,
    name: str,
    scores: list[tuple[str, str, float]],
    *,
    ceiling: float | None = None,
    source: str = "synthetic",
) -> Any:
    models = [bench.ModelScore(n, k, e, e - 0.03, e + 0.03) for n, k, e in scores]
    return bench.CohortResult(
        name=name,
        source=source,
        what=name,
        task="binary",
        n_patients=100,
        n_events=30,
        models=models,
        ceiling=ceiling,
        repeats=1,
        seconds=60.0,
    )


def test_best_models_and_verdicts(bench: ModuleType) -> None:
    r = _result(
        bench,
        "a",
        [
            ("single:ehr", "single", 0.90),  # a single modality is neither group
            ("fusion:concat", "fusion", 0.80),
            ("stack", "stack", 0.82),
            ("lightgbm", "lightgbm", 0.81),
            ("elasticnet", "elasticnet", 0.79),
        ],
        ceiling=0.86,
    )
    assert r.best("multimodal").name == "stack"
    assert r.best("peer").name == "lightgbm"
    assert r.difference() == pytest.approx(0.01)
    assert r.gap() == pytest.approx(-0.04)
    assert bench.verdict_level(r) == "met"
    # a difference that rounds to 0.000 at the reported precision is a tie: level
    tie = _result(
        bench, "tie", [("fusion:gated", "fusion", 0.9952), ("lightgbm", "lightgbm", 0.9955)]
    )
    assert bench.verdict_level(tie) == "met"
    ahead = _result(bench, "ahead", [("fusion:late", "fusion", 0.80), ("coxph", "coxph", 0.79)])
    lines = bench.target_summary([tie, ahead])
    assert "behind" not in lines[1]
    # without a synthetic scenario the ceiling part of the target is said to be unmeasured
    assert lines[0].endswith("the ceiling part is not measured (no synthetic scenario ran).")
    assert bench.verdict_ceiling(r) == "not met, by 0.010"


def test_target_summary_counts_every_cohort(bench: ModuleType) -> None:
    ahead = _result(
        bench, "ahead", [("fusion:late", "fusion", 0.80), ("coxph", "coxph", 0.75)], ceiling=0.81
    )
    behind = _result(
        bench,
        "behind",
        [("fusion:late", "fusion", 0.70), ("coxnet", "coxnet", 0.72)],
        source="pkg 1.0 (MIT)",
    )
    lines = bench.target_summary([ahead, behind])
    assert "**not met**" in lines[0]
    assert "1 of 2 cohorts; behind on behind (-0.020)" in lines[1]
    assert "+0.015" in lines[2] and "ahead" in lines[2]
    assert "1 of 1 synthetic" in lines[3]
    assert "**met**" in bench.target_summary([ahead])[0]
    text = bench.render([ahead, behind], command="bench", quick=True, folds=3, real_note=None)
    assert "## Synthetic scenarios" in text and "### behind" in text
    assert "no `stack` model" in text


def test_scenarios_are_affordable_and_distinct() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from _scenarios import SCENARIOS, quick_patients
    finally:
        sys.path.remove(str(BENCH))
    assert len(SCENARIOS) >= 8
    assert all(s.patients <= 2000 for s in SCENARIOS.values())
    assert {s.task for s in SCENARIOS.values()} == {"binary", "survival"}
    knobs = {
        (s.patients, s.missing, s.mechanism, repr(s.knobs.to_dict())) for s in SCENARIOS.values()
    }
    assert len(knobs) == len(SCENARIOS) - 1  # baseline and baseline-survival share a draw
    assert quick_patients(2000) == 400 and quick_patients(400) == 300


def test_stack_of_peers_is_not_multimodal(bench: ModuleType) -> None:
    peers_only = _result(
        bench, "p", [("stack", "stack", 0.80), ("lightgbm", "lightgbm", 0.78)], ceiling=0.85
    )
    assert peers_only.best("multimodal") is None and peers_only.difference() is None
    assert bench.verdict_level(peers_only) == "—"
    with_fusion = _result(
        bench,
        "f",
        [("stack", "stack", 0.80), ("fusion:late", "fusion", 0.70), ("coxph", "coxph", 0.78)],
    )
    assert with_fusion.best("multimodal").name == "stack"
