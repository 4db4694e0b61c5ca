"""Choosing one study per patient for the image readers, with the audit kept on the way.

A reader turns what it finds into candidates (a DICOM series, a manifest row), each with
its date, study and a check-and-describe step; :meth:`Reading.choose` keeps per patient
the latest study inside the window whose check passes and counts every other row.

The check step also tallies the image's values (:class:`ValueSummary`) and hands the
violations of the reader's value checks (non-finite values; an image with no
information) to the shared mechanism (:meth:`ValueChecks.report`): an error under
``on_error: raise``, else (and always for a judgement call) an audited exclusion, after
which the patient's next study is tried.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources._base import ReadContext, SourceSpec
from medweave.sources._checks import ValueChecks, Violation
from medweave.sources._dicom import FileProblem

__all__ = ["AXES", "Candidate", "Reading", "ValueSummary"]

AXES = {
    "dicom": "(rows, columns) for 2-D images; (slices, rows, columns) for volumes",
    "nifti": "nibabel voxel axes (i, j, k)",
    "image": "(rows, columns)",
}


class ValueSummary:
    """What an image's values hold, tallied chunk by chunk (counts and range, no values).

    ``unit`` names one value in messages (``"voxels"``, ``"pixels"``): it is also the
    field of the reader's rule for single values; the rule of field ``"image"`` judges
    the image as a whole.
    """

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.n = 0
        self.non_finite = 0
        self.first_bad: tuple[Path, float] | None = None  # where and what the first is
        self.low = np.inf
        self.high = -np.inf

    def add(self, values: np.ndarray, *, path: Path) -> None:
        """Tally ``values`` (any shape, real numbers) read from ``path``."""
        flat = np.asarray(values).ravel()
        self.n += flat.size
        if flat.dtype.kind in "fc":
            finite = np.isfinite(flat)
            if not finite.all():
                bad = flat[~finite]
                if self.first_bad is None:
                    self.first_bad = (path, float(np.real(bad[0])))
                self.non_finite += bad.size
                flat = flat[finite]
        if flat.size:
            self.low = min(self.low, float(flat.min()))
            self.high = max(self.high, float(flat.max()))

    def violations(self, checks: ValueChecks, *, path: Path) -> list[Violation]:
        """Non-finite values (error), else an image of one value throughout (judged by
        the ``"image"`` rule). ``path`` names the image when no single file is at fault."""
        if self.first_bad is not None:
            where, value = self.first_bad
            return [
                Violation(
                    checks.rule(self.unit),
                    "non_finite",
                    f"{where} ({self.non_finite} of {self.n} {self.unit})",
                    value,
                    self.unit,
                )
            ]
        if self.n == 0 or self.low == self.high:
            what = f"every one of its {self.n} {self.unit} is {self.low:g}" if self.n else "empty"
            rule = checks.rule("image")
            return [Violation(rule, "no_information", f"{path} ({what})", self.low, "image")]
        return []


class ValueProblem(Exception):
    """Raised by a candidate's check step: its values break the reader's value checks."""

    def __init__(self, violations: list[Violation]) -> None:
        super().__init__(violations[0].where)
        self.violations = violations


@dataclass
class Candidate:
    """One usable study (series or manifest row) of a cohort patient."""

    patient_id: str
    date: np.datetime64
    study: str
    rank: tuple[Any, ...]  # lower is preferred among candidates of the same study
    rows: int  # audit rows (files or manifest rows) it stands for
    # checks; returns (block path, meta); raises FileProblem or ValueProblem
    build: Callable[[], tuple[str, dict[str, Any]]]


class Reading:
    """Shared bookkeeping of one read: index dates, audit, raise-or-skip, reasons."""

    def __init__(self, spec: SourceSpec, ctx: ReadContext, *, checks: ValueChecks) -> None:
        self.spec, self.ctx, self.name = spec, ctx, spec.name
        self.checks = checks
        ids = ctx.index["patient_id"].astype(str).tolist()
        dates = pd.to_datetime(ctx.index["index_date"]).to_numpy().astype("datetime64[D]")
        self.order = list(dict.fromkeys(ids))
        self.index: dict[str, np.datetime64] = dict(zip(ids, dates, strict=True))
        self.lookback = np.timedelta64(int(ctx.lookback_days), "D")
        self.reasons: dict[str, Counter[str]] = defaultdict(Counter)

    def exclude(self, reason: str, rows: int, patient_id: str | None = None) -> None:
        self.ctx.audit.exclude_rows(self.name, reason, rows)
        if patient_id is not None and patient_id in self.index:
            self.reasons[patient_id][reason] += rows

    def problem(self, exc: FileProblem, rows: int = 1, patient_id: str | None = None) -> None:
        """Raise under on_error=raise; else count the rows under the problem's reason."""
        if self.spec.on_error == "raise":
            raise exc
        self.exclude(exc.reason, rows, patient_id)

    def values_problem(self, violations: list[Violation], rows: int, patient_id: str) -> None:
        """Raise (on_error=raise, error severity) or count the image's rows, per reason."""
        counts = Counter({v.rule.audit_reason(v.problem): rows for v in violations})
        self.checks.report(
            violations,
            source=self.name,
            on_error=self.spec.on_error,
            audit=self.ctx.audit,
            counts=counts,
        )
        for reason, n in counts.items():
            self.reasons[patient_id][reason] += n

    def dated(self, patient_id: str, date: np.datetime64, rows: int) -> bool:
        """True if ``date`` is inside the patient's window; else count why not."""
        index = self.index[patient_id]
        if np.isnat(index):
            self.exclude("no_index_date", rows, patient_id)
        elif date > index:
            self.exclude("after_index", rows, patient_id)
        elif date < index - self.lookback:
            self.exclude("before_lookback", rows, patient_id)
        else:
            return True
        return False

    def _other_dimensions(
        self, ids: list[str], paths: list[str | None], images: dict[str, dict[str, Any]]
    ) -> list[str]:
        """The patients whose chosen image has a dimensionality other than the source's.

        One source holds one dimensionality — its images are resampled to one grid
        (:mod:`medweave.models._prep_image`) — and the more common one is taken as
        intended (a tie: the 3-D volumes). The others are an error naming the first file
        under ``on_error: raise``, else left out (``other_dimensions``)."""
        dims = {pid: len(images[pid].get("shape") or ()) for pid in ids}
        counts = Counter(d for d in dims.values() if d)
        if len(counts) < 2:
            return []
        main = max(counts, key=lambda d: (counts[d], d))
        odd = [pid for pid in ids if dims[pid] and dims[pid] != main]
        if self.spec.on_error == "raise":
            first = odd[0]
            shape = " x ".join(map(str, images[first]["shape"]))
            raise InputError(
                f"{paths[ids.index(first)]}: a {dims[first]}-D image (shape {shape}) in source "
                f"{self.name!r}, whose other {counts[main]} images are {main}-D "
                f"({len(odd)} such images); one image source holds one dimensionality: "
                "remove them from the source, give them a source of their own, or set "
                "on_error: skip to leave them out"
            )
        return odd

    def choose(self, candidates: list[Candidate], *, reader: str) -> ModalityBlock:
        """Per patient the latest study that passes its checks; counts the others. Images
        of a dimensionality other than the source's are an error (or, under ``on_error:
        skip``, left out), see :meth:`_other_dimensions`."""
        by_patient: dict[str, list[Candidate]] = defaultdict(list)
        for c in candidates:
            by_patient[c.patient_id].append(c)
        ids: list[str] = []
        paths: list[str | None] = []
        images: dict[str, dict[str, Any]] = {}
        rows: dict[str, int] = {}
        for pid in self.order:
            cands = by_patient.get(pid, [])
            study_date: dict[str, np.datetime64] = {}
            for c in cands:
                study_date[c.study] = max(study_date.get(c.study, c.date), c.date)
            cands.sort(key=lambda c: (-study_date[c.study].astype(np.int64), c.study, c.rank))
            chosen: Candidate | None = None
            for c in cands:
                if chosen is not None:
                    reason = "other_series" if c.study == chosen.study else "older_study"
                    self.exclude(reason, c.rows, pid)
                    continue
                try:
                    path, meta = c.build()
                except FileProblem as exc:
                    self.problem(exc, c.rows, pid)
                    continue
                except ValueProblem as exc:
                    self.values_problem(exc.violations, c.rows, pid)
                    continue
                chosen = c
                meta["days_before_index"] = int((self.index[pid] - c.date).astype(np.int64))
                ids.append(pid)
                paths.append(path)
                images[pid] = meta
                rows[pid] = c.rows
        for pid in self._other_dimensions(ids, paths, images):
            self.exclude("other_dimensions", rows.pop(pid), pid)
            del images[pid]
        paths = [p for pid, p in zip(ids, paths, strict=True) if pid in images]
        ids = [pid for pid in ids if pid in images]
        audit = self.ctx.audit
        audit.used(self.name, sum(rows.values()), patients=len(ids))
        missing: Counter[str] = Counter()
        for pid in self.order:
            if pid not in images:
                why = sorted(self.reasons.get(pid, {}))
                missing["no_study" if not why else "no_usable_study: " + ", ".join(why)] += 1
        for reason, n in sorted(missing.items()):
            audit.missing(self.name, reason, n)
        return ModalityBlock(
            name=self.name,
            kind="image",
            ids=ids,
            x=np.zeros((len(ids), 0), dtype=np.float32),
            feature_names=[],
            paths=paths,
            meta={"reader": reader, "axes": AXES[reader], "images": images},
        )
