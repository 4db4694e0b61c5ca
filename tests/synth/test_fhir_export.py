"""FHIR R4 export of the synthetic EHR: counts, references, codes, units, NDJSON and Bundles."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

from medweave.errors import InputError
from medweave.synth import synthesize
from medweave.synth.fhir import RESOURCE_TYPES, export_fhir

OMOP_TABLE = {
    "Patient": "person",
    "Encounter": "visit_occurrence",
    "Condition": "condition_occurrence",
    "MedicationRequest": "drug_exposure",
    "Observation": "measurement",
}
# Elements FHIR R4 requires (cardinality 1..1 or 1..*) on the resources written.
REQUIRED = {
    "Patient": [],
    "Encounter": ["status", "class"],
    "Condition": ["subject"],
    "MedicationRequest": ["status", "intent", "subject", "medicationCodeableConcept"],
    "Observation": ["status", "code"],
}
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fhir_export") / "cohort"
    synthesize(out, n_patients=80, seed=5, workers=1)
    return out


@pytest.fixture(scope="module")
def ndjson(cohort: Path) -> dict[str, list[dict[str, Any]]]:
    folder = export_fhir(cohort)
    assert folder == cohort / "fhir"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{t}.ndjson" for t in RESOURCE_TYPES)
    out = {}
    for rtype in RESOURCE_TYPES:
        lines = (folder / f"{rtype}.ndjson").read_text(encoding="utf-8").splitlines()
        out[rtype] = [json.loads(line) for line in lines]
    return out


@pytest.fixture(scope="module")
def bundles(cohort: Path) -> dict[str, dict[str, Any]]:
    folder = export_fhir(cohort, out=cohort / "fhir_bundles", bundle=True)
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("*.json")}


@pytest.fixture(scope="module")
def omop(cohort: Path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(cohort / "omop.duckdb"), read_only=True)
    try:
        return {
            "person": con.execute(
                "SELECT p.*, d.death_date, l.zip FROM person p LEFT JOIN death d USING (person_id)"
                " LEFT JOIN location l ON l.location_id = p.location_id"
            ).df(),
            "visit_occurrence": con.execute(
                "SELECT v.*, p.person_source_value AS pid FROM visit_occurrence v "
                "JOIN person p USING (person_id)"
            ).df(),
            "condition_occurrence": con.execute(
                "SELECT o.*, c.concept_code, c.vocabulary_id, p.person_source_value AS pid "
                "FROM condition_occurrence o JOIN concept c ON c.concept_id = condition_concept_id"
                " JOIN person p USING (person_id)"
            ).df(),
            "drug_exposure": con.execute(
                "SELECT o.*, c.concept_code, c.vocabulary_id, p.person_source_value AS pid "
                "FROM drug_exposure o JOIN concept c ON c.concept_id = drug_concept_id "
                "JOIN person p USING (person_id)"
            ).df(),
            "measurement": con.execute(
                "SELECT o.*, c.concept_code, c.vocabulary_id, c.concept_class_id, "
                "u.concept_code AS unit_code, p.person_source_value AS pid "
                "FROM measurement o JOIN concept c ON c.concept_id = measurement_concept_id "
                "JOIN concept u ON u.concept_id = unit_concept_id JOIN person p USING (person_id)"
            ).df(),
        }
    finally:
        con.close()


def _day(x: Any) -> str:
    return pd.Timestamp(x).strftime("%Y-%m-%d")


def test_one_resource_per_omop_row(ndjson: dict, omop: dict) -> None:
    for rtype, table in OMOP_TABLE.items():
        assert len(ndjson[rtype]) == len(omop[table]) > 0, rtype
        assert {r["resourceType"] for r in ndjson[rtype]} == {rtype}
        ids = [r["id"] for r in ndjson[rtype]]
        assert len(set(ids)) == len(ids), f"{rtype} ids are not unique"
        for r in ndjson[rtype]:
            missing = [e for e in REQUIRED[rtype] if e not in r]
            assert not missing, f"{rtype} {r['id']} lacks required {missing}"


def test_references_resolve(ndjson: dict) -> None:
    patients = {f"Patient/{r['id']}" for r in ndjson["Patient"]}
    encounters = {f"Encounter/{r['id']}" for r in ndjson["Encounter"]}
    n_enc_refs = 0
    for rtype in ("Encounter", "Condition", "MedicationRequest", "Observation"):
        for r in ndjson[rtype]:
            assert r["subject"]["reference"] in patients
            if "encounter" in r:
                assert r["encounter"]["reference"] in encounters
                n_enc_refs += 1
    assert n_enc_refs > 0
    # The encounter a resource refers to belongs to the same patient and the same day.
    enc = {f"Encounter/{r['id']}": r for r in ndjson["Encounter"]}
    for r in ndjson["Observation"]:
        e = enc[r["encounter"]["reference"]]
        assert e["subject"] == r["subject"]
        assert e["period"]["start"] == r["effectiveDateTime"]


def test_patients(ndjson: dict, omop: dict) -> None:
    person = omop["person"].set_index("person_source_value")
    for r in ndjson["Patient"]:
        p = person.loc[r["id"]]
        assert r["gender"] == {8507: "male", 8532: "female"}[p["gender_concept_id"]]
        assert r["birthDate"] == _day(p["birth_datetime"])
        assert r["identifier"][0]["value"] == r["id"]
        if pd.isna(p["death_date"]):
            assert "deceasedDateTime" not in r
        else:
            assert r["deceasedDateTime"] == _day(p["death_date"])
        if pd.isna(p["location_id"]):
            assert "address" not in r
        else:
            assert r["address"] == [{"postalCode": p["zip"]}]
    assert (
        sum("deceasedDateTime" in r for r in ndjson["Patient"])
        == person["death_date"].notna().sum()
    )


def test_encounters(ndjson: dict, omop: dict) -> None:
    klass = {9201: "IMP", 9202: "AMB", 9203: "EMER"}
    want = Counter(
        (pid, klass[k], _day(s), _day(e))
        for pid, k, s, e in omop["visit_occurrence"][
            ["pid", "visit_concept_id", "visit_start_date", "visit_end_date"]
        ].itertuples(index=False)
    )
    got = Counter(
        (
            r["subject"]["reference"].removeprefix("Patient/"),
            r["class"]["code"],
            r["period"]["start"],
            r["period"]["end"],
        )
        for r in ndjson["Encounter"]
    )
    assert got == want
    assert {r["class"]["system"] for r in ndjson["Encounter"]} == {
        "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    }
    assert {r["class"]["code"] for r in ndjson["Encounter"]} == {"IMP", "AMB", "EMER"}


def test_conditions_are_snomed(ndjson: dict, omop: dict) -> None:
    df = omop["condition_occurrence"]
    want = Counter(
        (p, c, _day(d), f"Encounter/enc-{v}")
        for p, c, d, v in df[
            ["pid", "concept_code", "condition_start_date", "visit_occurrence_id"]
        ].itertuples(index=False)
    )
    got = Counter()
    for r in ndjson["Condition"]:
        (coding,) = r["code"]["coding"]
        assert coding["system"] == SNOMED
        assert r["recordedDate"] == r["onsetDateTime"]
        got[
            (
                r["subject"]["reference"].removeprefix("Patient/"),
                coding["code"],
                r["onsetDateTime"],
                r["encounter"]["reference"],
            )
        ] += 1
    assert got == want
    assert ("13645005" in {k[1] for k in got}) and len({k[1] for k in got}) >= 5  # COPD and more


def test_medication_requests_are_rxnorm(ndjson: dict, omop: dict) -> None:
    df = omop["drug_exposure"]
    want = Counter(
        (p, c, _day(d), int(s), float(q))
        for p, c, d, s, q in df[
            ["pid", "concept_code", "drug_exposure_start_date", "days_supply", "quantity"]
        ].itertuples(index=False)
    )
    got = Counter()
    for r in ndjson["MedicationRequest"]:
        (coding,) = r["medicationCodeableConcept"]["coding"]
        assert coding["system"] == RXNORM
        supply = r["dispenseRequest"]["expectedSupplyDuration"]
        assert (supply["unit"], supply["system"], supply["code"]) == ("days", UCUM, "d")
        got[
            (
                r["subject"]["reference"].removeprefix("Patient/"),
                coding["code"],
                r["authoredOn"],
                supply["value"],
                r["dispenseRequest"]["quantity"]["value"],
            )
        ] += 1
    assert got == want
    assert any(k[1] == "8640" and k[3] == 5 for k in got)  # prednisone bursts: 5 days


def test_observations_are_loinc_with_ucum_units(ndjson: dict, omop: dict) -> None:
    df = omop["measurement"]
    want = Counter(
        (p, c, _day(d), float(v), u)
        for p, c, d, v, u in df[
            ["pid", "concept_code", "measurement_date", "value_as_number", "unit_code"]
        ].itertuples(index=False)
    )
    got = Counter()
    category = {}
    for r in ndjson["Observation"]:
        (coding,) = r["code"]["coding"]
        assert coding["system"] == LOINC
        q = r["valueQuantity"]
        assert q["system"] == UCUM
        assert q["unit"] == q["code"]
        got[
            (
                r["subject"]["reference"].removeprefix("Patient/"),
                coding["code"],
                r["effectiveDateTime"],
                q["value"],
                q["code"],
            )
        ] += 1
        category[coding["code"]] = r["category"][0]["coding"][0]["code"]
    assert got == want  # values equal exactly: JSON numbers round-trip
    assert category["1988-5"] == "laboratory"  # CRP
    assert category["8480-6"] == "vital-signs"  # systolic blood pressure
    assert category["39156-5"] == "vital-signs"  # BMI
    units = {k[1]: k[4] for k in got}
    assert units["1988-5"] == "mg/L"
    assert units["6690-2"] == "10*3/uL"
    assert units["8480-6"] == "mm[Hg]"


def test_bundles_hold_the_same_resources(ndjson: dict, bundles: dict) -> None:
    assert sorted(bundles) == sorted(r["id"] for r in ndjson["Patient"])
    from_bundles: dict[str, list[dict]] = {t: [] for t in RESOURCE_TYPES}
    for pid, b in bundles.items():
        assert b["resourceType"] == "Bundle"
        assert b["type"] == "collection"
        first = b["entry"][0]["resource"]
        assert (first["resourceType"], first["id"]) == ("Patient", pid)
        urls = [e["fullUrl"] for e in b["entry"]]
        assert len(set(urls)) == len(urls)
        for e in b["entry"]:
            r = e["resource"]
            assert e["fullUrl"].endswith(f"/{r['resourceType']}/{r['id']}")
            if r["resourceType"] != "Patient":
                assert r["subject"]["reference"] == f"Patient/{pid}"
            from_bundles[r["resourceType"]].append(r)
    for rtype in RESOURCE_TYPES:
        key = lambda r: r["id"]  # noqa: E731
        assert sorted(from_bundles[rtype], key=key) == sorted(ndjson[rtype], key=key), rtype


def test_output_folder_is_not_clobbered(cohort: Path, ndjson: dict) -> None:
    before = (cohort / "fhir" / "Patient.ndjson").read_bytes()
    with pytest.raises(InputError, match="not empty"):
        export_fhir(cohort)
    assert (cohort / "fhir" / "Patient.ndjson").read_bytes() == before
    again = export_fhir(cohort, overwrite=True)
    assert (again / "Patient.ndjson").read_bytes() == before  # deterministic
    assert not [p for p in cohort.iterdir() if p.name.startswith(".fhir")]  # no temp left


def test_missing_database_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"omop\.duckdb not found"):
        export_fhir(tmp_path)
    assert not (tmp_path / "fhir").exists()
