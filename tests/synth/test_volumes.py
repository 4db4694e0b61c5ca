"""3-D volumes for a synthetic cohort: files a NIfTI reader opens, the imaging latent in the
lesion volume, the cohort.yaml that reads them."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import spearmanr

from medweave.errors import InputError
from medweave.synth.volumes import (
    SLICE_MM,
    lesion_fraction,
    lesion_volume_mm3,
    render_volume,
    write_volumes,
)

N = 12


def _fake_cohort(folder: Path) -> Path:
    """The files of a synthetic cohort that write_volumes and the imaging source read:
    truth, index and a cohort.yaml (no EHR, so building it is fast)."""
    folder.mkdir()
    (folder / "truth").mkdir()
    rng = np.random.default_rng(0)
    ids = [f"P{i:06d}" for i in range(1, N + 1)]
    counts = rng.integers(0, 5, N)
    area = np.where(counts > 0, rng.uniform(20, 500, N), 0.0)
    pd.DataFrame(
        {
            "patient_id": ids,
            "lesion_count": counts,
            "lesion_area_px": area,
            "img": np.log1p(area / 20),
            "has_imaging": np.arange(N) % 6 != 5,  # two without an image
        }
    ).to_parquet(folder / "truth" / "patients.parquet")
    pd.DataFrame(
        {
            "patient_id": ids,
            "index_date": pd.Timestamp("2020-06-15") + pd.to_timedelta(np.arange(N), "D"),
            "outcome": np.arange(N) % 2 == 0,
        }
    ).to_parquet(folder / "index.parquet")
    config = {
        "name": "tiny",
        "lookback_days": 1095,
        "index": {
            "rule": "column",
            "table": "index.parquet",
            "id_column": "patient_id",
            "date_column": "index_date",
        },
        "outcome": {"binary": {"column": "outcome"}},
        "sources": [{"name": "imaging", "type": "dicom", "path": "imaging"}],
    }
    (folder / "cohort.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = _fake_cohort(tmp_path_factory.mktemp("vol") / "cohort")
    write_volumes(folder, seed=3, shape=(32, 32), slices=(10, 16))
    return folder


def test_files_manifest_and_config(written: Path) -> None:
    with (written / "volumes" / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    truth = pd.read_parquet(written / "truth" / "patients.parquet")
    assert [r["patient_id"] for r in rows] == truth.loc[truth.has_imaging, "patient_id"].tolist()
    # no DICOM slice to take the date from: three days before the index date
    assert rows[0]["date"] == "2020-06-12"
    depths = set()
    for r in rows:
        img = nib.load(written / "volumes" / r["path"])
        assert img.shape[:2] == (32, 32)
        assert 10 <= img.shape[2] <= 16
        depths.add(img.shape[2])
        assert img.header.get_zooms()[2] == pytest.approx(SLICE_MM)
        assert img.header.get_zooms()[0] == pytest.approx(345.6 / 32)
    assert len(depths) > 1  # the slice count varies between patients
    config = yaml.safe_load((written / "cohort.yaml").read_text())
    assert config["sources"] == [
        {"name": "imaging", "type": "nifti", "path": "volumes", "manifest": "volumes/manifest.csv"}
    ]


def test_cohort_builds_with_volumes(written: Path) -> None:
    from medweave.cohort import build

    cohort = build(written / "cohort.yaml")
    block = cohort.modalities["imaging"]
    truth = pd.read_parquet(written / "truth" / "patients.parquet")
    assert block.present.tolist() == truth["has_imaging"].tolist()
    shapes = [tuple(v["shape"]) for v in block.meta["images"].values()]
    assert all(len(s) == 3 for s in shapes)


def test_same_seed_same_voxels(written: Path, tmp_path: Path) -> None:
    again = _fake_cohort(tmp_path / "again")
    write_volumes(again, seed=3, shape=(32, 32), slices=(10, 16))
    a = nib.load(written / "volumes" / "P000001.nii").get_fdata()
    b = nib.load(again / "volumes" / "P000001.nii").get_fdata()
    np.testing.assert_array_equal(a, b)
    other = _fake_cohort(tmp_path / "other")
    write_volumes(other, seed=4, shape=(32, 32), slices=(10, 16))
    c = nib.load(other / "volumes" / "P000001.nii").get_fdata()
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_lesion_volume_carries_the_latent() -> None:
    """The analyst's lesion fraction follows the lesion burden across patients, whatever
    their body, scanner and slice count."""
    totals = np.linspace(0, 6e5, 24)
    fracs = [
        lesion_fraction(render_volume(np.random.default_rng(i), total_mm3=t, count=3)[0])
        for i, t in enumerate(totals)
    ]
    assert spearmanr(totals, fracs).statistic > 0.8  # 0.84: nodules at the wall escape it
    assert max(fracs[:2]) < 0.02  # vessels only
    assert np.all(np.diff(lesion_volume_mm3(np.array([0.0, 10.0, 100.0]))) > 0)


def test_rendered_volume_matches_the_target() -> None:
    """Bright voxels added by the nodules (same body, with and without them) add up to
    the target volume."""
    vox = 345.6 / 64 * 345.6 / 64 * SLICE_MM
    hu0, _ = render_volume(np.random.default_rng(1), total_mm3=0.0, count=0)
    hu1, affine = render_volume(np.random.default_rng(1), total_mm3=150_000.0, count=2)
    assert hu0.shape == hu1.shape
    assert np.allclose(np.abs(np.diag(affine)[:3]), [345.6 / 64, 345.6 / 64, SLICE_MM])
    # lesions replace lung (-850 HU) by ~35 HU: the added intensity counts the volume
    # (the scanner's scale differs between the two draws, so compare thresholded voxels)
    added = ((hu1 > -400) & (hu0 < -400)).sum() * vox
    assert 0.7 * 150_000 < added < 1.2 * 150_000


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        write_volumes(tmp_path, seed=0)
    folder = _fake_cohort(tmp_path / "c")
    with pytest.raises(InputError, match="fmt"):
        write_volumes(folder, seed=0, fmt="dicom")
    with pytest.raises(InputError, match="3-D volume"):
        lesion_fraction(np.zeros((8, 8)))
