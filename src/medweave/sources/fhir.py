"""FHIR R4 resources (NDJSON bulk export or Bundle JSON) as EHR features: reader ``fhir``.

The reader parses Patient, Encounter, Condition, Observation and MedicationRequest
resources into the shared EHR event model of :mod:`medweave.sources.ehr_sql`
(``mw_events`` and ``mw_persons``) and builds the same features as the OMOP reader from it,
so one cohort gives identical features whether it is read as OMOP or as FHIR.

=====================  ===========  ======================================================
resource               domain       vocabulary / code, date, value
=====================  ===========  ======================================================
Condition              condition    ``code``; onsetDateTime, onsetPeriod.start or
                                    recordedDate
MedicationRequest      drug         ``medicationCodeableConcept`` (or the code of the
                                    Medication it references); authoredOn
Observation            measurement  ``code`` (each ``component`` of a panel is its own
                                    event); effectiveDateTime, effectivePeriod.start,
                                    effectiveInstant or issued; valueQuantity value and
                                    UCUM code (or unit)
Encounter              visit        ``class``: IMP / ACUTE / NONAC -> IP, AMB -> OP,
                                    EMER -> ER (vocabulary ``Visit``); period.start
Patient                (persons)    id, gender (M / F), birthDate
=====================  ===========  ======================================================

Code systems become vocabulary ids: ``http://snomed.info/sct`` -> SNOMED,
``http://loinc.org`` -> LOINC, ``http://www.nlm.nih.gov/research/umls/rxnorm`` -> RxNorm
(and a few more, see :data:`VOCABULARIES`); any other system becomes the last segment of its
URI path, or the URI itself. When a CodeableConcept has several codings, the first one in a
known vocabulary wins, else the first one with a code.

Subjects are ``Patient/<id>`` references (also absolute ``.../Patient/<id>`` URLs, and
``urn:uuid:`` references to a Bundle entry's ``fullUrl``). A resource that lacks an element
its domain needs raises :class:`InputError` naming the file, the NDJSON line or Bundle
entry, and the element; with ``on_error: skip`` it is left out and counted in the audit
(``missing_subject``, ``missing_code``, ``missing_date``, ...). Resources of other types are
counted as ``unsupported_resource``; resources marked ``entered-in-error`` as
``entered_in_error``; a resource type and id seen twice as ``duplicate_resource``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources._base import ReadContext, SourceSpec, register
from medweave.sources._ehr_spec import EhrSpec, ehr_block
from medweave.sources.ehr_sql import DOMAINS, Domain, SqlEngine

__all__ = [
    "VISIT_CODES",
    "VOCABULARIES",
    "FhirEvents",
    "FhirSpec",
    "fhir_files",
    "open_fhir",
    "parse_fhir",
    "read_fhir",
    "vocabulary",
]

#: FHIR code system URI -> vocabulary id (OMOP's names).
VOCABULARIES: dict[str, str] = {
    "http://snomed.info/sct": "SNOMED",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://unitsofmeasure.org": "UCUM",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "http://hl7.org/fhir/sid/icd-10": "ICD10",
    "http://hl7.org/fhir/sid/icd-9-cm": "ICD9CM",
    "http://hl7.org/fhir/sid/ndc": "NDC",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://www.ama-assn.org/go/cpt": "CPT4",
}
#: The vocabularies preferred when a CodeableConcept has several codings.
_STANDARD = frozenset({"SNOMED", "LOINC", "RxNorm"})

#: Encounter class (v3 ActCode) -> visit code of the event model.
VISIT_CODES: dict[str, str] = {
    "IMP": "IP",
    "ACUTE": "IP",
    "NONAC": "IP",
    "AMB": "OP",
    "EMER": "ER",
}
_DOMAIN_OF = {
    "Condition": "condition",
    "MedicationRequest": "drug",
    "Observation": "measurement",
    "Encounter": "visit",
}
_SUFFIXES = (".ndjson", ".json", ".ndjson.gz", ".json.gz")
_DATE = re.compile(r"(\d{4})(-\d{2})?(-\d{2})?")
_HISTORY = re.compile(r"/_history/.*$")
_DECODER = json.JSONDecoder()


class FhirSpec(EhrSpec):
    """``type: fhir``: a folder of ``.ndjson`` and/or Bundle ``.json`` files, or one file;
    ``form: sequence`` for event sequences instead of features (see :class:`EhrSpec`)."""

    path: str


# --- parsing ----------------------------------------------------------------------------------


class _Problem(Exception):
    """A resource lacks something it needs: an audit reason and the element concerned."""

    def __init__(self, reason: str, element: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.element = element
        self.detail = detail


@dataclass
class FhirEvents:
    """What :func:`parse_fhir` found: events, persons and per-reason counts.

    ``events`` has the columns of ``mw_events`` (patient_id, domain, vocabulary, code,
    event_date, value, unit); ``persons`` those of ``mw_persons`` (patient_id, sex,
    year_of_birth, birth_date); ``deaths`` those of ``mw_death`` (patient_id, death_date,
    from Patient.deceasedDateTime). ``resources`` counts the resources read by type;
    ``excluded`` the resources (or Observation components) left out, by reason.
    """

    events: pd.DataFrame
    persons: pd.DataFrame
    deaths: pd.DataFrame
    resources: Counter[str] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)
    files: list[Path] = field(default_factory=list)


class _Parser:
    """Walks files and resources, keeping events in column lists."""

    def __init__(self, *, domains: set[str], on_error: Literal["raise", "skip"]) -> None:
        self.domains = domains
        self.on_error = on_error
        self.files: list[Path] = []
        # Event columns; subject refs are resolved at the end (urn:uuid may come later).
        self.ref: list[str] = []
        self.domain: list[str] = []
        self.vocab: list[str | None] = []
        self.code: list[str] = []
        self.date: list[str] = []
        self.value: list[float] = []
        self.unit: list[str | None] = []
        self.where: list[tuple[int, int | str]] = []
        self.kind: list[str] = []  # resource type and id, for messages
        self.rid: list[Any] = []
        # Medication references to resolve at the end: event position -> reference.
        self.med_refs: dict[int, str] = {}
        self.medications: dict[str, tuple[str | None, str]] = {}
        self.persons: list[tuple[str, str | None, int | None, str | None]] = []
        self.deaths: list[tuple[str, str]] = []
        self.patient_urls: dict[str, str] = {}
        self.seen: set[tuple[str, str]] = set()
        self.resources: Counter[str] = Counter()
        self.excluded: Counter[str] = Counter()
        self._rid: Any = None  # id of the resource being parsed

    # -- files ------------------------------------------------------------------------

    def read_file(self, path: Path) -> None:
        self.files.append(path)
        fi = len(self.files) - 1
        name = path.name.lower()
        opener = gzip.open if name.endswith(".gz") else open
        try:
            with opener(path, "rt", encoding="utf-8") as fh:
                if name.endswith((".ndjson", ".ndjson.gz")):
                    self._read_lines(fh, fi)
                    return
                text = fh.read()
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            raise InputError(f"{path}: cannot read ({exc}); is it a FHIR JSON file?") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data" and text.lstrip().startswith("{"):
                # NDJSON saved as .json: one resource per line.
                self._read_lines(iter(text.splitlines()), fi)
                return
            raise InputError(
                f"{path} line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})"
            ) from None
        if not isinstance(doc, dict):
            raise InputError(
                f"{path}: expected a JSON object (a Bundle or a resource), got {type(doc).__name__}"
            )
        if doc.get("resourceType") == "Bundle":
            self._read_bundle(doc, fi, "")
        else:
            self.add(doc, fi, "resource")

    def _read_lines(self, lines: Iterator[str], fi: int) -> None:
        decode = _DECODER.decode
        for no, line in enumerate(lines, start=1):
            if not line or line.isspace():
                continue
            try:
                res = decode(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{self.files[fi]} line {no}: not valid JSON ({exc.msg} at column "
                    f"{exc.colno}); each line of an NDJSON file must be one JSON resource"
                ) from None
            if not isinstance(res, dict):
                raise InputError(
                    f"{self.files[fi]} line {no}: expected a JSON object (a FHIR resource), "
                    f"got {type(res).__name__}"
                )
            if res.get("resourceType") == "Bundle":
                self._read_bundle(res, fi, f"line {no} ")
            else:
                self.add(res, fi, no)

    def _read_bundle(self, bundle: dict[str, Any], fi: int, prefix: str) -> None:
        entries = bundle.get("entry", [])
        if not isinstance(entries, list):
            raise InputError(f"{self.files[fi]} {prefix}Bundle.entry: expected a list of entries")
        for i, entry in enumerate(entries):
            where = f"{prefix}entry {i}"
            if not isinstance(entry, dict):
                raise InputError(
                    f"{self.files[fi]} {where}: expected a JSON object, got {type(entry).__name__}"
                )
            res = entry.get("resource")
            if res is None:
                self.excluded["entry_without_resource"] += 1
                continue
            if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
                raise InputError(
                    f"{self.files[fi]} {where}: resource must be a JSON object with a resourceType"
                )
            if res["resourceType"] == "Bundle":
                self._read_bundle(res, fi, f"{where} > ")
                continue
            url = entry.get("fullUrl")
            self.add(res, fi, where, url=url if isinstance(url, str) else None)

    def where_text(self, fi: int, pos: int | str) -> str:
        return f"{self.files[fi]} line {pos}" if isinstance(pos, int) else f"{self.files[fi]} {pos}"

    # -- resources --------------------------------------------------------------------

    def add(self, res: dict[str, Any], fi: int, pos: int | str, *, url: str | None = None) -> None:
        """Parse one resource; ``url`` is its Bundle entry's fullUrl."""
        rtype = res.get("resourceType")
        if not isinstance(rtype, str):
            raise InputError(
                f"{self.where_text(fi, pos)}: no resourceType; expected a FHIR resource"
            )
        self.resources[rtype] += 1
        rid = res.get("id")
        if isinstance(rid, str):
            if (rtype, rid) in self.seen:
                self.excluded["duplicate_resource"] += 1
                return
            self.seen.add((rtype, rid))
        if rtype == "Medication":
            self._add_medication(res, url)
            return
        if rtype == "Patient" and url is not None and isinstance(rid, str):
            self.patient_urls[url] = rid
        if rtype != "Patient" and rtype not in _DOMAIN_OF:
            self.excluded["unsupported_resource"] += 1
            return
        if rtype != "Patient" and _DOMAIN_OF[rtype] not in self.domains:
            self.excluded["domain_not_selected"] += 1
            return
        if _entered_in_error(res):
            self.excluded["entered_in_error"] += 1
            return
        n_before = len(self.ref)
        self._rid = rid
        try:
            if rtype == "Patient":
                self._patient(res)
            elif rtype == "Condition":
                self._condition(res, fi, pos)
            elif rtype == "MedicationRequest":
                self._medication_request(res, fi, pos)
            elif rtype == "Observation":
                self._observation(res, fi, pos)
            else:
                self._encounter(res, fi, pos)
        except _Problem as p:
            del self.ref[n_before:], self.domain[n_before:], self.vocab[n_before:]
            del self.code[n_before:], self.date[n_before:], self.value[n_before:]
            del self.unit[n_before:], self.where[n_before:], self.kind[n_before:]
            del self.rid[n_before:]
            for k in [k for k in self.med_refs if k >= n_before]:
                del self.med_refs[k]
            self.problem(p, fi, pos, rtype, rid)

    def problem(self, p: _Problem, fi: int, pos: int | str, rtype: str, rid: Any) -> None:
        """Raise, or with on_error skip count the resource as excluded for ``p.reason``."""
        if self.on_error == "skip":
            self.excluded[p.reason] += 1
            return
        name = f"{rtype} {rid!r}" if isinstance(rid, str) else rtype
        raise InputError(
            f"{self.where_text(fi, pos)}: {name} {p.detail} (element {p.element}); fix the "
            "resource, or set on_error: skip to leave such resources out"
        )

    def _event(
        self,
        fi: int,
        pos: int | str,
        kind: str,
        *,
        ref: str,
        domain: str,
        coding: tuple[str | None, str],
        date: str,
        value: float = np.nan,
        unit: str | None = None,
    ) -> None:
        self.ref.append(ref)
        self.domain.append(domain)
        self.vocab.append(coding[0])
        self.code.append(coding[1])
        self.date.append(date)
        self.value.append(value)
        self.unit.append(unit)
        self.where.append((fi, pos))
        self.kind.append(kind)
        self.rid.append(self._rid)

    def _patient(self, res: dict[str, Any]) -> None:
        pid = res.get("id")
        if not isinstance(pid, str) or not pid:
            raise _Problem("missing_id", "id", "has no id; patients are referred to by id")
        gender = res.get("gender")
        sex = {"male": "M", "female": "F"}.get(gender) if isinstance(gender, str) else None
        year: int | None = None
        birth: str | None = None
        raw = res.get("birthDate")
        if raw is not None:
            m = _DATE.fullmatch(raw) if isinstance(raw, str) else None
            if m is None:
                raise _Problem(
                    "invalid_date", "birthDate", f"has birthDate {raw!r}; expected YYYY-MM-DD"
                )
            year = int(m.group(1))
            if m.group(3):
                birth = _check_date(raw, "birthDate")
        death = res.get("deceasedDateTime")
        if death is not None:
            self.deaths.append((pid, _first_date(res, [("deceasedDateTime", death)])))
        self.persons.append((pid, sex, year, birth))

    def _condition(self, res: dict[str, Any], fi: int, pos: int | str) -> None:
        ref = _subject(res)
        coding = _coding(res.get("code"), "code")
        onset_period = res.get("onsetPeriod")
        date = _first_date(
            res,
            [
                ("onsetDateTime", res.get("onsetDateTime")),
                ("onsetPeriod.start", _get(onset_period, "start")),
                ("recordedDate", res.get("recordedDate")),
            ],
        )
        self._event(fi, pos, "Condition", ref=ref, domain="condition", coding=coding, date=date)

    def _medication_request(self, res: dict[str, Any], fi: int, pos: int | str) -> None:
        ref = _subject(res)
        date = _first_date(res, [("authoredOn", res.get("authoredOn"))])
        if "medicationCodeableConcept" in res:
            coding = _coding(res["medicationCodeableConcept"], "medicationCodeableConcept")
            self._event(
                fi, pos, "MedicationRequest", ref=ref, domain="drug", coding=coding, date=date
            )
            return
        med = _get(res.get("medicationReference"), "reference")
        if not isinstance(med, str):
            raise _Problem(
                "missing_code",
                "medication[x]",
                "has neither medicationCodeableConcept nor medicationReference.reference",
            )
        if med.startswith("#"):
            for c in res.get("contained") or []:
                if (
                    isinstance(c, dict)
                    and c.get("resourceType") == "Medication"
                    and (c.get("id") == med[1:])
                ):
                    coding = _coding(c.get("code"), "contained Medication.code")
                    self._event(
                        fi,
                        pos,
                        "MedicationRequest",
                        ref=ref,
                        domain="drug",
                        coding=coding,
                        date=date,
                    )
                    return
            raise _Problem(
                "unresolved_medication",
                "medicationReference",
                f"refers to contained Medication {med!r}, which is not there",
            )
        self.med_refs[len(self.ref)] = med
        self._event(
            fi, pos, "MedicationRequest", ref=ref, domain="drug", coding=(None, ""), date=date
        )

    def _add_medication(self, res: dict[str, Any], url: str | None) -> None:
        try:
            coding = _coding(res.get("code"), "code")
        except _Problem:
            return  # a Medication without a code: requests referring to it fail to resolve
        if isinstance(res.get("id"), str):
            self.medications[f"Medication/{res['id']}"] = coding
        if url is not None:
            self.medications[url] = coding

    def _observation(self, res: dict[str, Any], fi: int, pos: int | str) -> None:
        ref = _subject(res)
        date = _first_date(
            res,
            [
                ("effectiveDateTime", res.get("effectiveDateTime")),
                ("effectivePeriod.start", _get(res.get("effectivePeriod"), "start")),
                ("effectiveInstant", res.get("effectiveInstant")),
                ("issued", res.get("issued")),
            ],
        )
        components = res.get("component")
        if isinstance(components, list) and components and "valueQuantity" not in res:
            for i, comp in enumerate(components):
                if not isinstance(comp, dict):
                    raise _Problem(
                        "invalid_component", f"component[{i}]", "has a malformed component"
                    )
                coding = _coding(comp.get("code"), f"component[{i}].code")
                value, unit = _quantity(comp.get("valueQuantity"), f"component[{i}].valueQuantity")
                self._event(
                    fi,
                    pos,
                    "Observation",
                    ref=ref,
                    domain="measurement",
                    coding=coding,
                    date=date,
                    value=value,
                    unit=unit,
                )
            return
        coding = _coding(res.get("code"), "code")
        value, unit = _quantity(res.get("valueQuantity"), "valueQuantity")
        self._event(
            fi,
            pos,
            "Observation",
            ref=ref,
            domain="measurement",
            coding=coding,
            date=date,
            value=value,
            unit=unit,
        )

    def _encounter(self, res: dict[str, Any], fi: int, pos: int | str) -> None:
        ref = _subject(res)
        cls = res.get("class")
        code: Any = None
        if isinstance(cls, dict):  # R4: a Coding
            code = cls.get("code")
        elif isinstance(cls, list):  # R5: a list of CodeableConcept
            for cc in cls:
                for c in _get(cc, "coding") or []:
                    if isinstance(c, dict) and isinstance(c.get("code"), str):
                        code = c["code"]
                        break
                if code is not None:
                    break
        if not isinstance(code, str) or not code:
            raise _Problem("missing_class", "class.code", "has no class code (IMP, AMB, EMER)")
        period = res.get("period", res.get("actualPeriod"))
        date = _first_date(res, [("period.start", _get(period, "start"))])
        self._event(
            fi,
            pos,
            "Encounter",
            ref=ref,
            domain="visit",
            coding=("Visit", VISIT_CODES.get(code, code)),
            date=date,
        )

    # -- the end ----------------------------------------------------------------------

    def finish(self) -> FhirEvents:
        keep = np.ones(len(self.ref), dtype=bool)
        failed: set[tuple[int, int | str]] = set()  # resources already reported

        def fail(i: int, p: _Problem) -> None:
            keep[i] = False
            if self.where[i] not in failed:
                failed.add(self.where[i])
                self.problem(p, *self.where[i], self.kind[i], self.rid[i])

        for i, med in self.med_refs.items():
            coding = self.medications.get(med)
            if coding is None:
                detail = f"refers to {med!r}, which is not a Medication with a code in the input"
                fail(i, _Problem("unresolved_medication", "medicationReference", detail))
            else:
                self.vocab[i], self.code[i] = coding
        pids = [self._resolve(r) for r in self.ref]
        for i, pid in enumerate(pids):
            if pid is None and self.where[i] not in failed:
                detail = (
                    f"has subject {self.ref[i]!r}, which is not a Patient reference "
                    "(Patient/<id>) or the fullUrl of a Patient in the same input"
                )
                fail(i, _Problem("unresolved_subject", "subject.reference", detail))
        # Every event of a resource that failed goes (the other components of a panel).
        if failed:
            keep &= np.array([w not in failed for w in self.where], dtype=bool)
        idx = np.flatnonzero(keep)
        events = pd.DataFrame(
            {
                "patient_id": pd.array([pids[i] for i in idx], dtype=object),
                "domain": [self.domain[i] for i in idx],
                "vocabulary": [self.vocab[i] or "unknown" for i in idx],
                "code": [self.code[i] for i in idx],
                "event_date": pd.to_datetime(
                    pd.Series([self.date[i] for i in idx], dtype=object), format="%Y-%m-%d"
                ).dt.date,
                "value": np.asarray(self.value, dtype=float)[idx],
                "unit": [self.unit[i] for i in idx],
            }
        )
        persons = pd.DataFrame(
            self.persons, columns=["patient_id", "sex", "year_of_birth", "birth_date"]
        )
        persons["year_of_birth"] = persons["year_of_birth"].astype("Int32")
        persons["birth_date"] = pd.to_datetime(persons["birth_date"], format="%Y-%m-%d").dt.date
        deaths = pd.DataFrame(self.deaths, columns=["patient_id", "death_date"])
        deaths["death_date"] = pd.to_datetime(deaths["death_date"], format="%Y-%m-%d").dt.date
        return FhirEvents(events, persons, deaths, self.resources, self.excluded, list(self.files))

    def _resolve(self, ref: str) -> str | None:
        ref = _HISTORY.sub("", ref)
        if ref.startswith("Patient/"):
            return ref[8:] or None
        if ref in self.patient_urls:
            return self.patient_urls[ref]
        head, sep, tail = ref.rpartition("/Patient/")
        if sep and head and "/" not in tail and tail:
            return tail
        return None


