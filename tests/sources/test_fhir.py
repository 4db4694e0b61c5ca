"""FHIR reader: the same features as the OMOP reader on the same cohort, and bad input."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

import medweave.sources.omop  # noqa: F401  (registers the omop reader)
from medweave.cohort import Audit
from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources import ReadContext, available, get
from medweave.sources.ehr_sql import outcome_from_events
from medweave.sources.fhir import open_fhir, parse_fhir
from medweave.synth import synthesize
from medweave.synth.fhir import export_fhir

LOOKBACK = 1095


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fhir_reader") / "cohort"
    synthesize(out, n_patients=80, seed=5, workers=1)
    export_fhir(out)
    export_fhir(out, out=out / "fhir_bundles", bundle=True)
    return out


@pytest.fixture(scope="module")
def index(cohort: Path) -> pd.DataFrame:
    return pd.read_parquet(cohort / "index.parquet")[["patient_id", "index_date"]]


def _read(
    kind: str, base: Path, index: pd.DataFrame, *, lookback: int = LOOKBACK, **keys: Any
) -> tuple[ModalityBlock, Audit]:
    reader, spec_cls = get(kind)
    ctx = ReadContext(index=index, lookback_days=lookback, audit=Audit(), base_dir=base)
    block = reader(spec_cls(name="ehr", type=kind, **keys), ctx)
    return block, ctx.audit


@pytest.fixture(scope="module")
def from_omop(cohort: Path, index: pd.DataFrame) -> tuple[ModalityBlock, Audit]:
    return _read("omop", cohort, index, database="omop.duckdb")


def _assert_same(a: ModalityBlock, b: ModalityBlock) -> None:
    assert b.feature_names == a.feature_names
    assert b.ids == a.ids
    assert b.kind == a.kind == "tabular"
    np.testing.assert_array_equal(np.isnan(b.x), np.isnan(a.x))
    np.testing.assert_allclose(b.x, a.x, rtol=0, atol=1e-9, equal_nan=True)


def test_registered() -> None:
    assert "fhir" in available()
    assert "MedicationRequest" in available()["fhir"]


@pytest.mark.parametrize("folder", ["fhir", "fhir_bundles"])
def test_features_equal_the_omop_readers(
    cohort: Path, index: pd.DataFrame, from_omop: tuple[ModalityBlock, Audit], folder: str
) -> None:
    omop, omop_audit = from_omop
    block, audit = _read("fhir", cohort, index, path=folder)
    _assert_same(omop, block)
    # Not a trivial match: every domain and the measurement statistics are there.
    names = block.feature_names
    assert len(names) > 60
    for prefix in ("condition:SNOMED/", "drug:RxNorm/", "measurement:LOINC/", "visit:Visit/IP"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert "measurement:LOINC/1988-5:slope_per_year" in names
    assert np.isfinite(block.x[:, names.index("measurement:LOINC/1988-5:last")]).sum() > 20
    # Rows read, used and excluded (after the index date) agree too.
    assert audit.to_dict()["sources"] == omop_audit.to_dict()["sources"]
    assert audit.source("ehr").excluded["after_index"] > 0
    assert block.meta["fhir_resources"]["Observation"] > 1000


def test_deaths_give_the_cohort_outcome(cohort: Path, index: pd.DataFrame) -> None:
    """Patient.deceasedDateTime becomes mw_death: death within 730 days as in index.parquet."""
    truth = pd.read_parquet(cohort / "index.parquet")
    engine, parsed = open_fhir(cohort / "fhir")
    with engine:
        out = outcome_from_events(engine, index, death=True, horizon_days=730)
    assert len(parsed.deaths) == int(truth["event"].sum()) > 0
    assert out["patient_id"].tolist() == truth["patient_id"].tolist()
    np.testing.assert_array_equal(out["event"], truth["event"])
    np.testing.assert_array_equal(out["outcome"], truth["outcome"])
    died = truth["event"].to_numpy(dtype=bool)
    np.testing.assert_array_equal(out["time"][died], truth["time"][died])


def test_features_equal_with_another_lookback(cohort: Path, index: pd.DataFrame) -> None:
    omop, _ = _read("omop", cohort, index, lookback=200, database="omop.duckdb")
    block, audit = _read(
        "fhir", cohort, index, lookback=200, path="fhir", domains=["measurement", "visit"]
    )
    keep = [i for i, n in enumerate(omop.feature_names) if not n.startswith(("condition", "drug"))]
    assert block.feature_names == [omop.feature_names[i] for i in keep]
    np.testing.assert_allclose(block.x, omop.x[:, keep], rtol=0, atol=1e-9, equal_nan=True)
    src = audit.source("ehr")
    assert src.excluded["before_lookback"] > 0
    assert src.excluded["domain_not_selected"] > 0  # the Condition and MedicationRequest lines


def test_ndjson_and_bundles_together_are_deduplicated(
    cohort: Path, index: pd.DataFrame, from_omop: tuple[ModalityBlock, Audit], tmp_path: Path
) -> None:
    both = tmp_path / "both"
    shutil.copytree(cohort / "fhir", both / "ndjson")
    shutil.copytree(cohort / "fhir_bundles", both / "bundles")
    block, audit = _read("fhir", tmp_path, index, path="both")
    _assert_same(from_omop[0], block)
    n_resources = sum(len(p.read_text().splitlines()) for p in (cohort / "fhir").iterdir())
    assert audit.source("ehr").excluded["duplicate_resource"] == n_resources


def _copy_with(cohort: Path, tmp_path: Path, line: int, edit: Any) -> Path:
    """The NDJSON export with Observation.ndjson line ``line`` (1-based) passed through edit."""
    folder = tmp_path / "fhir"
    shutil.copytree(cohort / "fhir", folder)
    path = folder / "Observation.ndjson"
    lines = path.read_text().splitlines()
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")
    return folder


def _drop(element: str) -> Any:
    def edit(text: str) -> str:
        res = json.loads(text)
        del res[element]
        return json.dumps(res)

    return edit


def test_malformed_line_names_file_and_line(
    cohort: Path, index: pd.DataFrame, tmp_path: Path
) -> None:
    _copy_with(cohort, tmp_path, 3, lambda t: t[:-5])
    with pytest.raises(InputError, match=r"Observation\.ndjson line 3: not valid JSON"):
        _read("fhir", tmp_path, index, path="fhir")
    # Skip mode leaves the line out and counts it; the other lines are read.
    _, audit = _read("fhir", tmp_path, index, path="fhir", on_error="skip")
    src = audit.source("ehr")
    assert src.excluded["invalid_json"] == 1
    assert src.rows_used > 1000


def test_missing_subject_raises_with_file_line_and_element(
    cohort: Path, index: pd.DataFrame, tmp_path: Path
) -> None:
    _copy_with(cohort, tmp_path, 3, _drop("subject"))
    with pytest.raises(InputError) as err:
        _read("fhir", tmp_path, index, path="fhir")
    msg = str(err.value)
    assert "Observation.ndjson line 3" in msg
    assert "subject.reference" in msg
    assert "'obs-3'" in msg
    assert "on_error: skip" in msg


def test_missing_subject_skipped_and_audited(
    cohort: Path,
    index: pd.DataFrame,
    from_omop: tuple[ModalityBlock, Audit],
    tmp_path: Path,
) -> None:
    third = json.loads((cohort / "fhir" / "Observation.ndjson").read_text().splitlines()[2])
    pid = third["subject"]["reference"].removeprefix("Patient/")
    code = third["code"]["coding"][0]["code"]
    _copy_with(cohort, tmp_path, 3, _drop("subject"))
    block, audit = _read("fhir", tmp_path, index, path="fhir", on_error="skip")
    omop, omop_audit = from_omop
    src, ref = audit.source("ehr"), omop_audit.source("ehr")
    assert src.excluded["missing_subject"] == 1
    assert src.rows_read == ref.rows_read  # the resource is read, then excluded
    assert src.rows_used == ref.rows_used - 1  # it was in the window
    # Only that patient's features of that code change.
    assert block.feature_names == omop.feature_names
    differs = ~np.isclose(block.x, omop.x, rtol=0, atol=1e-9, equal_nan=True)
    rows, cols = np.nonzero(differs)
    assert set(rows) == {block.ids.index(pid)}
    assert {block.feature_names[c] for c in cols} <= {
        n for n in block.feature_names if n.startswith(f"measurement:LOINC/{code}:")
    }
    assert f"measurement:LOINC/{code}:count" in {block.feature_names[c] for c in cols}


def test_missing_date_raises_or_is_skipped(
    cohort: Path, index: pd.DataFrame, tmp_path: Path
) -> None:
    _copy_with(cohort, tmp_path, 7, _drop("effectiveDateTime"))
    with pytest.raises(InputError, match=r"line 7: Observation 'obs-7' has no date") as err:
        _read("fhir", tmp_path, index, path="fhir")
    assert "effectiveDateTime" in str(err.value)
    _, audit = _read("fhir", tmp_path, index, path="fhir", on_error="skip")
    assert audit.source("ehr").excluded["missing_date"] == 1
    # A domain that is not read does not need its dates.
    _, audit = _read("fhir", tmp_path, index, path="fhir", domains=["condition"])
    assert audit.source("ehr").excluded["domain_not_selected"] > 1000


def test_invalid_date_is_an_input_error(cohort: Path, index: pd.DataFrame, tmp_path: Path) -> None:
    def edit(text: str) -> str:
        res = json.loads(text)
        res["effectiveDateTime"] = "2019-02-30"
        return json.dumps(res)

    _copy_with(cohort, tmp_path, 2, edit)
    with pytest.raises(InputError, match=r"line 2: .*'2019-02-30', not a calendar date"):
        _read("fhir", tmp_path, index, path="fhir")


# --- small hand-written inputs ------------------------------------------------------------------

SMALL_INDEX = pd.DataFrame(
    {"patient_id": ["a", "b"], "index_date": pd.to_datetime(["2020-06-01", "2020-06-01"])}
)


def _patient(pid: str, gender: str = "female", birth: str = "1950-06-01") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth}


def _obs(pid: str, code: str, value: float, date: str = "2020-05-01") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o-{pid}-{code}-{date}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": f"{date}T08:30:00+02:00",
        "valueQuantity": {"value": value, "unit": "mg/L", "code": "mg/L"},
    }


def _ndjson(path: Path, resources: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in resources))
    return path


def _read_small(tmp_path: Path, path: str, **keys: Any) -> tuple[ModalityBlock, Audit]:
    return _read("fhir", tmp_path, SMALL_INDEX, min_patients=1, **keys, path=path)


def test_unsupported_resources_are_counted(tmp_path: Path) -> None:
    _ndjson(
        tmp_path / "all.ndjson",
        [
            _patient("a", "male", "1960-01-15"),
            _obs("a", "1988-5", 4.0),
            {"resourceType": "Immunization", "id": "i1", "patient": {"reference": "Patient/a"}},
            {"resourceType": "AllergyIntolerance", "id": "x1"},
            {**_obs("b", "1988-5", 9.0), "status": "entered-in-error"},
        ],
    )
    block, audit = _read_small(tmp_path, "all.ndjson")
    src = audit.source("ehr")
    assert src.excluded["unsupported_resource"] == 2
    assert src.excluded["entered_in_error"] == 1
    x = dict(zip(block.feature_names, block.x[block.ids.index("a")], strict=True))
    assert x["sex_male"] == 1.0
    assert x["age_at_index"] == pytest.approx(
        (pd.Timestamp("2020-06-01") - pd.Timestamp("1960-01-15")).days / 365.25
    )
    assert x["measurement:LOINC/1988-5:last"] == 4.0
    # b has no Patient resource (and its only record was an error): absent, not zeros.
    assert not block.present[block.ids.index("b")]
    assert np.isnan(block.x[block.ids.index("b")]).all()


def test_bundle_with_urn_references_panels_and_medication_references(tmp_path: Path) -> None:
    """Synthea-style: urn:uuid references, a blood pressure panel, a Medication entry."""
    pat = "urn:uuid:7c1d6a40-0000-4000-8000-000000000001"
    med = "urn:uuid:7c1d6a40-0000-4000-8000-0000000000aa"
    entries = [
        {"fullUrl": pat, "resource": _patient("7c1d6a40-0000-4000-8000-000000000001", "male")},
        {
            "fullUrl": med,
            "resource": {
                "resourceType": "Medication",
                "code": {
                    "coding": [
                        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "8640"}
                    ]
                },
            },
        },
        {
            "fullUrl": "urn:uuid:e1",
            "resource": {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "EMER",
                },
                "subject": {"reference": pat},
                "period": {"start": "2020-04-02T10:00:00Z", "end": "2020-04-02T12:00:00Z"},
            },
        },
        {
            "fullUrl": "urn:uuid:o1",
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
                "subject": {"reference": pat},
                "effectiveDateTime": "2020-04-02T10:30:00Z",
                "component": [
                    {
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                        "valueQuantity": {"value": 141, "unit": "mm[Hg]"},
                    },
                    {
                        "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                        "valueQuantity": {"value": 88.5, "unit": "mm[Hg]"},
                    },
                ],
            },
        },
        {
            "fullUrl": "urn:uuid:m1",
            "resource": {
                "resourceType": "MedicationRequest",
                "status": "completed",
                "intent": "order",
                "medicationReference": {"reference": med},
                "subject": {"reference": pat},
                "authoredOn": "2020-04-02",
            },
        },
        {
            "fullUrl": "urn:uuid:c1",
            "resource": {
                "resourceType": "Condition",
                "code": {
                    "coding": [
                        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J44.9"},
                        {"system": "http://snomed.info/sct", "code": "13645005"},
                    ]
                },
                "subject": {"reference": pat},
                "onsetDateTime": "2020-04-02",
            },
        },
    ]
    (tmp_path / "b.json").write_text(
        json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}, indent=1)
    )
    parsed = parse_fhir(tmp_path / "b.json")
    ev = parsed.events.sort_values(["domain", "code"]).reset_index(drop=True)
    assert set(ev["patient_id"]) == {"7c1d6a40-0000-4000-8000-000000000001"}
    got = list(ev[["domain", "vocabulary", "code"]].itertuples(index=False, name=None))
    assert got == [
        ("condition", "SNOMED", "13645005"),  # SNOMED preferred over ICD-10-CM
        ("drug", "RxNorm", "8640"),
        ("measurement", "LOINC", "8462-4"),
        ("measurement", "LOINC", "8480-6"),
        ("visit", "Visit", "ER"),
    ]
    assert ev.loc[ev["code"] == "8480-6", "value"].item() == 141.0
    assert ev.loc[ev["code"] == "8462-4", "unit"].item() == "mm[Hg]"
    assert set(ev["event_date"].astype(str)) == {"2020-04-02"}
    index = pd.DataFrame(
        {
            "patient_id": ["7c1d6a40-0000-4000-8000-000000000001"],
            "index_date": pd.to_datetime(["2020-05-01"]),
        }
    )
    block, _ = _read("fhir", tmp_path, index, path="b.json", min_patients=1)
    x = dict(zip(block.feature_names, block.x[0], strict=True))
    assert x["measurement:LOINC/8480-6:last"] == 141.0
    assert x["visit:Visit/ER:count"] == 1.0
    assert x["visit:Visit/ER:days_since_last"] == 29.0
    assert x["drug:RxNorm/8640:count"] == 1.0


def test_bundle_errors_name_the_entry(tmp_path: Path) -> None:
    good = {"resource": _obs("a", "1988-5", 4.0)}
    (tmp_path / "b.json").write_text(
        json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [good, 42]})
    )
    with pytest.raises(InputError, match=r"b\.json entry 1: is a JSON int.*expected a JSON object"):
        _read_small(tmp_path, "b.json")
    no_subject = {k: v for k, v in _obs("a", "718-7", 4.0).items() if k != "subject"}
    (tmp_path / "b.json").write_text(
        json.dumps({"resourceType": "Bundle", "entry": [good, good, {"resource": no_subject}]})
    )
    with pytest.raises(InputError, match=r"b\.json entry 2: Observation .*subject\.reference"):
        _read_small(tmp_path, "b.json")
    _, audit = _read_small(tmp_path, "b.json", on_error="skip")
    src = audit.source("ehr")
    assert src.excluded["missing_subject"] == 1
    assert src.excluded["duplicate_resource"] == 1  # entry 1 repeats entry 0
    (tmp_path / "b.json").write_text('{"resourceType": "Bundle",\n "entry": [}')
    with pytest.raises(InputError, match=r"b\.json line 2 column \d+: not valid JSON"):
        _read_small(tmp_path, "b.json")


def test_unresolved_subject_and_medication(tmp_path: Path) -> None:
    req = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "completed",
        "intent": "order",
        "medicationReference": {"reference": "Medication/nope"},
        "subject": {"reference": "Patient/a"},
        "authoredOn": "2020-01-01",
    }
    obs = {**_obs("a", "1988-5", 4.0), "subject": {"reference": "urn:uuid:unknown"}}
    panel = {
        **_obs("a", "85354-9", 0.0),
        "subject": {"reference": "Group/7"},
        "component": [
            {"code": _obs("a", c, 0)["code"], "valueQuantity": {"value": v}}
            for c, v in (("8480-6", 120), ("8462-4", 80))
        ],
    }
    del panel["valueQuantity"]
    _ndjson(
        tmp_path / "x.ndjson",
        [_patient("a"), req, obs, panel, _patient("b"), _obs("b", "718-7", 12.5)],
    )
    with pytest.raises(
        InputError, match=r"x\.ndjson line 2: MedicationRequest 'm1' .*'Medication/nope'"
    ):
        _read_small(tmp_path, "x.ndjson")
    _, audit = _read_small(tmp_path, "x.ndjson", on_error="skip")
    src = audit.source("ehr")
    assert src.excluded["unresolved_medication"] == 1
    assert src.excluded["unresolved_subject"] == 2  # the panel counts once
    assert src.rows_used == 1  # only b's haemoglobin
    assert src.rows_read == 1 + 3


def test_spec_and_path_errors(tmp_path: Path) -> None:
    _, spec_cls = get("fhir")
    with pytest.raises(ValidationError):
        spec_cls(name="ehr", type="fhir", path="x", domain=["visit"])  # misspelt key
    with pytest.raises(ValidationError):
        spec_cls(name="ehr", type="fhir", path="x", domains=[])
    with pytest.raises(ValidationError):
        spec_cls(name="ehr", type="fhir", path="x", domains=["labs"])
    with pytest.raises(InputError, match="FHIR path not found"):
        _read_small(tmp_path, "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no FHIR files"):
        _read_small(tmp_path, "empty")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"list\.json: holds a JSON list.*expected a JSON object"):
        _read_small(tmp_path, "list.json")


# --- value checks and unreadable input (issue 16) -------------------------------------------


def _two_patients(tmp_path: Path, extra: list[dict[str, Any]], name: str = "x.ndjson") -> Path:
    """``a`` and ``b`` with a Patient and an Observation each, then ``extra``."""
    resources = [_patient("a"), _obs("a", "1988-5", 4.0), _patient("b"), _obs("b", "1988-5", 2.0)]
    return _ndjson(tmp_path / name, resources + extra)


@pytest.mark.parametrize(
    ("raw", "problem", "shown"),
    [
        ('"6.1"', "not_a_number", "'6.1', which is text"),
        ("true", "not_a_number", "True, which is not a number"),
        ("NaN", "non_finite", "nan, which is not a finite number"),
        ("-Infinity", "non_finite", "-inf, which is not a finite number"),
        ("1e400", "non_finite", "inf, which is not a finite number"),
    ],
)
def test_observation_values_must_be_finite_json_numbers(
    tmp_path: Path, raw: str, problem: str, shown: str
) -> None:
    """Python's json reads NaN, Infinity and 1e400 as floats; FHIR allows none of them."""
    bad = json.dumps(_obs("a", "718-7", 99.0)).replace("99.0", raw)
    path = _two_patients(tmp_path, [])
    path.write_text(path.read_text() + bad + "\n")
    with pytest.raises(InputError) as err:
        _read_small(tmp_path, "x.ndjson")
    msg = str(err.value)
    assert "x.ndjson line 5: Observation" in msg
    assert f"valueQuantity.value {shown}" in msg
    assert "expected a finite JSON number" in msg and "on_error: skip in source 'ehr'" in msg
    block, audit = _read_small(tmp_path, "x.ndjson", on_error="skip")
    assert audit.source("ehr").excluded[f"valueQuantity.value:{problem}"] == 1
    assert not any("718-7" in n for n in block.feature_names)


