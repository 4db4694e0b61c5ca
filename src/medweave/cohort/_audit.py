"""The audit: every row read and every patient, kept or excluded, with a reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Audit", "SourceAudit"]


@dataclass
class SourceAudit:
    """Rows one source read, used, and excluded by reason."""

    rows_read: int = 0
    rows_used: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    patients: int = 0  # cohort patients the source contributed data for
    #: cohort patients the source has no data for, by reason (they stay in the cohort)
    patients_missing: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_used": self.rows_used,
            "excluded": dict(sorted(self.excluded.items())),
            "patients": self.patients,
            "patients_missing": dict(sorted(self.patients_missing.items())),
        }


@dataclass
class Audit:
    """Per source: rows read / used / excluded by reason. Per patient: why excluded."""

    sources: dict[str, SourceAudit] = field(default_factory=dict)
    excluded_patients: dict[str, str] = field(default_factory=dict)  # patient id -> reason
    flow: dict[str, Any] = field(default_factory=dict)  # cohort flow, set by the builder

    def source(self, name: str) -> SourceAudit:
        return self.sources.setdefault(name, SourceAudit())

    def read(self, name: str, rows: int) -> None:
        self.source(name).rows_read += int(rows)

    def used(self, name: str, rows: int, *, patients: int | None = None) -> None:
        src = self.source(name)
        src.rows_used += int(rows)
        if patients is not None:
            src.patients = int(patients)

    def exclude_rows(self, name: str, reason: str, rows: int) -> None:
        if rows:
            self.source(name).excluded[reason] += int(rows)

    def missing(self, name: str, reason: str, patients: int) -> None:
        """``patients`` cohort patients lack this source's data for ``reason``."""
        if patients:
            self.source(name).patients_missing[reason] += int(patients)

    def exclude_patient(self, patient_id: str, reason: str) -> None:
        """A patient left out of the cohort (first reason wins)."""
        self.excluded_patients.setdefault(str(patient_id), reason)

    def unknown_patients(self, name: str, patient_ids: Iterable[str]) -> None:
        """Patients found in a source but not among the cohort's patients."""
        for pid in patient_ids:
            self.exclude_patient(pid, f"not in the index (seen in source {name!r})")

    def to_dict(self) -> dict[str, Any]:
        reasons = Counter(self.excluded_patients.values())
        return {
            "flow": self.flow,
            "sources": {k: v.to_dict() for k, v in self.sources.items()},
            "excluded_patients": {
                "count": len(self.excluded_patients),
                "by_reason": dict(sorted(reasons.items())),
                "patients": dict(sorted(self.excluded_patients.items())),
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Audit:
        audit = cls()
        for name, src in data.get("sources", {}).items():
            audit.sources[name] = SourceAudit(
                rows_read=src["rows_read"],
                rows_used=src["rows_used"],
                excluded=Counter(src["excluded"]),
                patients=src.get("patients", 0),
                patients_missing=Counter(src.get("patients_missing", {})),
            )
        audit.excluded_patients = dict(data.get("excluded_patients", {}).get("patients", {}))
        audit.flow = dict(data.get("flow", {}))
        return audit
