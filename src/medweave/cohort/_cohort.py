"""The Cohort: one row per patient, one block per modality, presence masks, the audit."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medweave._atomic import atomic_dir
from medweave.cohort._audit import Audit
from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError

__all__ = ["FORMAT_VERSION", "Cohort"]

FORMAT_VERSION = 1
_PATH_COLUMN = "__path__"


class Cohort:
    """Patients (``patient_id``, ``index_date``, outcome columns) and aligned modality blocks.

    Every block covers every patient; ``block.present`` says who has the modality. A
    patient is never dropped for lacking a modality.
    """

    def __init__(
        self,
        patients: pd.DataFrame,
        *,
        modalities: dict[str, ModalityBlock] | None = None,
        audit: Audit | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if "patient_id" not in patients.columns or "index_date" not in patients.columns:
            raise InputError(
                "patients table needs columns 'patient_id' and 'index_date', got "
                f"{list(patients.columns)}"
            )
        patients = patients.reset_index(drop=True).copy()
        patients["patient_id"] = patients["patient_id"].astype(str)
        dup = patients["patient_id"].duplicated()
        if dup.any():
            raise InputError(
                f"patients table: patient id {patients.loc[dup, 'patient_id'].iloc[0]!r} "
                "appears more than once; each patient needs one row"
            )
        patients["index_date"] = pd.to_datetime(patients["index_date"])
        self.patients = patients
        self.modalities: dict[str, ModalityBlock] = {}
        self.audit = audit or Audit()
        self.meta = meta or {}
        for block in (modalities or {}).values():
            self.add(block)

    @property
    def ids(self) -> list[str]:
        return self.patients["patient_id"].tolist()

    @property
    def n(self) -> int:
        return len(self.patients)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        mods = ", ".join(
            f"{k}: {int(b.present.sum())}/{self.n}" for k, b in self.modalities.items()
        )
        return f"Cohort({self.n} patients; {mods})"

    def add(self, block: ModalityBlock) -> None:
        """Align ``block`` onto the cohort's patients and add it under ``block.name``."""
        if block.name in self.modalities:
            raise InputError(f"modality {block.name!r} is already in the cohort; names are unique")
        self.modalities[block.name] = block if block.ids == self.ids else block.reindex(self.ids)

    def take(self, rows: np.ndarray | list[int]) -> Cohort:
        """The cohort restricted to the patients at positions ``rows`` (e.g. one fold)."""
        idx = np.asarray(rows, dtype=np.int64)
        sub = Cohort(
            self.patients.iloc[idx].reset_index(drop=True), audit=self.audit, meta=dict(self.meta)
        )
        for name, b in self.modalities.items():
            ids = [b.ids[i] for i in idx]
            sub.modalities[name] = ModalityBlock(
                name=name,
                kind=b.kind,
                ids=ids,
                x=b.x[idx],
                feature_names=list(b.feature_names),
                present=b.present[idx],
                paths=None if b.paths is None else [b.paths[i] for i in idx],
                events=b.events_of(ids),
                meta=dict(b.meta),
            )
        return sub

    def presence(self) -> pd.DataFrame:
        """Patients × modalities, True where the patient has the modality."""
        return pd.DataFrame(
            {k: b.present for k, b in self.modalities.items()},
            index=pd.Index(self.ids, name="patient_id"),
        )

    # --- persistence -------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the cohort to a folder (Parquet + JSON), atomically."""
        out = Path(path)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            self.patients.to_parquet(tmp / "patients.parquet", index=False)
            (tmp / "modalities").mkdir()
            blocks = []
            for name, block in self.modalities.items():
                frame = pd.DataFrame(block.x, columns=block.feature_names)
                frame.insert(0, "patient_id", block.ids)
                frame.insert(1, "present", block.present)
                if block.paths is not None:
                    frame[_PATH_COLUMN] = block.paths
                frame.to_parquet(tmp / "modalities" / f"{name}.parquet", index=False)
                if block.events is not None:
                    block.events.to_parquet(
                        tmp / "modalities" / f"{name}.events.parquet", index=False
                    )
                blocks.append({"name": name, "kind": block.kind, "meta": block.meta})
            (tmp / "cohort.json").write_text(
                json.dumps(
                    {"format_version": FORMAT_VERSION, "modalities": blocks, "meta": self.meta},
                    indent=2,
                    default=str,
                )
            )
            (tmp / "audit.json").write_text(json.dumps(self.audit.to_dict(), indent=2))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Cohort:
        """Read a folder written by :meth:`save`."""
        root = Path(path)
        manifest_path = root / "cohort.json"
        if not manifest_path.is_file():
            raise InputError(
                f"{root}: not a medweave cohort folder (no cohort.json); build one "
                "with `medweave build cohort.yaml --out DIR`"
            )
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"{manifest_path}: format_version {manifest.get('format_version')!r}, "
                f"expected {FORMAT_VERSION}; rebuild the cohort with this medweave version"
            )
        patients = pd.read_parquet(root / "patients.parquet")
        audit = Audit.from_dict(json.loads((root / "audit.json").read_text()))
        cohort = cls(patients, audit=audit, meta=manifest.get("meta", {}))
        for entry in manifest["modalities"]:
            name = entry["name"]
            frame = pd.read_parquet(root / "modalities" / f"{name}.parquet")
            paths = None
            if _PATH_COLUMN in frame.columns:
                paths = [None if p is None else str(p) for p in frame.pop(_PATH_COLUMN)]
            events_path = root / "modalities" / f"{name}.events.parquet"
            features = [c for c in frame.columns if c not in ("patient_id", "present")]
            cohort.add(
                ModalityBlock(
                    name=name,
                    kind=entry["kind"],
                    ids=frame["patient_id"].astype(str).tolist(),
                    x=frame[features].to_numpy(dtype=np.float32),
                    feature_names=features,
                    present=frame["present"].to_numpy(dtype=bool),
                    paths=paths,
                    events=pd.read_parquet(events_path) if events_path.exists() else None,
                    meta=entry.get("meta", {}),
                )
            )
        return cohort

    # --- scverse bridge ----------------------------------------------------------------
    def to_mudata(self) -> Any:
        """A MuData: one AnnData per modality holding only the patients who have it.

        ``mdata.obs`` is the patients table; presence is MuData's ``obsmap`` (0 = absent).
        A sequence modality's events are the table ``adata.uns["events"]``. Dates are ISO
        strings (``mdata.uns["medweave"]["dates"]`` names them), so ``mdata.write`` can
        store the whole cohort as one ``.h5mu`` file.
        """
        import anndata as ad
        import mudata as md

        mods = {}
        for name, block in self.modalities.items():
            keep = block.present
            obs = pd.DataFrame(index=pd.Index(np.asarray(block.ids)[keep], name="patient_id"))
            if block.paths is not None:
                obs["path"] = [p for p, k in zip(block.paths, keep, strict=True) if k]
            adata = ad.AnnData(
                X=block.x[keep],
                obs=obs,
                var=pd.DataFrame(index=pd.Index(block.feature_names, name="feature")),
            )
            adata.uns["medweave"] = json.loads(
                json.dumps({"kind": block.kind, **block.meta}, default=str)
            )
            if block.events is not None:  # sequences: the long table of the present patients
                adata.uns["events"] = block.events_of(block.ids)
            mods[name] = adata
        with md.set_options(pull_on_update=False):
            mdata = md.MuData(mods)
        patients = self.patients.set_index("patient_id")
        dates = [c for c in patients.columns if pd.api.types.is_datetime64_any_dtype(patients[c])]
        patients = patients.assign(**{c: patients[c].dt.strftime("%Y-%m-%d") for c in dates})
        mdata.obs = mdata.obs.join(patients, how="left") if len(mdata.obs) else patients
        # MuData's obs is the union of the modalities' patients: the whole patients table
        # (patients without any modality included) travels in uns.
        mdata.uns["medweave"] = {"dates": dates, "patients": patients.reset_index()}
        mdata = mdata[self.ids] if set(self.ids) <= set(mdata.obs_names) else mdata
        return mdata

    @classmethod
    def from_mudata(cls, mdata: Any) -> Cohort:
        """The inverse of :meth:`to_mudata`; a MuData from elsewhere needs ``index_date`` in
        ``mdata.obs``."""
        info = dict(mdata.uns.get("medweave", {}))
        if "patients" in info:
            patients = pd.DataFrame(info["patients"]).reset_index(drop=True)
        else:  # a MuData from elsewhere: the patients are its obs
            obs = mdata.obs.copy()
            outcome_cols = [c for c in obs.columns if ":" not in c]
            patients = obs[outcome_cols].reset_index(names="patient_id")
        for col in info.get("dates", []):
            patients[col] = pd.to_datetime(patients[col])
        cohort = cls(patients)
        for name, adata in mdata.mod.items():
            kind = adata.uns.get("medweave", {}).get("kind", "tabular")
            meta = {k: v for k, v in adata.uns.get("medweave", {}).items() if k != "kind"}
            paths = adata.obs["path"].astype(str).tolist() if "path" in adata.obs else None
            x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
            events = adata.uns.get("events")
            if events is not None:
                events = pd.DataFrame(events).reset_index(drop=True)
            cohort.add(
                ModalityBlock(
                    name=name,
                    kind=kind,
                    ids=adata.obs_names.astype(str).tolist(),
                    x=x,
                    feature_names=adata.var_names.astype(str).tolist(),
                    paths=paths,
                    events=events,
                    meta=meta,
                )
            )
        return cohort
