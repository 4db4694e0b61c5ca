"""The synthetic EHR as FHIR R4: NDJSON per resource type, or one Bundle per patient.

:func:`export_fhir` reads ``omop.duckdb`` of a cohort written by
:func:`medweave.synth.synthesize` and writes the same records as FHIR R4 resources:

=======================  ===================  =============================================
OMOP table               FHIR resource        content
=======================  ===================  =============================================
person (+ death,         Patient              ``id`` = ``person_source_value``, identifier,
location)                                     gender, birthDate, deceasedDateTime, postalCode
visit_occurrence         Encounter            class (v3 ActCode IMP / AMB / EMER), period
condition_occurrence     Condition            SNOMED CT code, onsetDateTime, recordedDate
drug_exposure            MedicationRequest    RxNorm code, authoredOn, dispenseRequest
                                              (quantity, expectedSupplyDuration in days)
measurement              Observation          LOINC code, category laboratory / vital-signs,
                                              effectiveDateTime, valueQuantity in UCUM
=======================  ===================  =============================================

Resource ids are ``enc-<visit_occurrence_id>``, ``cond-<condition_occurrence_id>``,
``med-<drug_exposure_id>`` and ``obs-<measurement_id>``; every resource refers to its
patient as ``Patient/<id>`` and, where the OMOP row has a visit, to ``Encounter/enc-<id>``.

The JSON is built from templates: each resource shape is written once as a Python dict,
dumped with the standard library ``json`` and filled, row by row, with values that were
JSON-encoded column-wise (strings through :func:`json.dumps`, numbers through ``repr``),
so the output is valid JSON without building a dict per row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from medweave._atomic import atomic_dir
from medweave.errors import InputError

__all__ = ["RESOURCE_TYPES", "SYSTEMS", "export_fhir"]

#: The NDJSON files written, one per resource type, in this order.
RESOURCE_TYPES = ("Patient", "Encounter", "Condition", "MedicationRequest", "Observation")

#: OMOP vocabulary id -> FHIR code system URI.
SYSTEMS: dict[str, str] = {
    "SNOMED": "http://snomed.info/sct",
    "LOINC": "http://loinc.org",
    "RxNorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "UCUM": "http://unitsofmeasure.org",
}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
COND_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
IDENTIFIER_SYSTEM = "urn:medweave:person_source_value"
#: Base of the ``fullUrl`` of Bundle entries (a reserved, never-resolving domain).
BUNDLE_BASE = "https://medweave.invalid/fhir"

#: OMOP visit concept -> (v3 ActCode, display).
VISIT_CLASS: dict[int, tuple[str, str]] = {
    9201: ("IMP", "inpatient encounter"),
    9202: ("AMB", "ambulatory"),
    9203: ("EMER", "emergency"),
    262: ("IMP", "inpatient encounter"),  # Emergency Room and Inpatient Visit
}
GENDER = {8507: "male", 8532: "female"}

#: LOINC codes of the FHIR vital signs profile; other measurements are laboratory.
VITAL_SIGNS = frozenset(
    {
        "85353-1",  # vital signs panel
        "9279-1",  # respiratory rate
        "8867-4",  # heart rate
        "2708-6",  # oxygen saturation
        "59408-5",  # oxygen saturation by pulse oximetry
        "8310-5",  # body temperature
        "8302-2",  # body height
        "9843-4",  # head circumference
        "29463-7",  # body weight
        "39156-5",  # body mass index
        "85354-9",  # blood pressure panel
        "8480-6",  # systolic blood pressure
        "8462-4",  # diastolic blood pressure
    }
)

_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PLACEHOLDER = re.compile(r'"@(\w+)"')


def export_fhir(
    cohort_dir: str | Path,
    *,
    out: str | Path | None = None,
    bundle: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write the EHR of the cohort in ``cohort_dir`` as FHIR R4; return the folder written.

    By default ``out`` is ``cohort_dir/fhir`` and holds ``Patient.ndjson``,
    ``Encounter.ndjson``, ``Condition.ndjson``, ``MedicationRequest.ndjson`` and
    ``Observation.ndjson`` (one resource per line, FHIR bulk-data style). With ``bundle``
    it holds one ``<patient id>.json`` per patient: a Bundle of type ``collection`` with
    the Patient and all its resources. The folder is written under a temporary name and
    renamed at the end; an existing non-empty ``out`` is replaced only with ``overwrite``.
    """
    cohort_dir = Path(cohort_dir)
    db = cohort_dir / "omop.duckdb"
    if not db.is_file():
        raise InputError(
            f"{db} not found; point export_fhir at a cohort folder written by medweave synth"
        )
    target = Path(out) if out is not None else cohort_dir / "fhir"
    con = duckdb.connect(str(db), read_only=True)
    try:
        resources = _resources(con)
    finally:
        con.close()
    with atomic_dir(target, overwrite=overwrite) as tmp:
        if bundle:
            _write_bundles(tmp, resources)
        else:
            for rtype in RESOURCE_TYPES:
                lines = resources[rtype].lines
                text = "\n".join(lines) + "\n" if lines else ""
                (tmp / f"{rtype}.ndjson").write_text(text, encoding="utf-8")
    return target


