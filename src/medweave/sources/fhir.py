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
``urn:uuid:`` references to a Bundle entry's ``fullUrl``).

Every resource is checked at the door against :data:`CHECKS` (``medweave list`` shows
them). A resource that breaks a check raises :class:`InputError` naming the file, the
NDJSON line or Bundle entry, the resource and the element; with ``on_error: skip`` it is
left out and counted in the audit under its reason:

* ``missing_subject``, ``unresolved_subject`` (not a Patient reference), ``missing_code``,
  ``unresolved_medication``, ``missing_class``, ``invalid_component``;
* ``missing_date``; ``invalid_date``: not a FHIR date or dateTime with a day
  (``03/01/2020``, ``2020-03``, ``2019-02-30``, ``2020-03-01T25:00:00``);
  ``record_before_birth``: dated before the earliest day its Patient's birthDate allows;
* ``valueQuantity.value:not_a_number`` (text such as ``"6.1"``, ``true``) and
  ``valueQuantity.value:non_finite`` (``NaN``, ``Infinity``: not JSON, but Python's JSON
  parser accepts them);
* Patients: ``missing_id``, ``invalid_birth_date`` (not a FHIR date, or not a calendar
  date), ``birth_in_future``. Birth dates never appear in messages.

What cannot be read as resources (see :mod:`medweave.sources._fhir_files`) honours
``on_error`` the same way: ``invalid_json`` (an NDJSON line), ``not_a_resource`` (no
``resourceType``), ``empty_bundle``, ``unreadable_file`` (a Bundle cut short, corrupt gzip:
the whole file is left out). A path that does not exist or a folder without FHIR files is an
error under both settings. Resources of other types are counted as
``unsupported_resource``; resources marked ``entered-in-error`` as ``entered_in_error``; a
resource type and id seen twice as ``duplicate_resource``.

Presence follows the event model's rule (:mod:`medweave.sources.ehr_sql`): records whose
subject has no Patient resource are kept in ``mw_events`` but give no person row, so that
patient is not present.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from medweave.cohort._audit import Audit
from medweave.cohort._block import ModalityBlock
from medweave.sources._base import ReadContext, SourceSpec, register
from medweave.sources._checks import Rule, ValueChecks, Violation
from medweave.sources._ehr_spec import EhrSpec, ehr_block
from medweave.sources._fhir_elements import (
    VISIT_CODES,
    VOCABULARIES,
    Problem,
    birth_floor,
    coding,
    entered_in_error,
    first_date,
    get,
    quantity,
    subject,
    vocabulary,
)
from medweave.sources._fhir_files import FileReader, fhir_files
from medweave.sources.ehr_sql import DOMAINS, Domain, SqlEngine