def test_a_bad_component_value_leaves_the_whole_panel_out(tmp_path: Path) -> None:
    panel = {**_obs("a", "85354-9", 0.0), "id": "bp"}
    del panel["valueQuantity"]
    panel["component"] = [
        {"code": _obs("a", "8480-6", 0)["code"], "valueQuantity": {"value": 120}},
        {"code": _obs("a", "8462-4", 0)["code"], "valueQuantity": {"value": "80"}},
    ]
    _two_patients(tmp_path, [panel])
    with pytest.raises(InputError, match=r"line 5: Observation 'bp' .*component\[1\]\.value"):
        _read_small(tmp_path, "x.ndjson")
    block, audit = _read_small(tmp_path, "x.ndjson", on_error="skip")
    assert audit.source("ehr").excluded["valueQuantity.value:not_a_number"] == 1
    assert not any("8480-6" in n for n in block.feature_names)


@pytest.mark.parametrize(
    ("date", "words"),
    [
        ("03/01/2020", "not a FHIR date (day and month in an ambiguous order)"),
        ("2020-03", "a date without a day"),
        ("2020-03-01junk", "not a FHIR date"),
        ("2020-03-01T25:00:00Z", "not a FHIR date"),
        ("2020-13-01", "not a FHIR date"),
        ("20200301", "not a FHIR date"),
    ],
)
def test_record_dates_must_be_fhir_dates(tmp_path: Path, date: str, words: str) -> None:
    condition = {
        "resourceType": "Condition",
        "id": "c1",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "13645005"}]},
        "subject": {"reference": "Patient/a"},
        "onsetDateTime": date,
    }
    _two_patients(tmp_path, [condition])
    with pytest.raises(InputError) as err:
        _read_small(tmp_path, "x.ndjson")
    msg = str(err.value)
    assert f"line 5: Condition 'c1' has onsetDateTime {date!r}, {words}" in msg
    assert "; expected a FHIR date or dateTime with a day" in msg
    _, audit = _read_small(tmp_path, "x.ndjson", on_error="skip")
    assert audit.source("ehr").excluded["invalid_date"] == 1


