"""Expression / omics matrices: AnnData (.h5ad) and CSV/TSV, with gene ids harmonised.

The reader returns raw values; normalisation and variance filtering are fitted on training
patients only, by :class:`medweave.preprocess.OmicsTransformer` inside each fold.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd

from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.sources._base import ReadContext, SourceSpec, register
from medweave.sources._io import read_frame, require_columns

__all__ = ["ExpressionTableSpec", "H5adSpec", "harmonise_gene_ids"]

_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*[GTP]\d+)\.\d+$", re.IGNORECASE)


def harmonise_gene_ids(ids: list[str]) -> list[str]:
    """Upper-case, trim, drop Ensembl version suffixes (ENSG00000141510.17 -> ENSG00000141510)."""
    out = []
    for g in ids:
        g = str(g).strip().upper()
        m = _ENSEMBL_VERSION.match(g)
        out.append(m.group(1) if m else g)
    return out


class H5adSpec(SourceSpec):
    """``type: h5ad``: one or more AnnData files, samples (patients) × genes."""

    path: str | list[str]
    id_key: str | None = None  # obs column with patient ids (default: obs_names)
    date_key: str | None = None  # obs column with the sample's collection date
    gene_key: str | None = None  # var column with gene ids (default: var_names)
    layer: str | None = None


class ExpressionTableSpec(SourceSpec):
    """``type: expression_table``: CSV/TSV matrices; declare the orientation."""

    path: str | list[str]
    orientation: Literal["samples_as_rows", "genes_as_rows"]
    id_column: str  # samples_as_rows: the patient id column; genes_as_rows: the gene id column


class _Matrix:
    def __init__(
        self, path: Path, ids: list[str], genes: list[str], x: np.ndarray, dates: pd.Series | None
    ) -> None:
        self.path, self.ids, self.x, self.dates = path, ids, x, dates
        self.genes = harmonise_gene_ids(genes)
        seen: dict[str, int] = {}
        for g in self.genes:
            seen[g] = seen.get(g, 0) + 1
            if seen[g] > 1:
                raise InputError(
                    f"{path}: gene id {g!r} appears more than once after harmonisation "
                    "(upper case, no Ensembl version); aggregate duplicates before reading"
                )


def _read_h5ad(path: Path, spec: H5adSpec) -> _Matrix:
    if not path.exists():
        raise InputError(f"{path}: expression file not found (source {spec.name!r}, key path)")
    try:
        adata = ad.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for a damaged file
        raise InputError(
            f"{path}: cannot read as AnnData .h5ad ({type(exc).__name__}: {exc})"
        ) from None
    if spec.id_key is not None and spec.id_key not in adata.obs.columns:
        raise InputError(f"{path}: obs has no column {spec.id_key!r} (key id_key)")
    if spec.gene_key is not None and spec.gene_key not in adata.var.columns:
        raise InputError(f"{path}: var has no column {spec.gene_key!r} (key gene_key)")
    if spec.date_key is not None and spec.date_key not in adata.obs.columns:
        raise InputError(f"{path}: obs has no column {spec.date_key!r} (key date_key)")
    if spec.layer is not None and spec.layer not in adata.layers:
        raise InputError(f"{path}: no layer {spec.layer!r}; it has {list(adata.layers)}")
    ids = (adata.obs[spec.id_key] if spec.id_key else adata.obs_names.to_series()).astype(str)
    genes = (adata.var[spec.gene_key] if spec.gene_key else adata.var_names.to_series()).astype(str)
    mat = adata.layers[spec.layer] if spec.layer else adata.X
    x = mat.toarray() if hasattr(mat, "toarray") else np.asarray(mat)
    dates = None
    if spec.date_key:
        dates = pd.to_datetime(adata.obs[spec.date_key], errors="coerce").reset_index(drop=True)
    return _Matrix(path, ids.tolist(), genes.tolist(), x.astype(np.float32), dates)


def _read_table(path: Path, spec: ExpressionTableSpec) -> _Matrix:
    frame = read_frame(path, what="expression table")
    require_columns(frame, [spec.id_column], path=path, key="id_column")
    frame = frame.set_index(spec.id_column)
    values = frame.apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & frame.notna()
    if bad.to_numpy().any():
        r, c = (int(v[0]) for v in np.nonzero(bad.to_numpy()))
        raise InputError(
            f"{path}: value {frame.iat[r, c]!r} at row {frame.index[r]!r}, column "
            f"{frame.columns[c]!r} is not a number (orientation: {spec.orientation})"
        )
    if spec.orientation == "genes_as_rows":
        values = values.T
    ids = [str(i) for i in values.index]
    return _Matrix(path, ids, [str(g) for g in values.columns], values.to_numpy(np.float32), None)


def _combine(matrices: list[_Matrix], spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    """Genes shared by every file; one sample per patient (the latest not after the index)."""
    genes = list(matrices[0].genes)
    for m in matrices[1:]:
        shared = [g for g in genes if g in set(m.genes)]
        if not shared:
            raise InputError(
                f"{m.path}: no gene id in common with {matrices[0].path} (e.g. {m.genes[0]!r} vs "
                f"{genes[0]!r}); use the same gene identifiers (Ensembl ids or symbols) everywhere"
            )
        genes = shared
    n_dropped = sum(len(set(m.genes) - set(genes)) for m in matrices)
    index = ctx.index.set_index(ctx.index["patient_id"].astype(str))["index_date"]
    rows: list[tuple[str, np.ndarray, pd.Timestamp | None, Path]] = []
    for m in matrices:
        pos = {g: j for j, g in enumerate(m.genes)}
        cols = [pos[g] for g in genes]
        ctx.audit.read(spec.name, len(m.ids))
        for i, pid in enumerate(m.ids):
            date = None if m.dates is None else m.dates.iloc[i]
            rows.append((pid, m.x[i, cols], date, m.path))
    unknown = sorted({pid for pid, *_ in rows if pid not in index.index})
    ctx.audit.exclude_rows(
        spec.name, "unknown_patient", sum(1 for r in rows if r[0] in set(unknown))
    )
    ctx.audit.unknown_patients(spec.name, unknown)
    chosen: dict[str, tuple[np.ndarray, pd.Timestamp | None, Path]] = {}
    for pid, x, date, path in rows:
        if pid not in index.index:
            continue
        if date is not None and pd.notna(date) and date > index[pid]:
            ctx.audit.exclude_rows(spec.name, "after_index", 1)
            continue
        if pid in chosen:
            prev = chosen[pid]
            if date is None or prev[1] is None:
                raise InputError(
                    f"{path}: patient {pid!r} has a second sample (also in {prev[2]}); with no "
                    "collection dates (date_key) there is no way to choose one"
                )
            ctx.audit.exclude_rows(spec.name, "older_sample", 1)
            if date <= prev[1]:
                continue
        chosen[pid] = (x, date, path)
    ids = list(chosen)
    x = np.vstack([chosen[p][0] for p in ids]) if ids else np.zeros((0, len(genes)), np.float32)
    ctx.audit.used(spec.name, len(ids))
    return ModalityBlock(
        name=spec.name,
        kind="omics",
        ids=ids,
        x=x,
        feature_names=genes,
        meta={
            "genes_dropped_not_in_all_files": n_dropped,
            "files": len(matrices),
            "example_source_id": rows[0][0] if rows else None,
        },
    )


def _paths(spec: H5adSpec | ExpressionTableSpec, ctx: ReadContext) -> list[Path]:
    raw = spec.path if isinstance(spec.path, list) else [spec.path]
    return [ctx.resolve(p) for p in raw]


@register("h5ad", spec=H5adSpec, description="expression matrix as AnnData .h5ad (samples x genes)")
def read_h5ad(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    assert isinstance(spec, H5adSpec)
    return _combine([_read_h5ad(p, spec) for p in _paths(spec, ctx)], spec, ctx)


@register(
    "expression_table",
    spec=ExpressionTableSpec,
    description="expression matrix as CSV/TSV, samples or genes as rows (declared)",
)
def read_expression_table(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    assert isinstance(spec, ExpressionTableSpec)
    return _combine([_read_table(p, spec) for p in _paths(spec, ctx)], spec, ctx)