def _entered_in_error(res: dict[str, Any]) -> bool:
    if res.get("status") == "entered-in-error":
        return True
    for c in _get(res.get("verificationStatus"), "coding") or []:
        if isinstance(c, dict) and c.get("code") == "entered-in-error":
            return True
    return False


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _subject(res: dict[str, Any]) -> str:
    ref = _get(res.get("subject"), "reference")
    if not isinstance(ref, str) or not ref:
        raise _Problem(
            "missing_subject", "subject.reference", "has no subject reference to its Patient"
        )
    return ref


def vocabulary(system: str) -> str:
    """The vocabulary id of a FHIR code system URI (last path segment if not a known one)."""
    if system in VOCABULARIES:
        return VOCABULARIES[system]
    tail = system.rstrip("/").rsplit("/", 1)[-1]
    return tail if "/" in system and tail else system


def _coding(concept: Any, element: str) -> tuple[str | None, str]:
    """(vocabulary, code) of the coding chosen from a CodeableConcept."""
    best: tuple[str | None, str] | None = None
    for c in _get(concept, "coding") or []:
        code = _get(c, "code")
        if not isinstance(code, str) or not code:
            continue
        system = c.get("system")
        vocab = vocabulary(system) if isinstance(system, str) and system else None
        if vocab in _STANDARD:
            return vocab, code
        if best is None:
            best = (vocab, code)
    if best is None:
        raise _Problem("missing_code", element, "has no coding with a code")
    return best


