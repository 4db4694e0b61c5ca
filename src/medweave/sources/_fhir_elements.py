"""FHIR R4 elements as the EHR event model needs them: codes, subjects, dates, quantities.

Used by the ``fhir`` reader (:mod:`medweave.sources.fhir`). Each helper returns what it
found or raises :class:`Problem` naming the element, the audit reason and the field of
the reader's value checks (``fhir.CHECKS``) that the element breaks.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import numpy as np

__all__ = [
    "STANDARD",
    "VISIT_CODES",
    "VOCABULARIES",
    "Problem",
    "birth_floor",
    "check_date",
    "coding",
    "entered_in_error",
    "first_date",
    "get",
    "quantity",
    "subject",
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
STANDARD = frozenset({"SNOMED", "LOINC", "RxNorm"})

#: Encounter class (v3 ActCode) -> visit code of the event model.
VISIT_CODES: dict[str, str] = {
    "IMP": "IP",
    "ACUTE": "IP",
    "NONAC": "IP",
    "AMB": "OP",
    "EMER": "ER",
}

# FHIR R4's date and dateTime (https://hl7.org/fhir/R4/datatypes.html). The time zone that
# R4 asks for with a time is not required: only the date is used.
_YEAR = r"([0-9](?:[0-9](?:[0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH_DAY = r"(?:-(0[1-9]|1[0-2])(?:-(0[1-9]|[12][0-9]|3[01])"
_TIME = r"(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]{1,9})?"
_ZONE = r"(?:Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?"
FHIR_DATE = re.compile(_YEAR + _MONTH_DAY + ")?)?")
FHIR_DATETIME = re.compile(_YEAR + _MONTH_DAY + _TIME + _ZONE + ")?)?")
#: Day and month in some order with slashes or dots (03/01/2020): ambiguous, not FHIR.
_DAY_MONTH = re.compile(r"\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b.*")


class Problem(Exception):
    """A resource breaks a value check: audit ``reason``, the ``element`` concerned, what
    is wrong (``detail``, after the resource's name) and the rule's ``field``."""

    def __init__(self, reason: str, element: str, detail: str, *, field: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.element = element
        self.detail = detail
        self.field = field


def get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def entered_in_error(res: dict[str, Any]) -> bool:
    if res.get("status") == "entered-in-error":
        return True
    for c in get(res.get("verificationStatus"), "coding") or []:
        if isinstance(c, dict) and c.get("code") == "entered-in-error":
            return True
    return False


def subject(res: dict[str, Any]) -> str:
    ref = get(res.get("subject"), "reference")
    if not isinstance(ref, str) or not ref:
        raise Problem(
            "missing_subject",
            "subject.reference",
            "has no subject reference",
            field="subject",
        )
    return ref


def vocabulary(system: str) -> str:
    """The vocabulary id of a FHIR code system URI (last path segment if not a known one)."""
    if system in VOCABULARIES:
        return VOCABULARIES[system]
    tail = system.rstrip("/").rsplit("/", 1)[-1]
    return tail if "/" in system and tail else system


def coding(concept: Any, element: str) -> tuple[str | None, str]:
    """(vocabulary, code) of the coding chosen from a CodeableConcept."""
    best: tuple[str | None, str] | None = None
    for c in get(concept, "coding") or []:
        code = get(c, "code")
        if not isinstance(code, str) or not code:
            continue
        system = c.get("system")
        vocab = vocabulary(system) if isinstance(system, str) and system else None
        if vocab in STANDARD:
            return vocab, code
        if best is None:
            best = (vocab, code)
    if best is None:
        raise Problem("missing_code", element, "has no coding with a code", field="code")
    return best


def quantity(q: Any, element: str) -> tuple[float, str | None]:
    """(value, unit) of a Quantity; NaN and None when it has no value.

    A value must be a JSON number: text (``"6.1"``), ``true``, and the ``NaN`` and
    ``Infinity`` that Python's JSON parser accepts (and a number too large for a double)
    break the ``valueQuantity.value`` check.
    """
    if q is None:
        return np.nan, None
    if not isinstance(q, dict):
        raise Problem(
            "valueQuantity.value:not_a_number",
            element,
            f"has {element} {_show(q)}, which is not a Quantity (an object with a value)",
            field="valueQuantity.value",
        )
    value = q.get("value")
    if value is None:
        return np.nan, None
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "text" if isinstance(value, str) else "not a number"
        raise Problem(
            "valueQuantity.value:not_a_number",
            f"{element}.value",
            f"has {element}.value {_show(value)}, which is {kind}",
            field="valueQuantity.value",
        )
    number = float(value)
    if not math.isfinite(number):
        raise Problem(
            "valueQuantity.value:non_finite",
            f"{element}.value",
            f"has {element}.value {number}, which is not a finite number",
            field="valueQuantity.value",
        )
    unit = q.get("code") if isinstance(q.get("code"), str) else q.get("unit")
    return number, unit if isinstance(unit, str) else None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def first_date(res: dict[str, Any], candidates: list[tuple[str, Any]]) -> tuple[str, str]:
    """The first present of ``candidates`` (element, value): (element, YYYY-MM-DD)."""
    for element, raw in candidates:
        if raw is None:
            continue
        m = FHIR_DATETIME.fullmatch(raw) if isinstance(raw, str) else None
        if m is None or not m.group(3):
            if m is not None:
                what = "a date without a day"
            elif isinstance(raw, str) and _DAY_MONTH.fullmatch(raw.strip()):
                what = "not a FHIR date (day and month in an ambiguous order)"
            else:
                what = "not a FHIR date or dateTime"
            raise Problem(
                "invalid_date", element, f"has {element} {_show(raw)}, {what}", field="date"
            )
        day = f"{m.group(1)}-{m.group(2)}-{m.group(3)}"
        return element, check_date(day, element)
    names = " or ".join(e for e, _ in candidates)
    raise Problem("missing_date", candidates[0][0], f"has no date ({names})", field="date")


def check_date(text: str, element: str) -> str:
    """``text`` (YYYY-MM-DD) when it is a calendar date (not 2019-02-30)."""
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise Problem(
            "invalid_date", element, f"has {element} {text!r}, not a calendar date", field="date"
        ) from None
    return text


def birth_floor(raw: Any, *, today: str) -> tuple[int, str, bool]:
    """(year, earliest possible birth day YYYY-MM-DD, whether the day is given) of a
    Patient.birthDate (YYYY, YYYY-MM or YYYY-MM-DD). The value never appears in a
    message: a birth date identifies a person."""
    m = FHIR_DATE.fullmatch(raw) if isinstance(raw, str) else None
    floor = f"{m.group(1)}-{m.group(2) or '01'}-{m.group(3) or '01'}" if m else ""
    try:
        dt.date.fromisoformat(floor)
    except ValueError:
        m = None
    if m is None:
        raise Problem(
            "invalid_birth_date",
            "birthDate",
            "has a birthDate that is not a FHIR date or not a calendar date (not shown: "
            "it identifies a person)",
            field="birthDate",
        )
    if floor > today:
        raise Problem(
            "birth_in_future",
            "birthDate",
            "has a birthDate in the future (not shown: it identifies a person)",
            field="birthDate",
        )
    return int(m.group(1)), floor, m.group(3) is not None
