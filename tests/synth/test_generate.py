"""Determinism, missingness mechanisms, atomic writing and argument checks of the generator."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import duckdb
import numpy as np
import pandas as pd
import pydicom
import pytest

from medweave.errors import InputError
from medweave.synth import omics, synthesize
from medweave.synth.omop import CDM_TABLES


def _tables(path: Path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(path / "omop.duckdb"), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t}").df() for t in CDM_TABLES}
    finally:
        con.close()


def _snapshot(path: Path) -> dict[str, object]:
    snap: dict[str, object] = {f"omop.{k}": v for k, v in _tables(path).items()}
    for rel in ("index.parquet", "truth/patients.parquet", "environment/exposures.parquet"):
        snap[rel] = pd.read_parquet(path / rel)
    snap["expression"] = np.asarray(ad.read_h5ad(path / "omics" / "expression.h5ad").X)
    for f in sorted((path / "imaging").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        snap[f"dicom.{f.name}"] = (ds.pixel_array, ds.SOPInstanceUID, ds.StudyDate)
    snap["ceiling"] = (path / "truth" / "ceiling.json").read_text()
    return snap


def _assert_equal(a: object, b: object) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)  # type: ignore[arg-type]
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)  # type: ignore[arg-type]
    elif isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):  # type: ignore[call-overload]
            _assert_equal(x, y)
    else:
        assert a == b


def test_same_seed_same_cohort(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", n_patients=60, seed=3, workers=1)
    synthesize(tmp_path / "b", n_patients=60, seed=3, workers=2)
    a, b = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        _assert_equal(a[key], b[key])


def test_other_seed_other_cohort(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", n_patients=60, seed=3, workers=1)
    synthesize(tmp_path / "b", n_patients=60, seed=4, workers=1)
    ta = pd.read_parquet(tmp_path / "a" / "truth" / "patients.parquet")
    tb = pd.read_parquet(tmp_path / "b" / "truth" / "patients.parquet")
    assert not np.allclose(ta["risk_true"], tb["risk_true"])


@pytest.mark.parametrize("mechanism", ["mcar", "mar", "mnar"])
def test_missing_fraction_is_exact(tmp_path: Path, mechanism: str) -> None:
    summary = synthesize(
        tmp_path / "c", n_patients=200, seed=1, missing=0.25, mechanism=mechanism, workers=1
    )
    truth = pd.read_parquet(tmp_path / "c" / "truth" / "patients.parquet")
    incomplete = ~truth[["has_imaging", "has_omics", "has_environment"]].all(axis=1)
    assert incomplete.sum() == 50
    assert summary.present["ehr"] == 200


def test_no_missingness(tmp_path: Path) -> None:
    summary = synthesize(tmp_path / "c", n_patients=40, seed=1, missing=0.0, workers=1)
    assert set(summary.present.values()) == {40}


def test_mar_depends_on_observed_ehr(tmp_path: Path) -> None:
    synthesize(tmp_path / "c", n_patients=600, seed=2, missing=0.3, mechanism="mar", workers=1)
    truth = pd.read_parquet(tmp_path / "c" / "truth" / "patients.parquet")
    incomplete = ~truth[["has_imaging", "has_omics", "has_environment"]].all(axis=1)
    assert truth.loc[incomplete, "age_z"].mean() > truth.loc[~incomplete, "age_z"].mean() + 0.3


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(omics, "write_h5ad", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        synthesize(out, n_patients=30, seed=1, overwrite=True, workers=1)
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_overwrite_replaces(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "stale.txt").write_text("x")
    synthesize(out, n_patients=30, seed=1, overwrite=True, workers=1)
    assert not (out / "stale.txt").exists()
    assert (out / "index.parquet").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_patients": -5}, "--patients"),
        ({"missing": 1.0}, "--missing"),
        ({"missing": -0.1}, "--missing"),
        ({"mechanism": "random"}, "--mechanism"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    args = {"n_patients": 30, "seed": 1, **kwargs}
    with pytest.raises(InputError, match=match):
        synthesize(tmp_path / "c", **args)
    assert not (tmp_path / "c").exists()