@pytest.mark.parametrize(
    ("birth", "reason", "words"),
    [
        ("2999-01-01", "birth_in_future", "in the future"),
        ("1950-13-01", "invalid_birth_date", "not a FHIR date"),
        ("1950-02-30", "invalid_birth_date", "not a calendar date"),
        ("01/06/1950", "invalid_birth_date", "not a FHIR date"),
    ],
)
def test_bad_birth_dates_are_named_but_never_shown(
    tmp_path: Path, birth: str, reason: str, words: str
) -> None:
    _ndjson(
        tmp_path / "x.ndjson",
        [_patient("a"), _obs("a", "1988-5", 4.0), _patient("b", birth=birth)],
    )
    with pytest.raises(InputError) as err:
        _read_small(tmp_path, "x.ndjson")
    msg = str(err.value)
    assert "x.ndjson line 3: Patient 'b' has a birthDate" in msg and words in msg
    assert birth not in msg and birth[:4] not in msg  # a birth date identifies a person
    _, audit = _read_small(tmp_path, "x.ndjson", on_error="skip")
    assert audit.source("ehr").excluded[reason] == 1


def test_records_before_the_birth_date(tmp_path: Path) -> None:
    """An event before the earliest day a (partial) birthDate allows is left out."""
    _ndjson(
        tmp_path / "x.ndjson",
        [
            _patient("a", birth="2019-06"),
            _obs("a", "1988-5", 4.0, date="2019-06-01"),  # possible: born on 1 June
            _obs("a", "1988-5", 9.0, date="2019-05-31"),
            _patient("b"),
            _obs("b", "1988-5", 2.0),
        ],
    )
    with pytest.raises(InputError) as err:
        _read_small(tmp_path, "x.ndjson")
    msg = str(err.value)
    assert "x.ndjson line 3: Observation" in msg
    assert "effectiveDateTime 2019-05-31, before the birth of Patient 'a'" in msg
    assert "2019-06" not in msg.replace("2019-06-01", "")
    block, audit = _read_small(tmp_path, "x.ndjson", on_error="skip")
    assert audit.source("ehr").excluded["record_before_birth"] == 1
    x = dict(zip(block.feature_names, block.x[block.ids.index("a")], strict=True))
    assert x["measurement:LOINC/1988-5:count"] == 1.0 and x["measurement:LOINC/1988-5:max"] == 4.0


