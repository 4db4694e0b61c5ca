"""`medweave build`: index and outcomes, sources, audit accounting, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from medweave.cli import main
from medweave.cohort import Cohort, build
from medweave.errors import InputError

YAML = """\
name: test
lookback_days: 1095
index: {rule: column, table: index.parquet}
outcome:
  binary: {column: outcome}
  survival: {time_column: time, event_column: event}
sources:
  - {name: omics, type: h5ad, path: omics/expression.h5ad, date_key: collection_date}
  - {name: environment, type: exposures, path: environment/exposures.parquet, omop: omop.duckdb,
     windows_days: [365], thresholds: {pm25: 12}}
"""


@pytest.fixture(scope="module")
def folder(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic folder with a config of the readers this test is about."""
    out = tmp_path_factory.mktemp("build")
    for rel in ("index.parquet", "omop.duckdb", "omics", "environment", "truth"):
        src = cohort_dir / rel
        (shutil.copytree if src.is_dir() else shutil.copy)(src, out / rel)
    (out / "cohort.yaml").write_text(YAML)
    return out


def test_build_synthetic(folder: Path) -> None:
    cohort = build(folder / "cohort.yaml")
    truth = pd.read_parquet(folder / "truth" / "patients.parquet")
    assert cohort.ids == truth["patient_id"].tolist()
    assert set(cohort.patients.columns) >= {"outcome", "time", "event"}
    pres = cohort.presence()
    assert pres["omics"].tolist() == truth["has_omics"].tolist()
    assert pres["environment"].tolist() == truth["has_environment"].tolist()
    flow = cohort.audit.flow
    assert flow["input_patients"] == flow["cohort_patients"] == len(truth)
    for name, src in cohort.audit.sources.items():
        if name != "index":
            assert src.patients + sum(src.patients_missing.values()) == cohort.n


def test_cli_build_writes_cohort_and_audit(folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "built"
    with pytest.raises(SystemExit) as exc:
        main(["build", str(folder / "cohort.yaml"), "--out", str(out)])
    assert exc.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "Cohort flow" in printed and "environment" in printed
    audit = json.loads((out / "audit.json").read_text())
    assert audit["flow"]["cohort_patients"] == 800
    back = Cohort.load(out)
    assert back.modalities["omics"].n_features == 1200


def _index_folder(tmp_path: Path, rows: str) -> Path:
    (tmp_path / "index.csv").write_text("patient_id,index_date,outcome\n" + rows)
    (tmp_path / "cohort.yaml").write_text(
        "index: {rule: column, table: index.csv}\noutcome: {binary: {column: outcome}}\n"
    )
    return tmp_path / "cohort.yaml"


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (
            "a,2020-01-01,1\na,2020-02-01,0\n",
            r"index.csv line 3: patient id 'a' appears more than once",
        ),
        ("a,2020-01-01,1\nb,,0\n", r"index.csv line 3: index_date is empty"),
        (
            "a,2020-01-01,1\nb,2199-01-01,0\n",
            r"index.csv line 3: index_date 2199-01-01 is in the future",
        ),
        ("a,01/13/2020x,1\n", r"index.csv line 2: index_date '01/13/2020x' is not a date"),
        (
            "a,2020-01-01,maybe\n",
            r"index.csv line 2: outcome 'maybe' is not a number; expected 0/1",
        ),
        ("a,2020-01-01,2\n", r"index.csv line 2: outcome '2' is out of range; expected 0/1"),
        ("a,01/03/2020,1\n", r"index.csv line 2: index_date '01/03/2020' is ambiguous"),
    ],
)
def test_index_errors_name_file_and_line(tmp_path: Path, rows: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        build(_index_folder(tmp_path, rows))


def test_missing_index_date_can_be_excluded_and_audited(tmp_path: Path) -> None:
    config = _index_folder(tmp_path, "a,2020-01-01,1\nb,,0\n")
    config.write_text(
        config.read_text().replace("table: index.csv", "table: index.csv, missing_date: exclude")
    )
    cohort = build(config)
    assert cohort.ids == ["a"]
    assert cohort.audit.excluded_patients == {"b": "missing index date"}
    assert cohort.audit.flow["input_patients"] == 2


def test_index_columns_reach_the_patient_table_and_split_the_folds(tmp_path: Path) -> None:
    """index.columns carries a site from the index table: a study can hold each site out."""
    from medweave.experiment import make_folds, parse_study

    rows = "".join(f"p{i},2020-01-0{1 + i % 9},{i % 2},{'AB'[i // 6]}\n" for i in range(12))
    (tmp_path / "index.csv").write_text("patient_id,index_date,outcome,site\n" + rows)
    yaml = "index: {rule: column, table: index.csv%s}\noutcome: {binary: {column: outcome}}\n"
    (tmp_path / "cohort.yaml").write_text(yaml % ", columns: [site]")
    cohort = build(tmp_path / "cohort.yaml")
    assert cohort.patients["site"].tolist() == ["A"] * 6 + ["B"] * 6
    study = {"name": "s", "cohort": "cohort.yaml", "validation": {"split_column": "site"}}
    folds = make_folds(cohort, parse_study(study))
    assert [test.tolist() for _, test in folds] == [list(range(6)), list(range(6, 12))]
    # Saved and loaded with the cohort, as a run does.
    cohort.save(tmp_path / "built")
    assert Cohort.load(tmp_path / "built").patients["site"].tolist() == ["A"] * 6 + ["B"] * 6

    (tmp_path / "cohort.yaml").write_text(yaml % "")
    with pytest.raises(
        InputError,
        match=r"validation.split_column: the cohort's patient table has no column 'site' \(it "
        r"has patient_id, index_date, outcome\); carry it from the index table with "
        r"index.columns in cohort.yaml",
    ):
        make_folds(build(tmp_path / "cohort.yaml"), parse_study(study))
    (tmp_path / "cohort.yaml").write_text(yaml % ", columns: [centre]")
    with pytest.raises(InputError, match=r"index.csv: no column 'centre' \(config key index."):
        build(tmp_path / "cohort.yaml")
    (tmp_path / "index.csv").write_text("patient_id,index_date,outcome,site\n" + rows[:-2] + "\n")
    (tmp_path / "cohort.yaml").write_text(yaml % ", columns: [site]")
    with pytest.raises(InputError, match=r"split_column 'site': 1 patients have no value \(e"):
        make_folds(build(tmp_path / "cohort.yaml"), parse_study(study))


def test_ids_that_match_nobody_are_an_error(folder: Path, tmp_path: Path) -> None:
    index = pd.read_parquet(folder / "index.parquet")
    index["patient_id"] = index["person_id"]  # integers instead of the source's text ids
    index.to_parquet(tmp_path / "index.parquet")
    shutil.copytree(folder / "omics", tmp_path / "omics")
    (tmp_path / "cohort.yaml").write_text(
        "index: {rule: column, table: index.parquet}\noutcome: {binary: {column: outcome}}\n"
        "sources: [{name: omics, type: h5ad, path: omics/expression.h5ad}]\n"
    )
    with pytest.raises(InputError, match=r"source 'omics': none of its patients match .*'1'.*'P0"):
        build(tmp_path / "cohort.yaml")
