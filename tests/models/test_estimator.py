"""MultimodalEstimator: learning with missing modalities, determinism, bundles, tasks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.models.estimator import MultimodalEstimator

TABULAR = ["ehr", "omics", "environment"]
# The demo study's settings (lr, principal components), trained shorter.
FAST = {
    "max_epochs": 40,
    "patience": 8,
    "omics_top_genes": 300,
    "lr": 5e-4,
    "pca": {"ehr": 8, "omics": 16},
}


@pytest.fixture(scope="module")
def fused(split: tuple[Cohort, Cohort]) -> MultimodalEstimator:
    train, _ = split
    return MultimodalEstimator(
        preset="none", task="binary", modalities=TABULAR, fusion="concat", **FAST
    ).fit(train)


def test_fusion_is_far_above_chance_and_not_below_single_modalities(
    split: tuple[Cohort, Cohort], fused: MultimodalEstimator
) -> None:
    train, test = split
    y = test.patients["outcome"].to_numpy()
    fused_auc = roc_auc_score(y, fused.predict_proba(test))
    singles = {}
    for m in TABULAR:
        est = MultimodalEstimator(
            preset="none", task="binary", modalities=[m], fusion="concat", **FAST
        ).fit(train)
        singles[m] = roc_auc_score(y, est.predict_proba(test))
    # 240 test patients: an AUROC's standard error is about 0.035, so the margin over the
    # best single modality is measured in benchmarks/, on 2,000 patients with folds.
    assert fused_auc > 0.63, (fused_auc, singles)
    assert fused_auc > max(singles.values()) - 0.03, (fused_auc, singles)
    assert fused_auc > min(singles.values()) + 0.05, (fused_auc, singles)


def test_missing_modalities_keep_their_patients(
    split: tuple[Cohort, Cohort], fused: MultimodalEstimator
) -> None:
    _, test = split
    proba = fused.predict_proba(test)
    assert proba.shape == (test.n,) and np.isfinite(proba).all()
    lacking = ~test.modalities["omics"].present
    assert lacking.any()  # patients without omics still get predictions


def test_same_seed_same_predictions(split: tuple[Cohort, Cohort]) -> None:
    train, test = split
    params = {
        "task": "binary",
        "modalities": ["ehr", "environment"],
        "fusion": "gated",
        "max_epochs": 5,
        "patience": 5,
    }
    a = MultimodalEstimator(preset="none", **params).fit(train).predict_proba(test)
    b = MultimodalEstimator(preset="none", **params).fit(train).predict_proba(test)
    np.testing.assert_array_equal(a, b)


def test_sklearn_contract(fused: MultimodalEstimator) -> None:
    params = fused.get_params()
    assert params["fusion"] == "concat" and params["task"] == "binary"
    fresh = clone(fused)
    assert not hasattr(fresh, "net_")
    patients = pd.DataFrame({"patient_id": ["a"], "index_date": ["2020-01-01"]})
    with pytest.raises(InputError, match="not fitted"):
        fresh.predict_proba(Cohort(patients))


def test_bundle_reloads_in_a_fresh_process(
    split: tuple[Cohort, Cohort], fused: MultimodalEstimator, tmp_path: Path
) -> None:
    _, test = split
    fused.save(tmp_path / "bundle")
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == [
        "bundle.json",
        "model.safetensors",
    ]
    test.save(tmp_path / "cohort")
    expected = fused.predict_proba(test)
    np.save(tmp_path / "expected.npy", expected)
    code = (
        "import numpy as np, sys\n"
        "from medweave.cohort import Cohort\n"
        "from medweave.models.estimator import MultimodalEstimator\n"
        f"est = MultimodalEstimator.load({str(tmp_path / 'bundle')!r})\n"
        f"got = est.predict_proba(Cohort.load({str(tmp_path / 'cohort')!r}))\n"
        f"exp = np.load({str(tmp_path / 'expected.npy')!r})\n"
        "sys.exit(0 if np.array_equal(got, exp) else 3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_bundle_on_data_with_missing_features(
    split: tuple[Cohort, Cohort], fused: MultimodalEstimator, tmp_path: Path
) -> None:
    _, test = split
    fused.save(tmp_path / "b")
    est = MultimodalEstimator.load(tmp_path / "b")
    test = test.take(np.arange(test.n))  # a copy: the fixture is shared
    block = test.modalities["ehr"]
    block.feature_names = [
        f"renamed_{f}" if i < 2 else f for i, f in enumerate(block.feature_names)
    ]
    with pytest.raises(
        InputError, match=r"modality 'ehr': the model expects \d+ features; the cohort lacks 2"
    ):
        est.predict_proba(test)


def test_cox_survival(split: tuple[Cohort, Cohort]) -> None:
    train, test = split
    est = MultimodalEstimator(
        preset="none", task="cox", modalities=TABULAR, fusion="concat", **FAST
    ).fit(train)
    # Harrell's C on 240 test patients has a standard error of about 0.03: four above chance.
    assert est.score(test) > 0.62
    risk = est.predict_risk(test)
    assert risk.shape == (test.n,)


def test_auxiliary_heads_train_and_round_trip(split: tuple[Cohort, Cohort], tmp_path: Path) -> None:
    train, test = split
    est = MultimodalEstimator(
        preset="none",
        task="binary",
        modalities=["ehr", "omics"],
        fusion="late",
        aux_weight=0.5,
        max_epochs=3,
    ).fit(train)
    assert set(est.net_.aux_heads) == {"ehr", "omics"}
    est.save(tmp_path / "b")
    again = MultimodalEstimator.load(tmp_path / "b")
    np.testing.assert_array_equal(again.predict_proba(test), est.predict_proba(test))


def test_images_train_end_to_end(split: tuple[Cohort, Cohort]) -> None:
    """DICOM files are loaded (MONAI), encoded by the CNN and fused with the EHR."""
    train, test = split
    est = MultimodalEstimator(
        preset="none",
        task="binary",
        modalities=["ehr", "imaging"],
        fusion="gated",
        image_size=(32, 32),
        max_epochs=3,
    ).fit(train)
    proba = est.predict_proba(test)
    assert np.isfinite(proba).all()
    assert est.preps_["imaging"].input_shape() == (1, 32, 32)
    assert est.encoder_configs_["imaging"]["name"] == "image_cnn"


def test_min_epochs_holds_early_stopping_back(split: tuple[Cohort, Cohort]) -> None:
    train, _ = split
    settings = {**FAST, "patience": 1, "max_epochs": 12}
    early = MultimodalEstimator(preset="none", modalities=["environment"], **settings).fit(train)
    held = MultimodalEstimator(
        preset="none", modalities=["environment"], **settings, min_epochs=10
    ).fit(train)
    assert held.n_epochs_ >= 9 > early.n_epochs_


def test_image_intensity_window_is_applied_and_kept_in_bundles(
    split: tuple[Cohort, Cohort], tmp_path: Path
) -> None:
    """CT in HU through a fixed window lands in [0, 1]; the file's own window works too."""
    train, test = split
    common = {"modalities": ["imaging"], "image_size": (32, 32), "max_epochs": 1}
    est = MultimodalEstimator(preset="none", **common, image_intensity=(-1000, 400)).fit(train)
    block = test.modalities["imaging"]
    pixels = est.preps_["imaging"].transform(block).numpy()[block.present]
    assert pixels.min() == 0.0 and pixels.max() <= 1.0 and pixels.max() > 0.5
    zscored = (
        MultimodalEstimator(preset="none", **common).fit(train).preps_["imaging"].transform(block)
    )
    assert zscored.numpy()[block.present].min() < 0  # the default differs
    est.save(tmp_path / "window")
    again = MultimodalEstimator.load(tmp_path / "window")
    np.testing.assert_array_equal(again.predict_proba(test), est.predict_proba(test))
    header = MultimodalEstimator(preset="none", **common, image_intensity="window").fit(train)
    assert header.preps_["imaging"].transform(block).numpy().max() <= 1.0
    with pytest.raises(InputError, match="image_intensity 'hu' is not zscore"):
        MultimodalEstimator(preset="none", **common, image_intensity="hu").fit(train)