__all__ = [
    "CHECKS",
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

_DOMAIN_OF = {
    "Condition": "condition",
    "MedicationRequest": "drug",
    "Observation": "measurement",
    "Encounter": "visit",
}

_HISTORY = re.compile(r"/_history/.*$")

#: What the reader checks in each resource (audit reasons in the module docstring).
CHECKS = ValueChecks(
    "fhir",
    [
        Rule(
            "file",
            "a readable file of FHIR JSON in UTF-8, optionally gzip: one resource per NDJSON "
            "line, or one Bundle or resource per .json file",
        ),
        Rule("json", "each line of an NDJSON file to be one JSON resource in UTF-8"),
        Rule(
            "resourceType",
            "a JSON object with a resourceType (a FHIR resource)",
            required=True,
        ),
        Rule("Bundle.entry", "a Bundle with a list of entries"),
        Rule(
            "id", "a Patient id, by which the other resources refer to the patient", required=True
        ),
        Rule(
            "subject",
            "a subject reference to a Patient (Patient/<id>, or the fullUrl of a Patient "
            "in the same input)",
            required=True,
        ),
        Rule(
            "code",
            "a CodeableConcept with a coding that has a code (a medication: that, or a "
            "reference to a Medication with one)",
            required=True,
        ),
        Rule(
            "date",
            "a FHIR date or dateTime with a day (YYYY-MM-DD, optionally Thh:mm:ss[.fff] "
            "and a time zone), not before the patient's birth",
            required=True,
        ),
        Rule("birthDate", "a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD), not in the future"),
        Rule("valueQuantity.value", "a finite JSON number (not text, NaN or Infinity)"),
        Rule("class", "an Encounter class code (IMP, AMB, EMER, ...)", required=True),
        Rule("component", "an Observation component: a JSON object with a code"),
    ],
)


class FhirSpec(EhrSpec):
    """``type: fhir``: a folder of ``.ndjson`` and/or Bundle ``.json`` files, or one file;
    ``form: sequence`` for event sequences instead of features (see :class:`EhrSpec`)."""

    path: str


# --- parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found(Violation):
    """A violation whose message the parser wrote: ``text`` names the place, the resource
    and what is wrong; ``what`` the things that ``on_error: skip`` leaves out."""

    text: str = ""
    what: str = "resources"

    def message(self, *, source: str, can_skip: bool = True) -> str:
        out = f"{self.text}; expected {self.rule.expect}"
        if can_skip:
            out += (
                f"; fix it, or set on_error: skip in source {source!r} to leave such "
                f"{self.what} out"
            )
        return out


@dataclass
class FhirEvents:
    """What :func:`parse_fhir` found: events, persons and per-reason counts.

    ``events`` has the columns of ``mw_events`` (patient_id, domain, vocabulary, code,
    event_date, value, unit); ``persons`` those of ``mw_persons`` (patient_id, sex,
    year_of_birth, birth_date); ``deaths`` those of ``mw_death`` (patient_id, death_date,
    from Patient.deceasedDateTime). ``resources`` counts the resources read by type;
    ``excluded`` the resources (or lines, entries, files) left out, by reason.
    """

    events: pd.DataFrame
    persons: pd.DataFrame
    deaths: pd.DataFrame
    resources: Counter[str] = field(default_factory=Counter)
    excluded: Counter[str] = field(default_factory=Counter)
    files: list[Path] = field(default_factory=list)


class _Parser(FileReader):
    """Walks files and resources, keeping events in column lists."""

    def __init__(
        self, *, domains: set[str], on_error: Literal["raise", "skip"], source: str
    ) -> None:
        super().__init__()
        self.domains = domains
        self.on_error = on_error
        self.source = source
        self.audit = Audit()  # violations skipped, counted by CHECKS.report
        self.today = dt.date.today().isoformat()
        # Event columns; subject refs are resolved at the end (urn:uuid may come later).
        self.ref: list[str] = []
        self.domain: list[str] = []
        self.vocab: list[str | None] = []
        self.code: list[str] = []
        self.date: list[str] = []
        self.date_element: list[str] = []
        self.value: list[float] = []
        self.unit: list[str | None] = []
        self.where: list[tuple[int, int | str]] = []
        self.kind: list[str] = []  # resource type and id, for messages
        self.rid: list[Any] = []
        self._columns: tuple[list[Any], ...] = (
            self.ref,
            self.domain,
            self.vocab,
            self.code,
            self.date,
            self.date_element,
            self.value,
            self.unit,
            self.where,
            self.kind,
            self.rid,
        )
        # Medication references to resolve at the end: event position -> reference.
        self.med_refs: dict[int, str] = {}
        self.medications: dict[str, tuple[str | None, str]] = {}
        self.persons: list[tuple[str, str | None, int | None, str | None]] = []
        self.born: dict[str, str] = {}  # patient id -> earliest possible birth day
        self.deaths: list[tuple[str, str]] = []
        self.patient_urls: dict[str, str] = {}
        self.seen: set[tuple[str, str]] = set()
        self.resources: Counter[str] = Counter()
        self._rid: Any = None  # id of the resource being parsed

    def report(self, where: str, text: str, *, field: str, reason: str, what: str) -> None:
        found = _Found(CHECKS.rules[field], reason, where, None, field, text=text, what=what)
        CHECKS.report(
            [found],
            source=self.source,
            on_error=self.on_error,
            audit=self.audit,
            counts={reason: 1},
        )

    # -- resources --------------------------------------------------------------------

    def add(self, res: dict[str, Any], fi: int, pos: int | str, *, url: str | None = None) -> None:
        """Parse one resource; ``url`` is its Bundle entry's fullUrl."""
        rtype = res.get("resourceType")
        if not isinstance(rtype, str) or not rtype:
            where = self.where_text(fi, pos)
            self.report(
                where,
                f"{where}: no resourceType, so this is not a FHIR resource",
                field="resourceType",
                reason="not_a_resource",
                what="resources",
            )
            return
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
        if entered_in_error(res):
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
        except Problem as p:
            for column in self._columns:
                del column[n_before:]
            for k in [k for k in self.med_refs if k >= n_before]:
                del self.med_refs[k]
            self.problem(p, fi, pos, rtype, rid)

    def problem(self, p: Problem, fi: int, pos: int | str, rtype: str, rid: Any) -> None:
        """Raise, or with on_error skip count the resource as excluded for ``p.reason``."""
        name = f"{rtype} {rid!r}" if isinstance(rid, str) else rtype
        where = self.where_text(fi, pos)
        element = "" if p.element in p.detail else f" (element {p.element})"
        self.report(
            where,
            f"{where}: {name} {p.detail}{element}",
            field=p.field,
            reason=p.reason,
            what="resources",
        )

    def _event(
        self,
        fi: int,
        pos: int | str,
        kind: str,
        *,
        ref: str,
        domain: str,
        code: tuple[str | None, str],
        date: tuple[str, str],
        value: float = np.nan,
        unit: str | None = None,
    ) -> None:
        self.ref.append(ref)
        self.domain.append(domain)
        self.vocab.append(code[0])
        self.code.append(code[1])
        self.date_element.append(date[0])
        self.date.append(date[1])
        self.value.append(value)
        self.unit.append(unit)
        self.where.append((fi, pos))
        self.kind.append(kind)
        self.rid.append(self._rid)

    def _patient(self, res: dict[str, Any]) -> None:
        pid = res.get("id")
        if not isinstance(pid, str) or not pid:
            raise Problem("missing_id", "id", "has no id", field="id")
        gender = res.get("gender")
        sex = {"male": "M", "female": "F"}.get(gender) if isinstance(gender, str) else None
        year: int | None = None
        birth: str | None = None
        floor: str | None = None
        raw = res.get("birthDate")
        if raw is not None:
            year, floor, full = birth_floor(raw, today=self.today)
            birth = floor if full else None
        death = res.get("deceasedDateTime")
        if death is not None:
            self.deaths.append((pid, first_date(res, [("deceasedDateTime", death)])[1]))
        self.persons.append((pid, sex, year, birth))
        if floor is not None:
            self.born[pid] = floor

    def _condition(self, res: dict[str, Any], fi: int, pos: int | str) -> None:
        ref = subject(res)
        code = coding(res.get("code"), "code")
        date = first_date(
            res,
            [
                ("onsetDateTime", res.get("onsetDateTime")),
                ("onsetPeriod.start", get(res.get("onsetPeriod"), "start")),
                ("recordedDate", res.get("recordedDate")),
            ],
        )
        self._event(fi, pos, "Condition", ref=ref, domain="condition", code=code, date=date)

    def _medication_request(self, res: dict[str, Any], fi: int, pos: int | str) -> None:
        ref = subject(res)
        date = first_date(res, [("authoredOn", res.get("authoredOn"))])
        kind = "MedicationRequest"
        if "medicationCodeableConcept" in res:
            code = coding(res["medicationCodeableConcept"], "medicationCodeableConcept")
            self._event(fi, pos, kind, ref=ref, domain="drug", code=code, date=date)
            return
        med = get(res.get("medicationReference"), "reference")
        if not isinstance(med, str):
            raise Problem(
                "missing_code",
                "medication[x]",
                "has neither medicationCodeableConcept nor medicationReference.reference",
                field="code",
            )
        if med.startswith("#"):
            for c in res.get("contained") or []:
                if (
                    isinstance(c, dict)
                    and c.get("resourceType") == "Medication"
                    and (c.get("id") == med[1:])
                ):
                    code = coding(c.get("code"), "contained Medication.code")
                    self._event(fi, pos, kind, ref=ref, domain="drug", code=code, date=date)
                    return
            raise Problem(
                "unresolved_medication",
                "medicationReference",
                f"refers to contained Medication {med!r}, which is not there",
                field="code",
            )
        self.med_refs[len(self.ref)] = med
        self._event(fi, pos, kind, ref=ref, domain="drug", code=(None, ""), date=date)

    def _add_medication(self, res: dict[str, Any], url: str | None) -> None:
        try:
            code = coding(res.get("code"), "code")
        except Problem:
            return  # a Medication without a code: requests referring to it fail to resolve
        if isinstance(res.get("id"), str):
            self.medications[f"Medication/{res['id']}"] = code
        if url is not None:
            self.medications[url] = code

    def _observation(self, res: dict[str, Any], fi: int, pos: int | str) -> None:
        ref = subject(res)
        date = first_date(
            res,
            [
                ("effectiveDateTime", res.get("effectiveDateTime")),
                ("effectivePeriod.start", get(res.get("effectivePeriod"), "start")),
                ("effectiveInstant", res.get("effectiveInstant")),
                ("issued", res.get("issued")),
            ],
        )
        components = res.get("component")
        parts: list[tuple[str, Any]] = [("", res)]
        if isinstance(components, list) and components and "valueQuantity" not in res:
            parts = [(f"component[{i}].", comp) for i, comp in enumerate(components)]
        for prefix, part in parts:
            if not isinstance(part, dict):
                raise Problem(
                    "invalid_component",
                    prefix.rstrip("."),
                    "has a malformed component",
                    field="component",
                )
            code = coding(part.get("code"), f"{prefix}code")
            value, unit = quantity(part.get("valueQuantity"), f"{prefix}valueQuantity")
            self._event(
                fi,
                pos,
                "Observation",
                ref=ref,
                domain="measurement",
                code=code,
                date=date,
                value=value,
                unit=unit,
            )

    def _encounter(self, res: dict[str, Any], fi: int, pos: int | str) -> None:
        ref = subject(res)
        cls = res.get("class")
        code: Any = None
        if isinstance(cls, dict):  # R4: a Coding
            code = cls.get("code")
        elif isinstance(cls, list):  # R5: a list of CodeableConcept
            for cc in cls:
                for c in get(cc, "coding") or []:
                    if isinstance(c, dict) and isinstance(c.get("code"), str):
                        code = c["code"]
                        break
                if code is not None:
                    break
        if not isinstance(code, str) or not code:
            raise Problem(
                "missing_class",
                "class.code",
                "has no class code (IMP, AMB, EMER)",
                field="class",
            )
        period = res.get("period", res.get("actualPeriod"))
        date = first_date(res, [("period.start", get(period, "start"))])
        visit = ("Visit", VISIT_CODES.get(code, code))
        self._event(fi, pos, "Encounter", ref=ref, domain="visit", code=visit, date=date)

    # -- the end ----------------------------------------------------------------------

    def finish(self) -> FhirEvents:
        keep = np.ones(len(self.ref), dtype=bool)
        failed: set[tuple[int, int | str]] = set()  # resources already reported

        def fail(i: int, p: Problem) -> None:
            keep[i] = False
            if self.where[i] not in failed:
                failed.add(self.where[i])
                self.problem(p, *self.where[i], self.kind[i], self.rid[i])

        for i, med in self.med_refs.items():
            code = self.medications.get(med)
            if code is None:
                detail = f"refers to {med!r}, which is not a Medication with a code in the input"
                fail(
                    i, Problem("unresolved_medication", "medicationReference", detail, field="code")
                )
            else:
                self.vocab[i], self.code[i] = code
        pids = [self._resolve(r) for r in self.ref]
        for i, pid in enumerate(pids):
            if self.where[i] in failed:
                continue
            if pid is None:
                detail = f"has subject {self.ref[i]!r}, which is not a Patient reference"
                fail(i, Problem("unresolved_subject", "subject.reference", detail, field="subject"))
            elif pid in self.born and self.date[i] < self.born[pid]:
                element = self.date_element[i]
                detail = (
                    f"has {element} {self.date[i]}, before the birth of Patient {pid!r} "
                    "(birthDate not shown: it identifies a person)"
                )
                fail(i, Problem("record_before_birth", element, detail, field="date"))
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
        excluded = self.excluded + self.audit.source(self.source).excluded
        return FhirEvents(events, persons, deaths, self.resources, excluded, list(self.files))

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


def parse_fhir(
    path: Path,
    *,
    domains: list[Domain] | tuple[Domain, ...] = DOMAINS,
    on_error: Literal["raise", "skip"] = "raise",
    source: str = "fhir",
) -> FhirEvents:
    """Parse the FHIR files at ``path`` into the event model (see the module docstring);
    ``source`` names the source in messages."""
    parser = _Parser(domains=set(domains), on_error=on_error, source=source)
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
    source: str = "fhir",
) -> tuple[SqlEngine, FhirEvents]:
    """An in-memory DuckDB session holding the FHIR input as the event model.

    Registers ``mw_events``, ``mw_persons`` and ``mw_death`` (from
    ``Patient.deceasedDateTime``); ``mw_concepts`` and ``mw_observation`` have no FHIR
    counterpart and are listed in :attr:`SqlEngine.unavailable`. Returns the session (close
    it after use) and what was parsed.
    """
    path = Path(path)
    parsed = parse_fhir(path, domains=domains, on_error=on_error, source=source)
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
    engine.origins["person"] = f"FHIR Patient resources in {path}"
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
    engine, parsed = open_fhir(
        ctx.resolve(spec.path), domains=spec.domains, on_error=spec.on_error, source=spec.name
    )
    with engine:
        block = ehr_block(engine, spec, ctx)
    ctx.audit.read(spec.name, sum(parsed.excluded.values()))
    for reason, n in sorted(parsed.excluded.items()):
        ctx.audit.exclude_rows(spec.name, reason, n)
    block.meta["fhir_files"] = len(parsed.files)
    block.meta["fhir_resources"] = dict(sorted(parsed.resources.items()))
    return block
