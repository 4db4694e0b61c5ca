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
