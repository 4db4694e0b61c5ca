"""Event sequences end to end: the fold-fitted preprocessing, the ``gru`` and ``transformer``
encoders in the estimator, bundles, and bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.numpy import load_file
from sklearn.metrics import roc_auc_score

from medweave.cohort import Cohort, ModalityBlock, build
from medweave.errors import InputError
from medweave.models._prep import ModalityPrep, fit_preps, prepare, take_rows, trim_padding
from medweave.models.encoders import InputSpec, build_encoder
from medweave.models.estimator import MultimodalEstimator

YAML = """\
name: sequences
lookback_days: 1095
index: {rule: column, table: index.parquet}
outcome:
  binary: {column: outcome}
sources:
  - {name: ehr_seq, type: omop, database: omop.duckdb, form: sequence}
  - {name: ehr, type: omop, database: omop.duckdb}
"""
N_PATIENTS = 400
# Small encoders, many short steps: about 8 s per model on one CPU thread. The GRU's
# validation loss can stay flat for a few epochs before it falls: patience 10, not 5.
FAST = {
    "preset": "none",
    "fusion": "concat",
    "batch_size": 32,
    "lr": 5e-3,
    "max_epochs": 25,
    "patience": 10,
    "sequence_max_len": 64,
}
SMALL = {"gru": {"hidden_size": 32}, "transformer": {"d_model": 32, "n_layers": 1, "ff_dim": 64}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # Recurrent and attention layers on short batches are much slower on two busy threads.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cohort(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """400 synthetic patients built from cohort.yaml with a sequence and a feature source;
    ``severe``: the latent clinical severity (which shows in labs, visits and conditions)
    above its median."""
    folder = tmp_path_factory.mktemp("sequence_models")
    for name in ("index.parquet", "omop.duckdb"):
        shutil.copy(cohort_dir / name, folder / name)
    (folder / "cohort.yaml").write_text(YAML)
    full = build(folder / "cohort.yaml")
    sub = full.take(np.arange(N_PATIENTS))
    truth = pd.read_parquet(cohort_dir / "truth" / "patients.parquet").set_index("patient_id")
    s_ehr = truth.loc[sub.ids, "s_ehr"].to_numpy()
    sub.patients["severe"] = s_ehr > np.median(s_ehr)
    return sub


@pytest.fixture(scope="module")
def split(cohort: Cohort) -> tuple[Cohort, Cohort]:
    rows = np.random.default_rng(0).permutation(cohort.n)
    cut = int(0.7 * cohort.n)
    return cohort.take(np.sort(rows[:cut])), cohort.take(np.sort(rows[cut:]))


@pytest.fixture(scope="module")
def gru(split: tuple[Cohort, Cohort]) -> MultimodalEstimator:
    train, _ = split
    est = MultimodalEstimator(
        modalities=["ehr_seq"], encoder_params={"ehr_seq": SMALL["gru"]}, **FAST
    )
    return est.fit(train, "severe")


def _auroc(est: MultimodalEstimator, test: Cohort) -> float:
    return float(roc_auc_score(test.patients["severe"], est.predict_proba(test)))


# --- learning ---------------------------------------------------------------------------


def test_gru_is_the_default_and_learns_the_severity(
    split: tuple[Cohort, Cohort], gru: MultimodalEstimator
) -> None:
    _, test = split
    assert gru.encoder_configs_["ehr_seq"]["name"] == "gru"
    # Measured 0.96 (seeds 1 and 2: 0.94, 0.89; 120 test patients, chance is 0.5).
    assert _auroc(gru, test) > 0.8


def test_transformer_learns_the_severity(split: tuple[Cohort, Cohort]) -> None:
    train, test = split
    est = MultimodalEstimator(
        modalities=["ehr_seq"],
        encoders={"ehr_seq": "transformer"},
        encoder_params={"ehr_seq": SMALL["transformer"]},
        **FAST,
    ).fit(train, "severe")
    assert _auroc(est, test) > 0.8  # measured 0.96 (seeds 1 and 2: 0.95, 0.96)


def test_with_features_staged_and_with_missing_sequences(split: tuple[Cohort, Cohort]) -> None:
    """A sequence beside a feature block, its encoder trained first and frozen (its
    embeddings computed in chunks); patients without a sequence still get predictions."""
    train, test = split
    test.modalities["ehr_seq"].present[:10] = False
    est = MultimodalEstimator(
        modalities=["ehr_seq", "ehr"],
        pretrain=["ehr_seq"],
        encoder_params={"ehr_seq": SMALL["gru"]},
        **{**FAST, "fusion": "attention", "max_epochs": 4},
    ).fit(train, "severe")
    proba = est.predict_proba(test)
    assert proba.shape == (test.n,) and np.isfinite(proba).all()
    assert not est.net_.encoders["ehr_seq"].gru.weight_hh_l0.requires_grad
    assert est.transform(test).shape == (test.n, est.resolved_["fused_dim"])


# --- bundles ------------------------------------------------------------------------------


def test_bundle_reproduces_predictions(
    split: tuple[Cohort, Cohort], gru: MultimodalEstimator, tmp_path: Path
) -> None:
    _, test = split
    gru.save(tmp_path / "bundle")
    meta = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    (prep,) = meta["preprocessing"]
    vocab = prep["config"]["vocabulary"]
    assert prep["kind"] == "sequence" and prep["config"]["max_len"] == 64
    assert "measurement:LOINC/1988-5" in vocab
    assert meta["encoders"]["ehr_seq"]["spec"]["vocab_size"] == len(vocab) + 2
    tensors = load_file(str(tmp_path / "bundle" / "model.safetensors"))
    assert tensors["prep.ehr_seq.center"].shape == (len(vocab),)
    back = MultimodalEstimator.load(tmp_path / "bundle")
    np.testing.assert_array_equal(back.predict_proba(test), gru.predict_proba(test))


# --- the preprocessing --------------------------------------------------------------------


def _block(rows: list[tuple[str, int, str, float]], ids: list[str]) -> ModalityBlock:
    events = pd.DataFrame(rows, columns=["patient_id", "days_before_index", "code", "value"])
    return ModalityBlock(
        name="seq",
        kind="sequence",
        ids=ids,
        x=np.zeros((len(ids), 0)),
        feature_names=[],
        present=np.asarray([i in set(events["patient_id"]) for i in ids]),
        events=events,
    )


def _hand_made(crp_scale: float = 1.0) -> ModalityBlock:
    nan = float("nan")
    rows = [
        ("a", 300, "lab:CRP", 2.0 * crp_scale),
        ("a", 200, "visit:IP", nan),
        ("a", 100, "lab:CRP", 4.0 * crp_scale),
        ("a", 0, "rare:X", nan),
        ("b", 50, "lab:CRP", 6.0 * crp_scale),
        ("b", 40, "visit:IP", nan),
        ("c", 10, "lab:CRP", 8.0 * crp_scale),
        ("d", 5, "test:only", 1.0),  # only in a test patient
        ("d", 3, "lab:CRP", 100.0 * crp_scale),
    ]
    return _block(rows, ["a", "b", "c", "d", "e"])


def test_preprocessing_is_fitted_on_training_patients_only() -> None:
    block = _hand_made()
    train = np.array([0, 1, 2, 4])  # e has no events: not used
    prep = ModalityPrep.fit(
        block,
        train,
        omics_top_genes=1,
        image_size=(8, 8),
        sequence_max_len=3,
        sequence_min_count=2,
    )
    # Codes of >= 2 training patients; "test:only" is never seen in training.
    assert prep.config["vocabulary"] == ["lab:CRP", "visit:IP"]
    assert prep.vocab_size == 4 and prep.input_shape() == (3,)
    # CRP: median and IQR of the training values 2, 4, 6, 8.
    np.testing.assert_allclose(prep.arrays["center"], [5.0, 0.0])
    np.testing.assert_allclose(prep.arrays["scale"], [3.0, 1.0])
    out = prep.transform(block)
    assert isinstance(out, dict)
    assert out["codes"].shape == (5, 3) and out["codes"].dtype == torch.long
    # a: the 3 most recent events, oldest first; rare:X is out of vocabulary (id 3).
    assert out["codes"][0].tolist() == [2, 1, 3]
    assert out["days"][0].tolist() == [200.0, 100.0, 0.0]
    np.testing.assert_allclose(out["values"][0].numpy(), [0.0, -1 / 3, 0.0], rtol=1e-6)
    assert out["codes"][3].tolist() == [3, 1, 0]  # d: unknown code, CRP, padding
    assert out["mask"].sum(1).tolist() == [3, 2, 1, 2, 0]
    assert not out["mask"][4].any()
    # Units do not matter: CRP in other units gives the same inputs.
    other = ModalityPrep.fit(
        _hand_made(crp_scale=1000.0),
        train,
        omics_top_genes=1,
        image_size=(8, 8),
        sequence_max_len=3,
        sequence_min_count=2,
    )
    again = other.transform(_hand_made(crp_scale=1000.0))
    assert isinstance(again, dict)
    np.testing.assert_allclose(again["values"].numpy(), out["values"].numpy(), rtol=1e-5)
    # The state round-trips through JSON and plain arrays.
    data = json.loads(json.dumps(prep.to_json()))
    back = ModalityPrep.from_json(data, prep.tensors())
    restored = back.transform(block)
    assert isinstance(restored, dict)
    for key, value in out.items():
        assert torch.equal(restored[key], value), key


# --- bad input ----------------------------------------------------------------------------


def _one_line_without_ids(err: pytest.ExceptionInfo[InputError], cohort: Cohort) -> None:
    text = str(err.value)
    assert "\n" not in text
    assert not any(pid in text for pid in cohort.ids)


def test_unknown_codes_and_missing_modality_are_clear_errors(
    split: tuple[Cohort, Cohort], gru: MultimodalEstimator, tmp_path: Path
) -> None:
    _, test = split
    bundle = MultimodalEstimator.load(gru.save(tmp_path / "bundle"))
    # Another coding of the same records: none of the model's codes.
    block = test.modalities["ehr_seq"]
    recoded = block.events.assign(code="local:" + block.events["code"].str.len().astype(str))
    other = Cohort(test.patients)
    other.add(
        ModalityBlock(
            name="ehr_seq",
            kind="sequence",
            ids=block.ids,
            x=block.x,
            feature_names=[],
            present=block.present,
            events=recoded,
        )
    )
    with pytest.raises(InputError, match=r"modality 'ehr_seq': none of the \d+ event codes") as e:
        bundle.predict_proba(other)
    _one_line_without_ids(e, test)
    # A cohort without the modality, or with features under its name.
    lacking = Cohort(test.patients, modalities={"ehr": test.modalities["ehr"]})
    with pytest.raises(InputError, match="needs modality 'ehr_seq'") as e:
        bundle.predict_proba(lacking)
    _one_line_without_ids(e, test)
    features = test.modalities["ehr"]
    renamed = ModalityBlock(
        name="ehr_seq",
        kind="tabular",
        ids=features.ids,
        x=features.x,
        feature_names=features.feature_names,
    )
    with pytest.raises(InputError, match="trained on kind 'sequence'"):
        bundle.predict_proba(Cohort(test.patients, modalities={"ehr_seq": renamed}))


def test_vocabulary_too_strict_is_a_clear_error(split: tuple[Cohort, Cohort]) -> None:
    train, _ = split
    with pytest.raises(InputError, match="no event code is seen in at least 100000") as e:
        fit_preps(
            train,
            ["ehr_seq"],
            np.arange(train.n),
            omics_top_genes=1,
            image_size=(8, 8),
            sequence_min_count=100_000,
        )
    _one_line_without_ids(e, train)
    preps = fit_preps(train, ["ehr_seq"], np.arange(train.n), omics_top_genes=1, image_size=(8, 8))
    inputs = prepare(train, preps).inputs["ehr_seq"]
    assert isinstance(inputs, dict) and inputs["mask"].shape[1] <= 256


@pytest.mark.parametrize("name", ["gru", "transformer"])
def test_batches_drop_padding_no_row_uses(name: str) -> None:
    """A batch of short histories is cut to its longest; the encoders' output is unchanged."""
    torch.manual_seed(0)
    n, length = 6, 40
    lengths = torch.tensor([3, 0, 5, 1, 40, 2])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    batch = {
        "codes": torch.randint(1, 9, (n, length)) * mask,
        "values": torch.randn(n, length) * mask,
        "days": torch.rand(n, length) * 900 * mask,
        "mask": mask,
    }
    short = take_rows(batch, [0, 1, 2, 3, 5])
    assert short["mask"].shape == (5, 5)
    assert trim_padding(take_rows(batch, slice(1, 2)))["mask"].shape == (1, 1)  # no events
    enc = build_encoder(name, InputSpec("sequence", (length,), vocab_size=10), out_dim=4).eval()
    full = {k: v[[0, 1, 2, 3, 5]] for k, v in batch.items()}
    with torch.no_grad():
        torch.testing.assert_close(enc(short), enc(full))