def test_pretrained_encoder_is_trained_once_and_shared(
    split: tuple[Cohort, Cohort], tmp_path: Path
) -> None:
    train, test = split
    store = tmp_path / "store"
    common = {**FAST, "pretrain": ["ehr"], "encoder_store": str(store)}
    single = MultimodalEstimator(preset="none", modalities=["ehr"], **common).fit(train)
    assert len(list(store.glob("*.safetensors"))) == 1
    fused = MultimodalEstimator(
        preset="none", modalities=["ehr", "omics"], fusion="late", **common
    ).fit(train)
    assert len(list(store.glob("*.safetensors"))) == 1  # reused, not trained again
    a = single.net_.encoders["ehr"].state_dict()
    b = fused.net_.encoders["ehr"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # ... and stays frozen while the rest of the network trains.
    assert not any(p.requires_grad for p in fused.net_.encoders["ehr"].parameters())
    # Without the store the same encoder comes out of training again.
    fresh = MultimodalEstimator(
        preset="none", modalities=["ehr"], **{**common, "encoder_store": None}
    )
    np.testing.assert_array_equal(fresh.fit(train).predict_proba(test), single.predict_proba(test))


def test_principal_components_are_fitted_on_training_rows_and_kept_in_bundles(
    split: tuple[Cohort, Cohort], tmp_path: Path
) -> None:
    train, test = split
    settings = {**FAST, "pca": {"omics": 6}}
    est = MultimodalEstimator(preset="none", modalities=["ehr", "omics"], **settings).fit(train)
    assert est.preps_["omics"].input_shape() == (6,)
    scores = est.preps_["omics"].transform(train.modalities["omics"]).numpy()
    present = train.modalities["omics"].present
    # Whitened scores: unit variance on the training patients who have omics.
    np.testing.assert_allclose(scores[present].std(axis=0, ddof=1), 1.0, rtol=0.05)
    est.save(tmp_path / "pca")
    again = MultimodalEstimator.load(tmp_path / "pca")
    np.testing.assert_array_equal(again.predict_proba(test), est.predict_proba(test))
    with pytest.raises(InputError, match=r"pca: \['omic'\] not among the cohort's modalities"):
        MultimodalEstimator(preset="none", modalities=["ehr"], **{**FAST, "pca": {"omic": 4}}).fit(
            train
        )


def test_iterative_feature_imputation_is_kept_in_bundles(
    split: tuple[Cohort, Cohort], tmp_path: Path
) -> None:
    train, test = split
    settings = {**FAST, "max_epochs": 5, "pca": None, "feature_imputation": "iterative"}
    est = MultimodalEstimator(preset="none", modalities=["ehr"], fusion="concat", **settings).fit(
        train
    )
    prep = est.preps_["ehr"]
    block = test.modalities["ehr"]
    gaps = np.isnan(block.x[:, prep.arrays["keep"].astype(bool)])
    assert gaps.any()  # labs never ordered
    x = prep.transform(block).numpy()
    # No indicator columns; every gap filled, and not with one value per feature.
    assert x.shape[1] == int(prep.arrays["keep"].sum())
    assert np.isfinite(x).all()
    column = int(np.argmax(gaps.sum(axis=0)))
    assert np.unique(np.round(x[gaps[:, column], column], 6)).size > 1
    est.save(tmp_path / "iterative")
    again = MultimodalEstimator.load(tmp_path / "iterative")
    np.testing.assert_array_equal(again.predict_proba(test), est.predict_proba(test))
    with pytest.raises(InputError, match="feature_imputation='mice'; expected 'median' or"):
        MultimodalEstimator(
            preset="none", modalities=["ehr"], feature_imputation="mice", **FAST
        ).fit(train)


def test_a_training_batch_is_gathered_exactly_as_rows_would_be_collated() -> None:
    from torch.utils.data import default_collate

    from medweave.models._prep import PreparedBatch, trim_padding
    from medweave.models.estimator import _Rows

    g = torch.Generator().manual_seed(0)
    n, length = 12, 6
    lengths = torch.tensor([1, 3, 2, 6, 0, 4, 2, 1, 5, 3, 2, 1])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    inputs = {
        "tab": torch.randn(n, 5, generator=g),
        "seq": {"codes": torch.randint(1, 9, (n, length), generator=g) * mask, "mask": mask},
    }
    masks = {"tab": torch.rand(n, generator=g) > 0.3, "seq": torch.ones(n, dtype=torch.bool)}
    target = torch.randn(n, 2, generator=g)
    ds = _Rows(PreparedBatch(inputs, masks), target, np.array([10, 2, 7, 0, 5, 4, 11]))
    idx = [6, 1, 4, 0]  # rows 11, 2, 5, 10 of the batch: longest sequence 4 of 6
    # The reference: torch's default collation of single rows, padding cut to the longest.
    x, k, y = default_collate([ds[i] for i in idx])
    one_by_one = ({m: trim_padding(v) for m, v in x.items()}, k, y)
    gathered = ds.__getitems__(idx)
    (xa, ka, ya), (xb, kb, yb) = one_by_one, gathered
    assert xb.keys() == xa.keys() and kb.keys() == ka.keys()
    torch.testing.assert_close(xb["tab"], xa["tab"], rtol=0, atol=0)
    assert xb["seq"]["codes"].shape == (4, 4)
    for key in ("codes", "mask"):
        assert torch.equal(xb["seq"][key], xa["seq"][key])
    for m in masks:
        assert torch.equal(kb[m], ka[m])
    assert torch.equal(yb, ya) and yb.shape == (4, 2)


@pytest.mark.parametrize("names", [["imagery"], ("imagery",)])
def test_pretrain_names_a_modality_of_the_cohort(
    split: tuple[Cohort, Cohort], names: list[str] | tuple[str, ...]
) -> None:
    train, _ = split
    with pytest.raises(InputError, match=r"pretrain: \['imagery'\] not among the cohort's"):
        MultimodalEstimator(preset="none", modalities=["ehr"], **{**FAST, "pretrain": names}).fit(
            train
        )


# --- images: the size follows the files ---------------------------------------------------


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """40 patients with 3-D NIfTI volumes of 16 x 16 x 12-20 voxels (the depth varies, as
    the slice counts of DICOM series do), built from a cohort.yaml; a blob's size carries
    the outcome."""
    import nibabel as nib

    from medweave.cohort import build

    root = tmp_path_factory.mktemp("volumes")
    (root / "nii").mkdir()
    rng = np.random.default_rng(0)
    n = 40
    outcome = np.arange(n) % 2
    rows = []
    for i in range(n):
        depth = (12, 16, 20)[i % 3]
        vol = rng.normal(size=(16, 16, depth)).astype(np.float32)
        r = 3 + 3 * outcome[i]
        vol[8 - r : 8 + r, 8 - r : 8 + r, depth // 2 - 2 : depth // 2 + 2] += 4.0
        nib.save(nib.Nifti1Image(vol, np.eye(4)), root / "nii" / f"p{i}.nii.gz")
        rows.append({"patient_id": f"p{i}", "path": f"p{i}.nii.gz", "date": "2020-01-01"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    pd.DataFrame(
        {"patient_id": [f"p{i}" for i in range(n)], "index_date": "2020-06-01", "y": outcome}
    ).to_csv(root / "index.csv", index=False)
    (root / "cohort.yaml").write_text(
        "index: {rule: column, table: index.csv}\n"
        "outcome: {binary: {column: y}}\n"
        "sources:\n  - {name: ct, type: nifti, path: nii, manifest: manifest.csv}\n"
    )
    return build(root / "cohort.yaml")


def test_volumes_train_with_the_default_image_size(volumes: Cohort, tmp_path: Path) -> None:
    """A 3-D source needs no image_size: one 3-D grid from the volumes' median shape."""
    est = MultimodalEstimator(preset="none", max_epochs=2, batch_size=16)
    assert est.image_size == "auto"
    est.fit(volumes)
    assert est.preps_["ct"].input_shape() == (1, 16, 16, 16)
    proba = est.predict_proba(volumes)
    assert proba.shape == (40,) and np.isfinite(proba).all()
    est.save(tmp_path / "b")
    again = MultimodalEstimator.load(tmp_path / "b")
    assert again.image_size == "auto"
    np.testing.assert_array_equal(again.predict_proba(volumes), proba)


def test_an_image_size_of_the_wrong_dimensionality_stops_before_training(
    volumes: Cohort, split: tuple[Cohort, Cohort]
) -> None:
    from medweave.models._prep_image import check_image_sizes, resolve_image_size

    slices = split[0].modalities["imaging"]
    assert resolve_image_size(slices, "auto") == (64, 64)  # the demo's 2-D slices, as before
    with pytest.raises(
        InputError,
        match=r"image_size=\[32, 32\] has 2 values, but modality 'ct' holds 3-D volumes; give "
        r"3 values \(e\.g\. \[32, 64, 64\]\) or 'auto'",
    ):
        MultimodalEstimator(preset="none", image_size=(32, 32), max_epochs=1).fit(volumes)
    with pytest.raises(InputError, match=r"estimator\.image_size=\[8, 8, 8\] has 3 values.*2-D"):
        check_image_sizes(split[0], ["ehr", "imaging"], [8, 8, 8], key="estimator.image_size")
    assert check_image_sizes(volumes, ["ct"], [8, 12, 12]) == {"ct": (8, 12, 12)}
    with pytest.raises(InputError, match=r"image_size='big'; expected 'auto'"):
        check_image_sizes(volumes, ["ct"], "big")


def test_auto_size_rule_and_mixed_blocks() -> None:
    """Per axis the median extent, 8 to 64 voxels, the thinnest axis at most 32; a block
    mixing 2-D and 3-D images (built other than by a reader) is refused naming a file."""
    from medweave.cohort import ModalityBlock
    from medweave.models._prep_image import resolve_image_size

    def block(shapes: list[list[int]]) -> ModalityBlock:
        ids = [f"p{i}" for i in range(len(shapes))]
        return ModalityBlock(
            name="ct",
            kind="image",
            ids=ids,
            x=np.zeros((len(ids), 0), dtype=np.float32),
            feature_names=[],
            paths=[f"/data/{i}.nii" for i in ids],
            meta={"images": {i: {"shape": s} for i, s in zip(ids, shapes, strict=True)}},
        )

    assert resolve_image_size(block([[120, 512, 512]] * 3), "auto") == (32, 64, 64)
    assert resolve_image_size(block([[512, 512, 40], [512, 512, 60]]), "auto") == (64, 64, 32)
    assert resolve_image_size(block([[4, 30, 30]]), "auto") == (8, 30, 30)
    assert resolve_image_size(block([[300, 200]]), "auto") == (64, 64)
    with pytest.raises(
        InputError,
        match=r"modality 'ct': /data/p2\.nii \(patient 'p2'\) is one of 1 2-D images \(shape "
        r"8 x 8\) among 2 3-D volumes",
    ):
        resolve_image_size(block([[8, 8, 8], [8, 8, 8], [8, 8]]), "auto")