# --- reading OMOP and rendering resources --------------------------------------------------


@dataclass
class _Rendered:
    """Resources of one type: each one's patient id, resource id and JSON text."""

    patients: list[str]
    ids: list[str]
    lines: list[str]


def _resources(con: duckdb.DuckDBPyConnection) -> dict[str, _Rendered]:
    """Per resource type: each resource's patient, id and JSON text, in OMOP row order."""
    person = con.execute(
        """
        SELECT p.person_id,
               coalesce(p.person_source_value, CAST(p.person_id AS VARCHAR)) AS pid,
               p.gender_concept_id,
               coalesce(strftime(CAST(p.birth_datetime AS DATE), '%Y-%m-%d'),
                        CASE WHEN p.month_of_birth IS NOT NULL AND p.day_of_birth IS NOT NULL
                             THEN strftime(make_date(p.year_of_birth, p.month_of_birth,
                                                     p.day_of_birth), '%Y-%m-%d')
                             WHEN p.month_of_birth IS NOT NULL
                             THEN printf('%04d-%02d', p.year_of_birth, p.month_of_birth)
                             WHEN p.year_of_birth IS NOT NULL
                             THEN printf('%04d', p.year_of_birth) END) AS birth,
               strftime(d.death_date, '%Y-%m-%d') AS death,
               l.zip
        FROM person p
        LEFT JOIN (SELECT person_id, min(death_date) AS death_date FROM death GROUP BY 1) d
               USING (person_id)
        LEFT JOIN location l ON l.location_id = p.location_id
        ORDER BY p.person_id
        """
    ).df()
    bad = [pid for pid in person["pid"] if not _FHIR_ID.fullmatch(pid)]
    if bad:
        raise InputError(
            f"person_source_value {bad[0]!r} is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .); "
            f"{len(bad)} persons are affected"
        )
    if person["pid"].duplicated().any():
        dup = person["pid"][person["pid"].duplicated()].iloc[0]
        raise InputError(f"person_source_value {dup!r} is used by more than one person")
    pid_of = dict(zip(person["person_id"].tolist(), person["pid"].tolist(), strict=True))
    pids = person["pid"].tolist()
    out = {"Patient": _Rendered(pids, pids, _patients(person))}
    for rtype, fn in (
        ("Encounter", _encounters),
        ("Condition", _conditions),
        ("MedicationRequest", _medication_requests),
        ("Observation", _observations),
    ):
        df = fn(con)
        owner = df["person_id"].map(pid_of)
        if owner.isna().any():
            orphan = int(df["person_id"][owner.isna()].iloc[0])
            raise InputError(f"{rtype}: OMOP person_id {orphan} is not in the person table")
        df["ref"] = "Patient/" + owner
        out[rtype] = _Rendered(owner.tolist(), df["id"].tolist(), _RENDER[rtype](df))
    return out


def _patients(person: pd.DataFrame) -> list[str]:
    gender = person["gender_concept_id"].map(GENDER).fillna("unknown")
    zips = _jstr(person["zip"])
    address = _Template({"postalCode": "@zip"}).render({"zip": zips})
    return _Template(
        {
            "resourceType": "Patient",
            "id": "@id",
            "identifier": [{"system": IDENTIFIER_SYSTEM, "value": "@id"}],
            "gender": "@gender",
            "birthDate": "@birth",
            "deceasedDateTime": "@death",
            "address": ["@address"],
        }
    ).render(
        {
            "id": _jstr(person["pid"]),
            "gender": _jstr(gender),
            "birth": _jstr(person["birth"]),
            "death": _jstr(person["death"]),
            "address": _only_if(address, zips),
        }
    )


