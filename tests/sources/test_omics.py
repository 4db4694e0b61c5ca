"""Expression readers: h5ad and CSV/TSV, gene id harmonisation, samples vs index date."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from medweave.cohort import Audit
from medweave.errors import InputError
from medweave.sources import ReadContext, get
from medweave.sources.omics import harmonise_gene_ids

INDEX = pd.DataFrame(
    {"patient_id": ["a", "b", "c"], "index_date": pd.to_datetime(["2020-01-10"] * 3)}
)


def _read(kind: str, spec: dict, base: Path, index: pd.DataFrame = INDEX):
    reader, spec_cls = get(kind)
    ctx = ReadContext(index=index, lookback_days=365, audit=Audit(), base_dir=base)
    return reader(spec_cls(name="rna", type=kind, **spec), ctx), ctx.audit


def test_harmonise_gene_ids() -> None:
    assert harmonise_gene_ids(["ENSG00000141510.17", " tp53 ", "ENSMUSG00000059552.3"]) == [
        "ENSG00000141510",
        "TP53",
        "ENSMUSG00000059552",
    ]


def test_h5ad_files_are_combined_on_shared_genes(tmp_path: Path) -> None:
    x1 = np.arange(6, dtype=np.float32).reshape(2, 3)
    ad.AnnData(
        x1,
        obs=pd.DataFrame(index=["a", "zz"]),
        var=pd.DataFrame(index=["ENSG1.1", "ENSG2.4", "ENSG3.1"]),
    ).write_h5ad(tmp_path / "one.h5ad")
    x2 = np.array([[10, 20]], dtype=np.float32)
    ad.AnnData(
        x2, obs=pd.DataFrame(index=["b"]), var=pd.DataFrame(index=["ensg2", "ENSG1"])
    ).write_h5ad(tmp_path / "two.h5ad")
    block, audit = _read("h5ad", {"path": ["one.h5ad", "two.h5ad"]}, tmp_path)
    assert block.ids == ["a", "b"] and block.feature_names == ["ENSG1", "ENSG2"]
    np.testing.assert_array_equal(block.x, [[0, 1], [20, 10]])
    assert audit.sources["rna"].excluded["unknown_patient"] == 1
    assert audit.excluded_patients == {"zz": "not in the index (seen in source 'rna')"}
    assert block.meta["genes_dropped_not_in_all_files"] == 1


def test_samples_after_index_are_excluded_and_latest_kept(tmp_path: Path) -> None:
    obs = pd.DataFrame(
        {"pid": ["a", "a", "b"], "when": ["2020-01-01", "2020-01-05", "2020-02-01"]},
        index=["s1", "s2", "s3"],
    )
    ad.AnnData(
        np.array([[1.0], [2.0], [3.0]], dtype=np.float32), obs=obs, var=pd.DataFrame(index=["G"])
    ).write_h5ad(tmp_path / "x.h5ad")
    block, audit = _read("h5ad", {"path": "x.h5ad", "id_key": "pid", "date_key": "when"}, tmp_path)
    assert block.ids == ["a"] and block.x[0, 0] == 2.0
    assert audit.sources["rna"].excluded == {"after_index": 1, "older_sample": 1}


def test_expression_tables_both_orientations(tmp_path: Path) -> None:
    pd.DataFrame({"gene": ["TP53", "EGFR"], "a": [1.0, 2.0], "c": [3.0, 4.0]}).to_csv(
        tmp_path / "genes_rows.tsv", sep="\t", index=False
    )
    block, _ = _read(
        "expression_table",
        {"path": "genes_rows.tsv", "orientation": "genes_as_rows", "id_column": "gene"},
        tmp_path,
    )
    assert block.ids == ["a", "c"] and block.feature_names == ["TP53", "EGFR"]
    np.testing.assert_array_equal(block.x, [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (
            lambda p: pd.DataFrame({"id": ["a"], "TP53": ["high"]}).to_csv(p, index=False),
            r"m.csv line 2 \(sample 'a'\), column 'TP53': expression 'high' is not a number",
        ),
        (
            lambda p: pd.DataFrame({"id": ["a"], "TP53": [1], "tp53": [2]}).to_csv(p, index=False),
            r"gene id 'TP53' appears more than once",
        ),
        (
            lambda p: pd.DataFrame({"pid": ["a"], "TP53": [1]}).to_csv(p, index=False),
            r"no column 'id' \(config key id_column\); did you mean 'pid'\?",
        ),
    ],
)
def test_bad_tables(tmp_path: Path, write, match: str) -> None:
    write(tmp_path / "m.csv")
    with pytest.raises(InputError, match=match):
        _read(
            "expression_table",
            {"path": "m.csv", "orientation": "samples_as_rows", "id_column": "id"},
            tmp_path,
        )


def test_inconsistent_gene_ids_between_files(tmp_path: Path) -> None:
    pd.DataFrame({"id": ["a"], "TP53": [1]}).to_csv(tmp_path / "sym.csv", index=False)
    pd.DataFrame({"id": ["b"], "ENSG00000141510": [1]}).to_csv(tmp_path / "ens.csv", index=False)
    with pytest.raises(InputError, match="no gene id in common"):
        _read(
            "expression_table",
            {"path": ["sym.csv", "ens.csv"], "orientation": "samples_as_rows", "id_column": "id"},
            tmp_path,
        )


def test_damaged_h5ad_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.h5ad").write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match=r"bad.h5ad: cannot read as AnnData"):
        _read("h5ad", {"path": "bad.h5ad"}, tmp_path)


def test_synthetic_expression(cohort_dir: Path) -> None:
    index = pd.read_parquet(cohort_dir / "index.parquet")[["patient_id", "index_date"]]
    block, audit = _read(
        "h5ad", {"path": "omics/expression.h5ad", "date_key": "collection_date"}, cohort_dir, index
    )
    truth = pd.read_parquet(cohort_dir / "truth" / "patients.parquet")
    assert set(block.ids) == set(truth.loc[truth["has_omics"], "patient_id"])
    assert block.n_features == 1200 and audit.sources["rna"].excluded == {}


def _h5ad(path: Path, x: np.ndarray, ids: list[str], **obs: list[str]) -> None:
    frame = pd.DataFrame(obs, index=[f"s{i}" for i in range(len(ids))]).assign(pid=ids)
    genes = pd.DataFrame(index=[f"G{j}" for j in range(x.shape[1])])
    ad.AnnData(x.astype(np.float32), obs=frame, var=genes).write_h5ad(path)


@pytest.mark.parametrize(
    ("transform", "scale"),
    [
        (lambda x: x, "linear"),
        (np.log2, "log"),  # negative values
        (np.log1p, "log"),
        (np.round, "counts"),
    ],
)
def test_scale_is_detected_and_said_in_the_meta(tmp_path: Path, transform, scale: str) -> None:
    x = transform(np.random.default_rng(0).lognormal(3, 1.5, (3, 50)))
    _h5ad(tmp_path / "x.h5ad", x, ["a", "b", "c"])
    block, _ = _read("h5ad", {"path": "x.h5ad", "id_key": "pid"}, tmp_path)
    assert block.meta["scale"] == scale and block.meta["scale_detected"] is True
    assert block.meta["scale_evidence"]


def test_a_declared_scale_is_kept_and_checked(tmp_path: Path) -> None:
    x = np.log2(np.random.default_rng(0).lognormal(3, 1.5, (3, 50)))
    _h5ad(tmp_path / "x.h5ad", x, ["a", "b", "c"])
    block, _ = _read("h5ad", {"path": "x.h5ad", "id_key": "pid", "scale": "log"}, tmp_path)
    assert block.meta["scale"] == "log" and block.meta["scale_detected"] is False
    with pytest.raises(InputError, match=r"x.h5ad obs row \d \(sample 's\d'\), gene 'G\d+'"):
        _read("h5ad", {"path": "x.h5ad", "id_key": "pid", "scale": "linear"}, tmp_path)


def test_skip_leaves_a_bad_sample_out_and_uses_an_older_good_one(tmp_path: Path) -> None:
    x = np.random.default_rng(1).lognormal(3, 1, (5, 4))
    x[1, 2] = np.inf  # a's latest sample
    x[3] = 0.0  # b's only sample: no information
    dates = ["2020-01-01", "2020-01-05", "2019-12-01", "2020-01-02", "2020-02-01"]
    _h5ad(tmp_path / "x.h5ad", x, ["a", "a", "c", "b", "c"], when=dates)
    spec = {"path": "x.h5ad", "id_key": "pid", "date_key": "when", "on_error": "skip"}
    block, audit = _read("h5ad", spec, tmp_path)
    assert block.ids == ["a", "c"]
    np.testing.assert_allclose(block.x[0], x[0].astype(np.float32))
    src = audit.sources["rna"]
    assert src.excluded == {"expression:non_finite": 1, "no_information": 1, "after_index": 1}
    assert src.patients_missing == {"no_usable_sample": 1}
    assert src.rows_read == 5 and src.rows_used == 2


def test_an_all_zero_sample_is_left_out_with_a_warning_under_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    x = np.random.default_rng(2).lognormal(3, 1, (3, 4))
    x[2] = 0.0
    _h5ad(tmp_path / "x.h5ad", x, ["a", "b", "c"])
    block, audit = _read("h5ad", {"path": "x.h5ad", "id_key": "pid"}, tmp_path)
    assert block.ids == ["a", "b"] and audit.sources["rna"].excluded == {"no_information": 1}
    assert "obs row 3 (sample 's2'): sample holds no information" in caplog.text


def test_samples_outside_the_lookback_are_not_presence(tmp_path: Path) -> None:
    x = np.random.default_rng(3).lognormal(3, 1, (2, 4))
    _h5ad(tmp_path / "x.h5ad", x, ["a", "b"], when=["2018-01-01", "2020-01-01"])
    block, audit = _read("h5ad", {"path": "x.h5ad", "id_key": "pid", "date_key": "when"}, tmp_path)
    assert block.ids == ["b"]
    assert audit.sources["rna"].excluded == {"before_lookback": 1}
    # The third cohort patient has no sample at all.
    assert audit.sources["rna"].patients_missing == {"no_sample_in_window": 1, "no_sample": 1}


def test_parquet_expression_table_is_checked_too(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "TP53": [1.0, np.inf], "EGFR": [2.0, 3.0]})
    frame.to_parquet(tmp_path / "m.parquet")
    spec = {"path": "m.parquet", "orientation": "samples_as_rows", "id_column": "id"}
    with pytest.raises(InputError, match=r"m.parquet row 2 \(sample 'b'\), column 'TP53'"):
        _read("expression_table", spec, tmp_path)
    block, audit = _read("expression_table", {**spec, "on_error": "skip"}, tmp_path)
    assert block.ids == ["a"] and audit.sources["rna"].excluded == {"expression:non_finite": 1}