def _quantity(q: Any, element: str) -> tuple[float, str | None]:
    if q is None:
        return np.nan, None
    value = _get(q, "value")
    if value is None:
        return np.nan, None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Problem(
            "invalid_value", f"{element}.value", f"has value {value!r}; expected a number"
        )
    unit = q.get("code") if isinstance(q.get("code"), str) else q.get("unit")
    return float(value), unit if isinstance(unit, str) else None


def _first_date(res: dict[str, Any], candidates: list[tuple[str, Any]]) -> str:
    """The first present of ``candidates`` (element, value) as YYYY-MM-DD."""
    for element, raw in candidates:
        if raw is None:
            continue
        m = _DATE.match(raw) if isinstance(raw, str) else None
        if m is None or not m.group(3):
            raise _Problem(
                "invalid_date",
                element,
                f"has {element} {raw!r}; expected a full date (YYYY-MM-DD[Thh:mm:ss...])",
            )
        return _check_date(m.group(0), element)
    names = " or ".join(e for e, _ in candidates)
    raise _Problem("missing_date", candidates[0][0], f"has no date ({names})")


def _check_date(text: str, element: str) -> str:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise _Problem(
            "invalid_date", element, f"has {element} {text!r}, not a calendar date"
        ) from None
    return text


def fhir_files(path: Path) -> list[Path]:
    """The FHIR files at ``path``: the file itself, or a folder's .ndjson / .json files."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(
            f"{path}: FHIR path not found; give a folder of .ndjson/.json files or one file"
        )
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.name.lower().endswith(_SUFFIXES) and not p.name.startswith(".")
    )
    if not files:
        raise InputError(
            f"{path}: no FHIR files (.ndjson or Bundle .json, optionally .gz) in this folder"
        )
    return files


def parse_fhir(
    path: Path,
    *,
    domains: list[Domain] | tuple[Domain, ...] = DOMAINS,
    on_error: Literal["raise", "skip"] = "raise",
) -> FhirEvents:
    """Parse the FHIR files at ``path`` into the event model (see the module docstring)."""
    parser = _Parser(domains=set(domains), on_error=on_error)
    for f in fhir_files(path):
        parser.read_file(f)
    return parser.finish()


# --- the reader ---------------------------------------------------------------------------------

_RESOURCE_OF = {d: r for r, d in _DOMAIN_OF.items()}


def open_fhir(
    path: str | Path,
    *,
    domains: tuple[Domain, ...] | list[Domain] = DOMAINS,
    on_error: Literal["raise", "skip"] = "raise",
) -> tuple[SqlEngine, FhirEvents]:
    """An in-memory DuckDB session holding the FHIR input as the event model.

    Registers ``mw_events``, ``mw_persons`` and ``mw_death`` (from
    ``Patient.deceasedDateTime``); ``mw_concepts`` and ``mw_observation`` have no FHIR
    counterpart and are listed in :attr:`SqlEngine.unavailable`. Returns the session (close
    it after use) and what was parsed.
    """
    path = Path(path)
    parsed = parse_fhir(path, domains=domains, on_error=on_error)
    engine = SqlEngine.duckdb(label=f"FHIR input {str(path)!r}")
    try:
        # register() casts each relation to the event model's schema (ehr_sql.SCHEMAS).
        engine.register("mw_events", parsed.events)
        engine.register("mw_persons", parsed.persons)
        engine.register("mw_death", parsed.deaths)
    except BaseException:
        engine.close()
        raise
    engine.unavailable["mw_concepts"] = (
        "FHIR resources carry vocabulary codes, not OMOP concept ids; give concepts as "
        "'VOCABULARY/CODE' (e.g. 'SNOMED/13645005')"
    )
    engine.unavailable["mw_observation"] = "FHIR input has no observation periods"
    engine.origins = {d: f"FHIR {_RESOURCE_OF[d]} resources in {path}" for d in domains}
    return engine, parsed


@register(
    "fhir",
    spec=FhirSpec,
    description="FHIR R4 Bundle JSON or NDJSON: Patient, Condition, Observation, "
    "MedicationRequest, Encounter; features, or event sequences with form: sequence",
)
def read_fhir(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    """EHR features (or, with ``form: sequence``, event sequences) of the cohort's patients
    from FHIR R4 files (see :func:`~medweave.sources._ehr_spec.ehr_block`).

    Resources left out at the door (``on_error: skip``, unsupported types, domains not
    selected, duplicates) are counted in the audit as rows read and excluded, by reason;
    the events are then audited as in the OMOP reader (after_index, before_lookback,
    unknown_patient, rare_code).
    """
    if not isinstance(spec, FhirSpec):
        raise TypeError(f"read_fhir needs a FhirSpec, got {type(spec).__name__}")
    engine, parsed = open_fhir(ctx.resolve(spec.path), domains=spec.domains, on_error=spec.on_error)
    with engine:
        block = ehr_block(engine, spec, ctx)
    ctx.audit.read(spec.name, sum(parsed.excluded.values()))
    for reason, n in sorted(parsed.excluded.items()):
        ctx.audit.exclude_rows(spec.name, reason, n)
    block.meta["fhir_files"] = len(parsed.files)
    block.meta["fhir_resources"] = dict(sorted(parsed.resources.items()))
    return block