def test_bad_ndjson_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = _two_patients(tmp_path, [])
    good = path.read_bytes()
    path.write_bytes(
        b"\xef\xbb\xbf" + good + b'{"resourceType": "Obs\n[1, 2]\n{"id": "x"}\n\xff\xfe\n'
    )
    with pytest.raises(InputError, match=r"x\.ndjson line 5: not valid JSON \(Unterminated"):
        _read_small(tmp_path, "x.ndjson")
    block, audit = _read_small(tmp_path, "x.ndjson", on_error="skip")
    src = audit.source("ehr")
    assert src.excluded["invalid_json"] == 2  # the cut line and the one that is not UTF-8
    assert src.excluded["not_a_resource"] == 2  # a list, and an object without resourceType
    assert src.rows_used == 2  # the first line was read despite its byte-order mark
    assert block.present.all()


def _bundle(entries: list[dict[str, Any]]) -> str:
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}, indent=1)


@pytest.mark.parametrize(
    ("name", "content", "message", "reason"),
    [
        ("cut.json", _bundle([{"resource": _patient("c")}])[:-30], r"cut short", "unreadable_file"),
        ("empty.json", '{"resourceType": "Bundle"}', r"Bundle\.entry: is missing", "empty_bundle"),
        ("other.json", '{"name": "not FHIR"}', r"no resourceType", "not_a_resource"),
        ("latin.json", _bundle([]).encode("utf-16"), r"line 1: not UTF-8", "unreadable_file"),
        (
            "bad.ndjson.gz",
            gzip.compress(b'{"resourceType": "Patient", "id": "c"}\n' * 50)[:-20],
            r"line \d+: cannot read the file: its gzip data is corrupt",
            "unreadable_file",
        ),
        ("bad.json.gz", b"\x1f\x8b\x08\x00garbage", r"gzip data is corrupt", "unreadable_file"),
    ],
)
def test_unreadable_files_are_left_out_whole(
    tmp_path: Path, name: str, content: str | bytes, message: str, reason: str
) -> None:
    folder = tmp_path / "fhir"
    folder.mkdir()
    _two_patients(folder, [])
    target = folder / name
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match=re.escape(str(target)) + ".*" + message):
        _read_small(tmp_path, "fhir")
    block, audit = _read_small(tmp_path, "fhir", on_error="skip")
    src = audit.source("ehr")
    assert src.excluded[reason] == 1
    assert src.rows_used == 2 and block.present.all()
    parsed = parse_fhir(folder, on_error="skip")  # nothing of the bad file is used
    assert sorted(parsed.persons["patient_id"]) == ["a", "b"]