def _encounters(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    df = con.execute(
        """
        SELECT visit_occurrence_id, person_id, visit_concept_id,
               'enc-' || visit_occurrence_id AS id,
               strftime(visit_start_date, '%Y-%m-%d') AS start,
               strftime(visit_end_date, '%Y-%m-%d') AS "end"
        FROM visit_occurrence ORDER BY visit_occurrence_id
        """
    ).df()
    unknown = sorted(set(df["visit_concept_id"].dropna().astype(int)) - set(VISIT_CLASS))
    if unknown or df["visit_concept_id"].isna().any():
        raise InputError(
            f"visit_occurrence: visit_concept_id {unknown[0] if unknown else None} has no "
            f"FHIR Encounter class; expected one of {', '.join(map(str, VISIT_CLASS))}"
        )
    kind = df["visit_concept_id"].astype(int)
    df["cls"] = kind.map({k: v[0] for k, v in VISIT_CLASS.items()})
    df["cls_display"] = kind.map({k: v[1] for k, v in VISIT_CLASS.items()})
    return df


def _render_encounters(df: pd.DataFrame) -> list[str]:
    return _Template(
        {
            "resourceType": "Encounter",
            "id": "@id",
            "status": "finished",
            "class": {"system": ACT_CODE, "code": "@cls", "display": "@display"},
            "subject": {"reference": "@ref"},
            "period": {"start": "@start", "end": "@end"},
        }
    ).render(
        {
            "id": _jstr(df["id"]),
            "cls": _jstr(df["cls"]),
            "display": _jstr(df["cls_display"]),
            "ref": _jstr(df["ref"]),
            "start": _jstr(df["start"]),
            "end": _jstr(df["end"]),
        }
    )


def _conditions(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(
        """
        SELECT o.person_id, 'cond-' || o.condition_occurrence_id AS id,
               c.vocabulary_id, c.concept_code, c.concept_name,
               strftime(o.condition_start_date, '%Y-%m-%d') AS start,
               'Encounter/enc-' || o.visit_occurrence_id AS enc
        FROM condition_occurrence o
        LEFT JOIN concept c ON c.concept_id = o.condition_concept_id
        ORDER BY o.condition_occurrence_id
        """
    ).df()


def _render_conditions(df: pd.DataFrame) -> list[str]:
    return _Template(
        {
            "resourceType": "Condition",
            "id": "@id",
            "verificationStatus": {"coding": [{"system": COND_VERIFICATION, "code": "confirmed"}]},
            "category": [{"coding": [{"system": COND_CATEGORY, "code": "encounter-diagnosis"}]}],
            "code": "@code",
            "subject": {"reference": "@ref"},
            "encounter": "@enc",
            "onsetDateTime": "@start",
            "recordedDate": "@start",
        }
    ).render(
        {
            "id": _jstr(df["id"]),
            "code": _codeable(df, "condition_occurrence"),
            "ref": _jstr(df["ref"]),
            "enc": _reference(df["enc"]),
            "start": _jstr(df["start"]),
        }
    )


def _medication_requests(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(
        """
        SELECT o.person_id, 'med-' || o.drug_exposure_id AS id,
               c.vocabulary_id, c.concept_code, c.concept_name,
               strftime(o.drug_exposure_start_date, '%Y-%m-%d') AS start,
               CAST(o.days_supply AS VARCHAR) AS days_supply,
               o.quantity,
               'Encounter/enc-' || o.visit_occurrence_id AS enc
        FROM drug_exposure o
        LEFT JOIN concept c ON c.concept_id = o.drug_concept_id
        ORDER BY o.drug_exposure_id
        """
    ).df()


def _render_medication_requests(df: pd.DataFrame) -> list[str]:
    days, amount = _lit(df["days_supply"]), _jfloat(df["quantity"])
    supply = _Template(
        {"value": "@days", "unit": "days", "system": SYSTEMS["UCUM"], "code": "d"}
    ).render({"days": days})
    quantity = _Template({"value": "@q"}).render({"q": amount})
    dispense = _Template({"quantity": "@quantity", "expectedSupplyDuration": "@supply"}).render(
        {"quantity": _only_if(quantity, amount), "supply": _only_if(supply, days)}
    )
    return _Template(
        {
            "resourceType": "MedicationRequest",
            "id": "@id",
            "status": "completed",
            "intent": "order",
            "medicationCodeableConcept": "@code",
            "subject": {"reference": "@ref"},
            "encounter": "@enc",
            "authoredOn": "@start",
            "dispenseRequest": "@dispense",
        }
    ).render(
        {
            "id": _jstr(df["id"]),
            "code": _codeable(df, "drug_exposure"),
            "ref": _jstr(df["ref"]),
            "enc": _reference(df["enc"]),
            "start": _jstr(df["start"]),
            "dispense": [d if d != "{}" else None for d in dispense],
        }
    )


def _observations(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(
        """
        SELECT o.person_id, 'obs-' || o.measurement_id AS id,
               c.vocabulary_id, c.concept_code, c.concept_name,
               strftime(o.measurement_date, '%Y-%m-%d') AS date,
               o.value_as_number,
               u.concept_code AS unit_code,
               coalesce(o.unit_source_value, u.concept_code) AS unit_text,
               'Encounter/enc-' || o.visit_occurrence_id AS enc
        FROM measurement o
        LEFT JOIN concept c ON c.concept_id = o.measurement_concept_id
        LEFT JOIN concept u ON u.concept_id = o.unit_concept_id
        ORDER BY o.measurement_id
        """
    ).df()


def _render_observations(df: pd.DataFrame) -> list[str]:
    category = np.where(df["concept_code"].isin(VITAL_SIGNS), "vital-signs", "laboratory")
    value = _jfloat(df["value_as_number"])
    quantity = _Template(
        {"value": "@value", "unit": "@unit", "system": SYSTEMS["UCUM"], "code": "@code"}
    ).render(
        {
            "value": value,
            "unit": _jstr(df["unit_text"]),
            "code": _jstr(df["unit_code"]),
        }
    )
    return _Template(
        {
            "resourceType": "Observation",
            "id": "@id",
            "status": "final",
            "category": [{"coding": [{"system": OBS_CATEGORY, "code": "@category"}]}],
            "code": "@code",
            "subject": {"reference": "@ref"},
            "encounter": "@enc",
            "effectiveDateTime": "@date",
            "valueQuantity": "@quantity",
        }
    ).render(
        {
            "id": _jstr(df["id"]),
            "category": _jstr(pd.Series(category)),
            "code": _codeable(df, "measurement"),
            "ref": _jstr(df["ref"]),
            "enc": _reference(df["enc"]),
            "date": _jstr(df["date"]),
            "quantity": _only_if(quantity, value),
        }
    )


_RENDER = {
    "Encounter": _render_encounters,
    "Condition": _render_conditions,
    "MedicationRequest": _render_medication_requests,
    "Observation": _render_observations,
}


def _codeable(df: pd.DataFrame, table: str) -> list[str | None]:
    """A CodeableConcept per row from the concept's vocabulary, code and name."""
    missing = df["concept_code"].isna()
    if missing.any():
        raise InputError(
            f"{table}: {int(missing.sum())} rows have a concept id that is not in the concept "
            "table; add the concept rows"
        )
    cols = ["vocabulary_id", "concept_code", "concept_name"]
    keys = df[cols].fillna("")
    key = keys.groupby(cols, sort=False).ngroup().to_numpy()  # numbered by first appearance
    u = keys.drop_duplicates(ignore_index=True)
    system = u["vocabulary_id"].map(lambda v: SYSTEMS.get(v, f"urn:omop:vocabulary:{v}"))
    rendered = _Template(
        {"coding": [{"system": "@system", "code": "@code", "display": "@display"}]}
    ).render(
        {
            "system": _jstr(system),
            "code": _jstr(u["concept_code"]),
            "display": _jstr(u["concept_name"].replace("", None)),
        }
    )
    return list(np.asarray(rendered, dtype=object)[key])


def _reference(refs: pd.Series) -> list[str | None]:
    rendered = _Template({"reference": "@ref"}).render({"ref": _jstr(refs)})
    return _only_if(rendered, _jstr(refs))


def _only_if(rendered: list[str], key: Sequence[str | None]) -> list[str | None]:
    """``rendered`` where ``key`` is present, None (member dropped) where it is missing."""
    return [r if k is not None else None for r, k in zip(rendered, key, strict=True)]


# --- JSON literals, column-wise -------------------------------------------------------------


def _jstr(values: pd.Series | np.ndarray) -> list[str | None]:
    """JSON string literals (each distinct value encoded once); None where missing."""
    codes, uniques = pd.factorize(pd.Series(values), use_na_sentinel=True)
    text = pd.Series(np.asarray(uniques, dtype=object), dtype=object).astype(str)
    # Plain printable ASCII without quotes or backslashes needs no escaping.
    plain = text.str.fullmatch(r"[ !#-\[\]-~]*").to_numpy(dtype=bool)
    quoted = ('"' + text + '"').to_numpy(dtype=object)
    if not plain.all():
        quoted[~plain] = [json.dumps(t) for t in text[~plain]]
    table = np.concatenate([quoted, np.array([None], dtype=object)])
    return table[codes].tolist()  # code -1 (missing) picks the trailing None


def _jfloat(values: pd.Series) -> list[str | None]:
    """JSON number literals (shortest repr that round-trips); None where missing or not finite."""
    arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    return [repr(v) if np.isfinite(v) else None for v in arr.tolist()]


def _lit(values: pd.Series) -> list[str | None]:
    """Values that already are JSON literals (e.g. integers cast to text in SQL)."""
    return [None if v is None or v is pd.NA or v != v else str(v) for v in values.tolist()]


class _Template:
    """A JSON document with ``"@name"`` placeholders, filled with JSON literals per row.

    A placeholder filled with None drops the member that holds it (an array holding only
    that placeholder is dropped with it), so optional elements are simply left out.
    """

    def __init__(self, skeleton: dict[str, Any]) -> None:
        self.skeleton = skeleton
        self._cache: dict[frozenset[str], tuple[str, list[str]]] = {}

    def _compile(self, missing: frozenset[str]) -> tuple[str, list[str]]:
        if missing not in self._cache:
            doc = _drop(self.skeleton, missing)
            text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).replace("%", "%%")
            names = _PLACEHOLDER.findall(text)
            self._cache[missing] = (_PLACEHOLDER.sub("%s", text), names)
        return self._cache[missing]

    def render(self, columns: dict[str, Sequence[str | None]]) -> list[str]:
        n = len(next(iter(columns.values()))) if columns else 0
        names = list(columns)
        arrays = {nm: np.asarray(col, dtype=object) for nm, col in columns.items()}
        pattern = np.zeros(n, dtype=np.int64)
        for j, name in enumerate(names):
            if arrays[name].shape != (n,):
                raise ValueError(f"column {name!r} has {arrays[name].shape} values, expected {n}")
            pattern |= pd.isna(arrays[name]).astype(np.int64) << j
        codes = np.unique(pattern)
        if codes.size == 1:  # every row has the same members: no gathering
            tpl, used = self._compile(self._missing(names, int(codes[0]) if n else 0))
            return self._fill(tpl, [columns[nm] for nm in used], n)
        out = np.empty(n, dtype=object)
        for code in codes:
            rows = np.flatnonzero(pattern == code)
            tpl, used = self._compile(self._missing(names, int(code)))
            out[rows] = self._fill(tpl, [arrays[nm][rows] for nm in used], rows.size)
        return list(out)

    @staticmethod
    def _missing(names: list[str], code: int) -> frozenset[str]:
        return frozenset(nm for j, nm in enumerate(names) if (code >> j) & 1)

    @staticmethod
    def _fill(tpl: str, cols: list[Any], n: int) -> list[str]:
        if not cols:
            return [tpl] * n
        return [tpl % args for args in zip(*cols, strict=True)]


def _drop(node: Any, missing: frozenset[str]) -> Any:
    """The skeleton without the members whose value is a missing placeholder."""
    if isinstance(node, dict):
        kept = {}
        for key, value in node.items():
            sub = _drop(value, missing)
            if sub is not _GONE:
                kept[key] = sub
        return kept
    if isinstance(node, list):
        items = [s for s in (_drop(v, missing) for v in node) if s is not _GONE]
        return items if items or not node else _GONE
    if isinstance(node, str) and node.startswith("@") and node[1:] in missing:
        return _GONE
    return node


_GONE = object()


# --- bundles ---------------------------------------------------------------------------------


def _write_bundles(folder: Path, resources: dict[str, _Rendered]) -> None:
    """One Bundle (type collection) per patient: the Patient first, then its resources."""
    pids_all: list[str] = []
    urls: list[str] = []
    texts: list[str] = []
    for rtype in RESOURCE_TYPES:
        r = resources[rtype]
        pids_all.extend(r.patients)
        texts.extend(r.lines)
        urls.extend(f"{BUNDLE_BASE}/{rtype}/{i}" for i in r.ids)
    patients = resources["Patient"].patients
    order = {pid: i for i, pid in enumerate(patients)}
    key = np.array([order[p] for p in pids_all], dtype=np.int64)
    idx = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[idx], np.arange(len(patients) + 1))
    for k, pid in enumerate(patients):
        rows = idx[bounds[k] : bounds[k + 1]]
        entries = ",".join(f'{{"fullUrl":"{urls[i]}","resource":{texts[i]}}}' for i in rows)
        text = (
            f'{{"resourceType":"Bundle","id":{json.dumps("bundle-" + pid)},'
            f'"type":"collection","entry":[{entries}]}}\n'
        )
        (folder / f"{pid}.json").write_text(text, encoding="utf-8")
