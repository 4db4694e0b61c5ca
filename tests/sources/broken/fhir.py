"""Broken inputs of the ``fhir`` reader (see ``tests/sources/broken/__init__.py``).

Each entry writes ``fhir/good.ndjson`` (a Patient and an Observation in the window for each
of P1 … P6) and a broken file or resource next to it, so that a skipped problem leaves
patients with data.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medweave.testing.readers import INDEX_IDS, BrokenInput

_ENTRY: dict[str, Any] = {"type": "fhir", "path": "fhir"}


def patient(pid: str, birth: str = "1950-06-01") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": birth}


def observation(pid: str, *, value: Any = 5.5, date: str = "2020-05-01") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o-{pid}-{date}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1988-5"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": f"{date}T08:30:00Z",
        "valueQuantity": {"value": value, "unit": "mg/L"},
    }


def condition(pid: str, onset: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"c-{pid}",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "13645005"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": onset,
    }


def lines(resources: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in resources)


def good(ids: tuple[str, ...] = INDEX_IDS) -> str:
    """A Patient and an Observation for each of ``ids``."""
    return lines([r for pid in ids for r in (patient(pid), observation(pid))])


def _writes(
    files: dict[str, str | bytes], *, good_ids: tuple[str, ...] = INDEX_IDS
) -> Callable[[Path], dict[str, Any]]:
    """Write ``fhir/good.ndjson`` for ``good_ids`` and ``files`` (name -> content) beside it."""

    def write(folder: Path) -> dict[str, Any]:
        fhir = folder / "fhir"
        fhir.mkdir()
        (fhir / "good.ndjson").write_text(good(good_ids))
        for name, content in files.items():
            if isinstance(content, bytes):
                (fhir / name).write_bytes(content)
            else:
                (fhir / name).write_text(content, encoding="utf-8")
        return dict(_ENTRY)

    return write


def _empty_folder(folder: Path) -> dict[str, Any]:
    (folder / "fhir").mkdir()
    (folder / "fhir" / "notes.txt").write_text("not FHIR\n")
    return dict(_ENTRY)


_NO_SUBJECT = {k: v for k, v in observation("P2", date="2020-04-01").items() if k != "subject"}
_BUNDLE = json.dumps(
    {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient("P9")}]},
    indent=1,
)
_GZIP = gzip.compress(good().encode())

CASES: list[BrokenInput] = [
    BrokenInput(
        "fhir: NDJSON line that is not JSON",
        "fhir",
        _writes({"bad.ndjson": lines([observation("P1", date="2020-02-01")]) + '{"resourceT\n'}),
        names=("bad.ndjson", "line 2", "not valid JSON"),
        skip_reason="invalid_json",
    ),
    BrokenInput(
        "fhir: Bundle cut short",
        "fhir",
        _writes({"bundle.json": _BUNDLE[: len(_BUNDLE) // 2]}),
        names=("bundle.json", "line ", "cut short"),
        skip_reason="unreadable_file",
    ),
    BrokenInput(
        "fhir: Bundle without entry",
        "fhir",
        _writes({"bundle.json": '{"resourceType": "Bundle", "type": "collection"}'}),
        names=("bundle.json", "Bundle.entry"),
        skip_reason="empty_bundle",
    ),
    BrokenInput(
        "fhir: NDJSON resource without resourceType",
        "fhir",
        _writes({"x.ndjson": lines([{"id": "o1", "status": "final"}])}),
        names=("x.ndjson", "line 1", "resourceType"),
        skip_reason="not_a_resource",
    ),
    BrokenInput(
        "fhir: JSON file that is not a FHIR resource",
        "fhir",
        _writes({"manifest.json": '[{"type": "Patient", "url": "Patient.ndjson"}]'}),
        names=("manifest.json", "JSON object"),
        skip_reason="not_a_resource",
    ),
    BrokenInput(
        "fhir: Bundle entry that is not a resource",
        "fhir",
        _writes({"bundle.json": json.dumps({"resourceType": "Bundle", "entry": [{"x": 1}, 7]})}),
        names=("bundle.json", "entry 1"),
        skip_reason="not_a_resource",
    ),
    BrokenInput(
        "fhir: gzip data cut short",
        "fhir",
        _writes({"more.ndjson.gz": _GZIP[: len(_GZIP) - 12]}),
        names=("more.ndjson.gz", "line ", "gzip"),
        skip_reason="unreadable_file",
    ),
    BrokenInput(
        "fhir: Patient without id",
        "fhir",
        _writes({"x.ndjson": lines([{"resourceType": "Patient", "gender": "male"}])}),
        names=("x.ndjson", "line 1", "Patient", "has no id"),
        skip_reason="missing_id",
    ),
    BrokenInput(
        "fhir: Observation without subject",
        "fhir",
        _writes({"x.ndjson": lines([_NO_SUBJECT])}),
        names=("x.ndjson", "line 1", "subject.reference"),
        skip_reason="missing_subject",
    ),
    BrokenInput(
        "fhir: Observation in a Bundle without subject",
        "fhir",
        _writes(
            {
                "b.json": json.dumps(
                    {
                        "resourceType": "Bundle",
                        "entry": [
                            {"resource": observation("P3", date="2020-03-01")},
                            {"resource": _NO_SUBJECT},
                        ],
                    }
                )
            }
        ),
        names=("b.json", "entry 1", "subject.reference"),
        skip_reason="missing_subject",
    ),
    BrokenInput(
        "fhir: Observation whose subject is not a Patient",
        "fhir",
        _writes({"x.ndjson": lines([{**_NO_SUBJECT, "subject": {"reference": "Group/7"}}])}),
        names=("x.ndjson", "line 1", "'Group/7'"),
        skip_reason="unresolved_subject",
    ),
    BrokenInput(
        "fhir: Observation with a value as text",
        "fhir",
        _writes({"x.ndjson": lines([observation("P3", value="6.1", date="2020-03-01")])}),
        names=("x.ndjson", "line 1", "valueQuantity.value", "'6.1'"),
        skip_reason="valueQuantity.value:not_a_number",
    ),
    BrokenInput(
        "fhir: Observation with a NaN value",
        "fhir",
        _writes(
            {
                "x.ndjson": lines([observation("P4", value=None, date="2020-03-01")]).replace(
                    '"value": null', '"value": NaN'
                )
            }
        ),
        names=("x.ndjson", "line 1", "valueQuantity.value", "not a finite number"),
        skip_reason="valueQuantity.value:non_finite",
    ),
    BrokenInput(
        "fhir: Condition with a day/month date",
        "fhir",
        _writes({"x.ndjson": lines([condition("P2", "03/01/2020")])}),
        names=("x.ndjson", "line 1", "onsetDateTime", "'03/01/2020'", "ambiguous"),
        skip_reason="invalid_date",
    ),
    BrokenInput(
        "fhir: Observation dated before its patient's birth",
        "fhir",
        _writes(
            {
                "x.ndjson": lines(
                    [patient("P6", "2019-06-01"), observation("P6", date="2019-01-01")]
                )
            },
            good_ids=INDEX_IDS[:5],
        ),
        names=("x.ndjson", "line 2", "effectiveDateTime", "before the birth"),
        skip_reason="record_before_birth",
    ),
    BrokenInput(
        "fhir: Patient born in the future",
        "fhir",
        _writes({"x.ndjson": lines([patient("P6", "2999-01-01")])}, good_ids=INDEX_IDS[:5]),
        names=("x.ndjson", "line 1", "birthDate", "in the future"),
        skip_reason="birth_in_future",
    ),
    BrokenInput(
        "fhir: Patient with a birthDate that is not a FHIR date",
        "fhir",
        _writes({"x.ndjson": lines([patient("P6", "01.06.1950")])}, good_ids=INDEX_IDS[:5]),
        names=("x.ndjson", "line 1", "birthDate"),
        skip_reason="invalid_birth_date",
    ),
    BrokenInput(
        "fhir: folder without FHIR files",
        "fhir",
        _empty_folder,
        names=("fhir", "no FHIR files"),
    ),
    BrokenInput(
        "fhir: records of a patient without a Patient resource",
        "fhir",
        _writes({"x.ndjson": lines([observation("P6")])}, good_ids=INDEX_IDS[:5]),
        names=(),
        skip_reason="no_person_record",
        audited=True,
    ),
]