def test_path_with_spaces_and_accents_reads_fine(tmp_path: Path) -> None:
    folder = tmp_path / "données patients" / "exporté 2020"
    folder.mkdir(parents=True)
    _ndjson(folder / "Patient é.ndjson", [_patient("a"), _patient("b")])
    with gzip.open(folder / "Observation ü.ndjson.gz", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(_obs("a", "1988-5", 4.0)) + "\n" + json.dumps(_obs("b", "1988-5", 1.0)))
    block, audit = _read_small(tmp_path, "données patients")
    assert audit.source("ehr").rows_used == 2 and block.present.all()
    assert block.meta["fhir_files"] == 2


def test_patients_without_a_patient_resource_are_missing(tmp_path: Path) -> None:
    """Records are not enough: a patient with no Patient resource has no person record, so
    is absent (not present with zero counts), and the audit says why."""
    _ndjson(
        tmp_path / "x.ndjson",
        [_patient("a"), _obs("a", "1988-5", 4.0), _obs("b", "1988-5", 2.0)],
    )
    block, audit = _read_small(tmp_path, "x.ndjson")
    src = audit.source("ehr")
    assert block.present.tolist() == [True, False]
    assert np.isnan(block.x[1]).all()
    assert src.patients == 1
    assert src.patients_missing["no_person_record"] == 1
