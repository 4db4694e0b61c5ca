"""A modality block: one modality's data for the patients that have it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from medweave.errors import InputError

__all__ = ["EVENT_COLUMNS", "KINDS", "ModalityBlock"]

Kind = Literal["tabular", "omics", "image", "sequence", "exposure"]
KINDS: tuple[str, ...] = ("tabular", "omics", "image", "sequence", "exposure")
#: Columns of a sequence block's ``events`` table.
EVENT_COLUMNS: tuple[str, ...] = ("patient_id", "days_before_index", "code", "value")


@dataclass
class ModalityBlock:
    """One modality, row-aligned with ``ids``.

    A reader returns a block holding only the patients it found (``ids``), with ``present``
    all true. :meth:`medweave.cohort.Cohort.add` re-indexes it onto the cohort's patients:
    a patient without the modality gets ``present`` false and a row of NaN that no model
    may read as data.

    * tabular / omics / exposure: ``x`` is (n, p) float32 with ``feature_names`` (p); NaN
      inside a present row means "not measured" (a lab never ordered).
    * image: ``paths`` holds one file or folder per patient (read lazily by the image
      source's loader); ``x`` is (n, 0).
    * sequence: ``events`` is a long table (patient_id, days_before_index, code, value)
      holding events of the block's patients only; ``x`` is (n, 0).
    """

    name: str
    kind: Kind
    ids: list[str]
    x: np.ndarray
    feature_names: list[str]
    present: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    paths: list[str | None] | None = None
    events: Any = None  # pandas.DataFrame for sequence blocks
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(
                f"block {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}"
            )
        self.x = np.asarray(self.x, dtype=np.float32)
        n = len(self.ids)
        if self.present.size == 0:
            self.present = np.ones(n, dtype=bool)
        if self.x.ndim != 2 or self.x.shape[0] != n:
            raise InputError(
                f"block {self.name!r}: x has shape {self.x.shape}, expected ({n}, p) "
                f"for {n} patient ids"
            )
        if self.x.shape[1] != len(self.feature_names):
            raise InputError(
                f"block {self.name!r}: x has {self.x.shape[1]} columns but "
                f"{len(self.feature_names)} feature names"
            )
        if self.present.shape != (n,):
            raise InputError(
                f"block {self.name!r}: present has shape {self.present.shape}, expected ({n},)"
            )
        if len(set(self.ids)) != n:
            dup = next(i for i in self.ids if self.ids.count(i) > 1)
            raise InputError(f"block {self.name!r}: patient id {dup!r} appears more than once")
        if self.paths is not None and len(self.paths) != n:
            raise InputError(
                f"block {self.name!r}: {len(self.paths)} image paths for {n} patient ids"
            )
        if self.kind == "sequence" or self.events is not None:
            self._check_events()

    def _check_events(self) -> None:
        if not isinstance(self.events, pd.DataFrame):
            raise InputError(
                f"block {self.name!r}: a sequence block needs events, a table with the columns "
                f"{', '.join(EVENT_COLUMNS)}; got {type(self.events).__name__}"
            )
        missing = [c for c in EVENT_COLUMNS if c not in self.events.columns]
        if missing:
            raise InputError(
                f"block {self.name!r}: events lack the column(s) {', '.join(missing)}; expected "
                f"{', '.join(EVENT_COLUMNS)}"
            )
        unknown = ~self.events["patient_id"].isin(self.ids)
        if unknown.any():
            n_unknown = self.events.loc[unknown, "patient_id"].nunique()
            raise InputError(
                f"block {self.name!r}: events of {n_unknown} patient(s) not among the block's "
                f"{len(self.ids)} patient ids; give each event the id of one of them"
            )

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    def events_of(self, ids: list[str]) -> pd.DataFrame | None:
        """``events`` of the patients ``ids`` who have the modality (None without events)."""
        if self.events is None:
            return None
        keep = set(ids).intersection(np.asarray(self.ids, dtype=object)[self.present])
        rows = self.events["patient_id"].isin(keep).to_numpy()
        return self.events if rows.all() else self.events[rows].reset_index(drop=True)

    def reindex(self, ids: list[str]) -> ModalityBlock:
        """The block on the patient list ``ids``: absent patients get present=False, NaN rows."""
        pos = {pid: i for i, pid in enumerate(self.ids)}
        wanted = set(ids)
        unknown = [pid for pid in self.ids if pid not in wanted]
        if unknown:
            raise InputError(
                f"block {self.name!r}: {len(unknown)} patient ids are not in the cohort "
                f"(first: {unknown[0]!r}); the cohort has {len(ids)} patients and the block "
                f"{len(self.ids)}"
            )
        take = np.array([pos.get(pid, -1) for pid in ids], dtype=np.int64)
        have = take >= 0
        x = np.full((len(ids), self.n_features), np.nan, dtype=np.float32)
        x[have] = self.x[take[have]]
        present = np.zeros(len(ids), dtype=bool)
        present[have] = self.present[take[have]]
        paths = None
        if self.paths is not None:
            paths = [self.paths[t] if t >= 0 else None for t in take]
        return ModalityBlock(
            name=self.name,
            kind=self.kind,
            ids=list(ids),
            x=x,
            feature_names=list(self.feature_names),
            present=present,
            paths=paths,
            events=self.events_of(list(ids)),
            meta=dict(self.meta),
        )
