"""Every file of the synthetic cohort opens with its field's own reader, and ids agree."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pydicom
import pytest

from medweave.synth.concepts import CONCEPTS
from medweave.synth.omics import N_GENES
from medweave.synth.omop import CDM_TABLES

HORIZON = 730


@pytest.fixture(scope="module")
def index(cohort_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(cohort_dir / "index.parquet")


@pytest.fixture(scope="module")
def truth(cohort_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(cohort_dir / "truth" / "patients.parquet")


@pytest.fixture(scope="module")
def con(cohort_dir: Path):
    con = duckdb.connect(str(cohort_dir / "omop.duckdb"), read_only=True)
    yield con
    con.close()


def test_folder_layout(cohort_dir: Path) -> None:
    for rel in (
        "omop.duckdb",
        "imaging",
        "omics/expression.h5ad",
        "environment/exposures.parquet",
        "index.parquet",
        "truth/patients.parquet",
        "truth/signal.json",
        "truth/ceiling.json",
        "manifest.json",
    ):
        assert (cohort_dir / rel).exists(), rel
    assert not list(cohort_dir.parent.glob(".cohort.tmp-*")), "temporary folder left behind"


def test_omop_tables_have_cdm54_columns(con: duckdb.DuckDBPyConnection) -> None:
    for table, columns in CDM_TABLES.items():
        got = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        assert got == [c for c, _ in columns], table
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table


def test_omop_concepts_are_standard_and_described(con: duckdb.DuckDBPyConnection) -> None:
    used = con.execute(
        """
        SELECT DISTINCT c FROM (
            SELECT condition_concept_id c FROM condition_occurrence
            UNION SELECT drug_concept_id FROM drug_exposure
            UNION SELECT measurement_concept_id FROM measurement
            UNION SELECT unit_concept_id FROM measurement
            UNION SELECT visit_concept_id FROM visit_occurrence
            UNION SELECT gender_concept_id FROM person
            UNION SELECT race_concept_id FROM person)
        """
    ).fetchall()
    described = {r[0] for r in con.execute("SELECT concept_id FROM concept").fetchall()}
    assert {r[0] for r in used} <= described
    vocab = dict(con.execute("SELECT concept_id, vocabulary_id FROM concept").fetchall())
    assert vocab[3020460] == "LOINC"
    assert vocab[255573] == "SNOMED"
    assert vocab[1551099] == "RxNorm"
    assert set(described) == set(CONCEPTS)


def test_omop_history_spans_years_before_index(
    con: duckdb.DuckDBPyConnection, index: pd.DataFrame
) -> None:
    con.register("idx", index)
    span = con.execute(
        """
        SELECT quantile_cont(date_diff('day', v.visit_start_date, CAST(i.index_date AS DATE)), 0.9)
        FROM visit_occurrence v JOIN idx i USING (person_id)
        WHERE v.visit_start_date < CAST(i.index_date AS DATE)
        """
    ).fetchone()[0]
    assert span > 2 * 365
    # The index date is the first COPD diagnosis.
    first_copd = con.execute(
        """
        SELECT count(*) FROM (
            SELECT person_id, min(condition_start_date) d FROM condition_occurrence
            WHERE condition_concept_id = 255573 GROUP BY person_id) f
        JOIN idx i USING (person_id) WHERE f.d <> CAST(i.index_date AS DATE)
        """
    ).fetchone()[0]
    assert first_copd == 0
    # Records go on after the index date (a feature builder must stop there).
    after = con.execute(
        """
        SELECT count(*) FROM measurement m JOIN idx i USING (person_id)
        WHERE m.measurement_date > CAST(i.index_date AS DATE)
        """
    ).fetchone()[0]
    assert after > 0


def test_labs_have_units_and_are_sometimes_not_measured(
    con: duckdb.DuckDBPyConnection, index: pd.DataFrame
) -> None:
    assert (
        con.execute("SELECT count(*) FROM measurement WHERE unit_concept_id IS NULL").fetchone()[0]
        == 0
    )
    with_crp = con.execute(
        "SELECT count(DISTINCT person_id) FROM measurement WHERE measurement_concept_id = 3020460"
    ).fetchone()[0]
    assert 0.5 * len(index) < with_crp < len(index)


def test_deaths_match_events(con: duckdb.DuckDBPyConnection, index: pd.DataFrame) -> None:
    deaths = con.execute("SELECT person_id, death_date FROM death ORDER BY person_id").df()
    events = index[index["event"]].sort_values("person_id")
    assert deaths["person_id"].tolist() == events["person_id"].tolist()
    expected = events["index_date"] + pd.to_timedelta(events["time"], unit="D")
    assert (pd.to_datetime(deaths["death_date"]).to_numpy() == expected.to_numpy()).all()


def test_index_outcomes_are_consistent(index: pd.DataFrame) -> None:
    assert list(index.columns) == [
        "person_id",
        "patient_id",
        "index_date",
        "outcome",
        "time",
        "event",
    ]
    assert index["person_id"].is_unique
    assert index["patient_id"].is_unique
    assert (index["outcome"] == (index["event"] & (index["time"] <= HORIZON))).all()
    # Everyone is followed over the whole horizon, so the binary outcome is always known.
    assert (index.loc[~index["event"], "time"] >= HORIZON).all()
    assert 0.1 < index["outcome"].mean() < 0.5
    assert (~index["event"]).sum() > 0.3 * len(index)  # survival is really censored


def test_dicom_files(cohort_dir: Path, index: pd.DataFrame, truth: pd.DataFrame) -> None:
    files = sorted((cohort_dir / "imaging").glob("*.dcm"))
    assert len(files) == truth["has_imaging"].sum()
    ids = set(truth.loc[truth["has_imaging"], "patient_id"])
    idx = index.set_index("patient_id")
    for path in files[:25]:
        ds = pydicom.dcmread(path)
        px = ds.pixel_array
        assert px.ndim == 2
        assert min(px.shape) >= 128
        assert px.dtype == np.uint16
        assert ds.BitsAllocated == 16
        assert ds.PatientID in ids
        assert ds.Modality == "CT"
        assert len(ds.PixelSpacing) == 2
        assert str(ds.PatientName)
        assert ds.PatientBirthDate
        assert ds.InstitutionName
        study = pd.Timestamp(ds.StudyDate)
        assert study <= idx.loc[ds.PatientID, "index_date"]
        assert px.std() > 100  # an image with structure, not a constant


def test_lesions_show_in_pixels(cohort_dir: Path, truth: pd.DataFrame) -> None:
    """Disease is image structure: more lesion area, more soft-tissue pixels in the lungs."""
    t = truth[truth["has_imaging"]].set_index("patient_id")
    lo = t.nsmallest(20, "lesion_area_px")
    hi = t.nlargest(20, "lesion_area_px")

    def lung_soft_tissue(ids: pd.Index) -> float:
        out = []
        for pid in ids:
            ds = pydicom.dcmread(cohort_dir / "imaging" / f"{pid}.dcm")
            hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            lung = hu[20:108, 20:108]
            out.append(((lung > -300) & (lung < 200)).sum())
        return float(np.mean(out))

    assert lung_soft_tissue(hi.index) > lung_soft_tissue(lo.index) + 150


def test_expression_h5ad(cohort_dir: Path, truth: pd.DataFrame) -> None:
    adata = ad.read_h5ad(cohort_dir / "omics" / "expression.h5ad")
    assert adata.n_vars >= 1000
    assert adata.n_vars == N_GENES
    assert set(adata.obs_names) == set(truth.loc[truth["has_omics"], "patient_id"])
    x = np.asarray(adata.X)
    assert (x > 0).all()
    log_x = np.log(x)
    signal = json.loads((cohort_dir / "truth" / "signal.json").read_text())
    module = signal["modalities"]["omics"]["modules"]["proliferation"]
    pos = [adata.var_names.get_loc(g) for g in module]
    within = np.abs(np.corrcoef(log_x[:, pos].T)[np.triu_indices(len(pos), 1)]).mean()
    rng = np.random.default_rng(0)
    other = rng.choice(adata.n_vars, 25, replace=False)
    between = np.abs(np.corrcoef(log_x[:, other].T)[np.triu_indices(25, 1)]).mean()
    assert within > 0.3
    assert within > 3 * between
    # The module tracks the latent it expresses.
    t = truth.set_index("patient_id").loc[adata.obs_names]
    sign = np.sign(np.corrcoef(log_x[:, pos].T, t["m_prolif"])[-1, :-1])
    score = (log_x[:, pos] * sign).mean(axis=1)
    assert np.corrcoef(score, t["m_prolif"])[0, 1] > 0.9


def test_exposures_parquet(cohort_dir: Path, con: duckdb.DuckDBPyConnection, index) -> None:
    table = pq.read_table(cohort_dir / "environment" / "exposures.parquet")
    assert table.column_names == ["zip", "date", "pm25", "ozone", "temperature"]
    df = table.to_pandas()
    df["zip"] = df["zip"].astype(str)
    df["date"] = pd.to_datetime(df["date"])
    zips = {r[0] for r in con.execute("SELECT zip FROM location").fetchall()}
    assert set(df["zip"]) == zips
    per_zip = df.groupby("zip")["date"].agg(["min", "max", "count"])
    assert (per_zip["count"] == (per_zip["max"] - per_zip["min"]).dt.days + 1).all()  # daily
    assert per_zip["min"].max() < index["index_date"].min() - pd.Timedelta(days=3 * 365)
    month = df["date"].dt.month
    winter, summer = month.isin([12, 1, 2]), month.isin([6, 7, 8])
    assert df.loc[winter, "pm25"].mean() > df.loc[summer, "pm25"].mean()
    assert df.loc[summer, "ozone"].mean() > df.loc[winter, "ozone"].mean()
    assert df.loc[summer, "temperature"].mean() > df.loc[winter, "temperature"].mean() + 5
    assert df.groupby("zip")["pm25"].mean().std() > 1.0  # places differ


def test_ids_agree_across_modalities(
    cohort_dir: Path, con: duckdb.DuckDBPyConnection, index: pd.DataFrame, truth: pd.DataFrame
) -> None:
    person = con.execute(
        "SELECT p.person_id, p.person_source_value, l.zip FROM person p "
        "LEFT JOIN location l USING (location_id) ORDER BY person_id"
    ).df()
    assert person["person_id"].tolist() == index["person_id"].tolist()
    assert person["person_source_value"].tolist() == index["patient_id"].tolist()
    assert truth["patient_id"].tolist() == index["patient_id"].tolist()
    # Patients whose address is unknown lack the environment modality.
    assert (person["zip"].notna().to_numpy() == truth["has_environment"].to_numpy()).all()
    dicom_ids = {p.stem for p in (cohort_dir / "imaging").glob("*.dcm")}
    assert dicom_ids == set(truth.loc[truth["has_imaging"], "patient_id"])
    # Exposure signal in truth is the 365-day PM2.5 mean from the exposure table.
    ex = pd.read_parquet(cohort_dir / "environment" / "exposures.parquet")
    ex["zip"] = ex["zip"].astype(str)
    ex["date"] = pd.to_datetime(ex["date"])
    row = person[person["zip"].notna()].iloc[0]
    when = index.set_index("person_id").loc[row["person_id"], "index_date"]
    window = ex[
        (ex["zip"] == row["zip"])
        & (ex["date"] < when)
        & (ex["date"] >= when - pd.Timedelta(days=365))
    ]
    expected = truth.set_index("person_id").loc[row["person_id"], "pm25_mean_365d"]
    assert len(window) == 365
    assert window["pm25"].mean() == pytest.approx(expected, rel=1e-3)
