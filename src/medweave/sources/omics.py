"""Expression / omics matrices: AnnData (.h5ad) and CSV/TSV, with gene ids harmonised.

The reader returns raw values on the scale the source declares (``scale``: ``counts``,
``linear``, ``log``, or ``auto``: found by :func:`medweave.preprocess.omics.detect_scale`);
the block's ``meta`` says which (``scale``), whether it was detected (``scale_detected``)
and why (``scale_evidence``). Normalisation and variance filtering are fitted on training
patients only, by :class:`medweave.preprocess.OmicsTransformer` inside each fold, which
takes ``log1p`` of counts and linear values and leaves log values as they are.

Value checks (declared below, applied by :mod:`medweave.sources._checks`): in each sample
(a row of the matrix) every value of the genes used is a number, finite, and fits the
scale (>= 0 for counts and linear values, whole for counts); the sample has a patient id
and, with ``date_key``, an ISO collection date. A sample breaking one is an error naming
the file, the sample, the gene and the value, or with ``on_error: skip`` left out and
counted as ``{field}:{problem}``. A sample whose values are all equal (all zero) holds no
information: it is left out and counted as ``no_information`` with a warning, whatever
``on_error`` says (a judgement call). Gene ids that are empty or repeated, sample names
repeated in a file, and a patient with two undated samples are errors either way.

Presence: a patient has the modality when at least one of their samples passes every
check and, with ``date_key``, was collected in ``[index_date - lookback_days,
index_date]``; of several, the latest is used. Cohort patients whose samples were all left
out are counted as missing: ``no_usable_sample`` (a check failed) or
``no_sample_in_window`` (dated after the index or before the lookback).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd

from medweave.cohort._block import ModalityBlock
from medweave.errors import InputError
from medweave.preprocess.omics import ExpressionScale, detect_scale
from medweave.sources._base import ReadContext, SourceSpec, register
from medweave.sources._checks import Rule, ValueChecks, Violation, parse_numbers
from medweave.sources._io import data_row, read_frame, require_columns

__all__ = [
    "H5AD_CHECKS",
    "TABLE_CHECKS",
    "ExpressionTableSpec",
    "H5adSpec",
    "harmonise_gene_ids",
]

log = logging.getLogger("medweave.sources")

_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*[GTP]\d+)\.\d+$", re.IGNORECASE)

Scale = Literal["counts", "linear", "log", "auto"]

_EXPRESSION = {
    "counts": Rule(
        "expression",
        "a raw count: a whole number >= 0 (scale: counts; declare scale: linear or log otherwise)",
        min=0,
        integer=True,
        required=True,
    ),
    "linear": Rule(
        "expression",
        "a finite number >= 0 (scale: linear; declare scale: log for log-scaled values)",
        min=0,
        required=True,
    ),
    "log": Rule("expression", "a finite number (scale: log)", required=True),
}
_PATIENT = Rule("patient_id", "a patient id for every sample", required=True)
_SAMPLE = Rule(
    "sample",
    "values that differ between genes (an all-zero sample measured nothing)",
    severity="warn",
    reason="no_information",
)
_DATE = Rule(
    "collection_date", "an ISO date (YYYY-MM-DD) for every sample", required=True, date=True
)


@dataclass(frozen=True)
class _Checks:
    """A reader's declared checks: the sample-wide ones, and the value rule per scale."""

    sample: ValueChecks
    scales: dict[str, ValueChecks]

    def expression(self, scale: str) -> Rule:
        return self.scales[scale].rule("expression")


def _declare(reader: str, *, dated: bool) -> _Checks:
    sample = ValueChecks(reader, [_PATIENT, _SAMPLE, *([_DATE] if dated else [])])
    return _Checks(sample, {k: ValueChecks(reader, [rule]) for k, rule in _EXPRESSION.items()})


#: The value checks of the ``h5ad`` and ``expression_table`` readers.
H5AD_CHECKS = _declare("h5ad", dated=True)
TABLE_CHECKS = _declare("expression_table", dated=False)


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
    scale: Scale = "auto"  # counts | linear | log, or auto: detected (block meta says which)


class ExpressionTableSpec(SourceSpec):
    """``type: expression_table``: CSV/TSV/Parquet matrices; declare the orientation."""

    path: str | list[str]
    orientation: Literal["samples_as_rows", "genes_as_rows"]
    id_column: str  # samples_as_rows: the patient id column; genes_as_rows: the gene id column
    scale: Scale = "auto"  # counts | linear | log, or auto: detected (block meta says which)


class _Unreadable(InputError):
    """A file that exists but cannot be read at all (left out under ``on_error: skip``)."""


def _text_id(value: Any) -> str | None:
    """An id as text, or None when empty."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


class _Matrix:
    """One file's samples × genes: values as float64 (NaN where empty or text), what the
    file calls each sample and gene, and how to name a sample or a cell in a message."""

    def __init__(
        self,
        path: Path,
        *,
        ids: list[str | None],
        labels: list[str],
        genes: list[Any],
        x: np.ndarray,
        text: np.ndarray | None = None,
        raw: Callable[[int, int], Any] | None = None,
        dates: pd.Series | None = None,
        date_key: str = "",
        layout: Literal["h5ad", "samples_as_rows", "genes_as_rows"] = "h5ad",
    ) -> None:
        self.path, self.ids, self.labels, self.x, self.text = path, ids, labels, x, text
        self.dates, self.date_key, self.layout = dates, date_key, layout
        self.raw = raw or (lambda i, j: self.x[i, j])
        self.written = [_text_id(g) for g in genes]
        for j, g in enumerate(self.written):
            if g is None:
                raise InputError(
                    f"{self.gene_where(j)}: empty gene id; every gene needs an id "
                    "(a gene symbol or an Ensembl id)"
                )
        self.genes = harmonise_gene_ids([str(g) for g in self.written])
        first: dict[str, int] = {}
        for j, g in enumerate(self.genes):
            if g in first:
                raise InputError(
                    f"{path}: gene id {g!r} appears more than once after harmonisation "
                    f"(upper case, no Ensembl version): {self.gene_place(first[g])} and "
                    f"{self.gene_place(j)}; aggregate duplicates before reading"
                )
            first[g] = j

    def gene_place(self, j: int) -> str:
        """Where gene ``j`` is in the file: ``var row 3``, ``line 4``, ``gene column 2``."""
        if self.layout == "h5ad":
            return f"var row {j + 1}"
        if self.layout == "genes_as_rows":
            return data_row(self.path, j)
        return f"gene column {j + 1}"  # counted after the id column

    def gene_where(self, j: int) -> str:
        return f"{self.path} {self.gene_place(j)}"

    def place(self, i: int) -> str:
        """Where sample ``i`` is in the file: ``obs row 3``, ``line 4``, ``column 'P1'``."""
        if self.layout == "h5ad":
            return f"obs row {i + 1}"
        if self.layout == "genes_as_rows":
            return f"column {self.labels[i]!r}"
        return data_row(self.path, i)

    def sample(self, i: int) -> str:
        """Sample ``i`` in a message: file, row (or column) and the sample's name."""
        label = self.labels[i]
        named = f" (sample {label!r})" if label and self.layout != "genes_as_rows" else ""
        return f"{self.path} {self.place(i)}{named}"

    def cell(self, i: int, j: int) -> str:
        """Sample ``i``'s value of gene ``j`` in a message."""
        gene = self.written[j]
        if self.layout == "genes_as_rows":
            row = data_row(self.path, j)
            return f"{self.path} {row} (gene {gene!r}), column {self.labels[i]!r}"
        if self.layout == "h5ad":
            return f"{self.sample(i)}, gene {gene!r}"
        return f"{self.sample(i)}, column {gene!r}"

    def refuse_repeats(self, *, dated: bool) -> None:
        """A patient with two samples in this file needs collection dates to choose one."""
        if dated:
            return
        first: dict[str, int] = {}
        for i, pid in enumerate(self.ids):
            if pid is None:
                continue
            if pid in first:
                hint = " or set date_key" if self.layout == "h5ad" else ""
                raise InputError(
                    f"{self.path} {self.place(i)}: patient id {pid!r} has a second sample (at "
                    f"{self.place(first[pid])}); with no collection dates there is no way "
                    f"to choose one: keep one sample per patient{hint}"
                )
            first[pid] = i


def _read_h5ad(path: Path, spec: H5adSpec) -> _Matrix:
    if not path.exists():
        raise InputError(f"{path}: expression file not found (source {spec.name!r}, key path)")
    try:
        with warnings.catch_warnings():  # e.g. repeated obs names: checked below, in one line
            warnings.simplefilter("ignore")
            adata = ad.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for a damaged file
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise _Unreadable(
            f"{path}: cannot read as AnnData .h5ad ({type(exc).__name__}: {first})"
        ) from None
    for name, key, frame, what in (
        ("id_key", spec.id_key, adata.obs, "obs"),
        ("gene_key", spec.gene_key, adata.var, "var"),
        ("date_key", spec.date_key, adata.obs, "obs"),
    ):
        if key is not None and key not in frame.columns:
            raise InputError(
                f"{path}: {what} has no column {key!r} (key {name}); it has {list(frame.columns)}"
            )
    if spec.layer is not None and spec.layer not in adata.layers:
        raise InputError(f"{path}: no layer {spec.layer!r}; it has {list(adata.layers)}")
    labels = [str(s) for s in adata.obs_names]
    seen: dict[str, int] = {}
    for i, s in enumerate(labels):
        if s in seen:
            raise InputError(
                f"{path}: sample name {s!r} appears more than once in obs_names (obs rows "
                f"{seen[s] + 1} and {i + 1}); give each sample its own name (patient ids "
                "shared by several samples go in an obs column named by id_key)"
            )
        seen[s] = i
    ids_raw = adata.obs[spec.id_key] if spec.id_key else pd.Series(list(adata.obs_names))
    genes = adata.var[spec.gene_key] if spec.gene_key else pd.Series(list(adata.var_names))
    mat = adata.layers[spec.layer] if spec.layer else adata.X
    if mat is None:
        raise InputError(f"{path}: the AnnData file has no X matrix; name a layer (key layer)")
    try:
        x = np.asarray(mat.toarray() if hasattr(mat, "toarray") else mat, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: the expression matrix is not numeric ({exc})") from None
    m = _Matrix(
        path,
        ids=[_text_id(v) for v in ids_raw.tolist()],
        labels=labels,
        genes=genes.tolist(),
        x=x,
        dates=None if spec.date_key is None else adata.obs[spec.date_key].reset_index(drop=True),
        date_key=spec.date_key or "",
    )
    m.refuse_repeats(dated=spec.date_key is not None)
    return m


def _table_numbers(block: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The cells as float64 (NaN where empty or text) and where text is not a number."""
    if all(pd.api.types.is_numeric_dtype(t) for t in block.dtypes):  # Parquet
        return block.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(block.shape, bool)
    numbers, _, text = parse_numbers(pd.Series(block.to_numpy(dtype=object).ravel()))
    return numbers.reshape(block.shape), text.reshape(block.shape)


def _read_table(path: Path, spec: ExpressionTableSpec) -> _Matrix:
    frame = read_frame(path, what="expression table")
    require_columns(frame, [spec.id_column], path=path, key="id_column")
    others = [str(c) for c in frame.columns if c != spec.id_column]
    if not others:
        what = "gene" if spec.orientation == "samples_as_rows" else "sample"
        raise InputError(
            f"{path}: no column besides {spec.id_column!r}; expected one column per {what} "
            f"(orientation: {spec.orientation})"
        )
    cells = frame[others]
    x, text = _table_numbers(cells)
    keys = frame[spec.id_column].tolist()
    if spec.orientation == "samples_as_rows":
        ids = [_text_id(v) for v in keys]
        m = _Matrix(
            path,
            ids=ids,
            labels=[_text_id(v) or "" for v in keys],
            genes=others,
            x=x,
            text=text,
            raw=lambda i, j: cells.iat[i, j],
            layout="samples_as_rows",
        )
    else:
        m = _Matrix(
            path,
            ids=[_text_id(c) for c in others],
            labels=[str(c) for c in others],
            genes=keys,
            x=x.T,
            text=text.T,
            raw=lambda i, j: cells.iat[j, i],
            layout="genes_as_rows",
        )
    m.refuse_repeats(dated=False)
    return m


@dataclass
class _Found:
    """Violations found while reading a source, with the audit reason of each."""

    violations: list[tuple[tuple[int, int], Violation, str]]

    def add(self, key: tuple[int, int], violation: Violation) -> None:
        self.violations.append((key, violation, violation.rule.audit_reason(violation.problem)))

    def patients(self, matrices: list[_Matrix]) -> set[str]:
        """The patients of the samples that broke a check."""
        return {str(matrices[k].ids[i]) for (k, i), _, _ in self.violations}

    def report(self, checks: _Checks, spec: SourceSpec, ctx: ReadContext) -> None:
        self.violations.sort(key=lambda t: t[0])
        counts: dict[str, int] = {}
        for _, _, reason in self.violations:
            counts[reason] = counts.get(reason, 0) + 1
        checks.sample.report(
            [v for _, v, _ in self.violations],
            source=spec.name,
            on_error=spec.on_error,
            audit=ctx.audit,
            counts=counts,
        )


def _check_dates(
    m: _Matrix,
    k: int,
    ok: np.ndarray,
    *,
    index: pd.Series,
    ctx: ReadContext,
    name: str,
    found: _Found,
    outside: set[str],
) -> pd.Series | None:
    """Collection dates of file ``k``: bad ones are violations (``found``), samples outside
    the window are left out and counted (their patients added to ``outside``)."""
    if m.dates is None:
        return None
    parsed, problem = _DATE.problems(m.dates)
    dates = pd.Series(parsed)
    for i in map(int, np.flatnonzero(ok & (problem != ""))):
        shown = m.dates.iloc[i]
        found.add((k, i), Violation(_DATE, str(problem[i]), m.sample(i), shown, m.date_key))
        ok[i] = False
    known = [str(p) if p is not None and ok[i] else None for i, p in enumerate(m.ids)]
    when = pd.Series([index.get(p, pd.NaT) if p else pd.NaT for p in known], dtype="M8[ns]")
    after = ok & (dates > when).to_numpy()
    before = ok & (dates < when - pd.Timedelta(days=int(ctx.lookback_days))).to_numpy()
    ctx.audit.exclude_rows(name, "after_index", int(after.sum()))
    ctx.audit.exclude_rows(name, "before_lookback", int(before.sum()))
    outside.update(str(m.ids[j]) for j in np.flatnonzero(after | before))
    ok &= ~(after | before)
    return dates


def _check_values(
    m: _Matrix, k: int, ok: np.ndarray, cols: list[int], rule: Rule, found: _Found
) -> None:
    """Values of the genes used in the samples still in (``ok``, updated): a sample with a
    value breaking ``rule``, or with all values equal, is left out."""
    rows = np.flatnonzero(ok)
    if not rows.size:
        return
    at = np.ix_(rows, np.asarray(cols, dtype=np.intp))
    sub = m.x[at]
    _, problem = rule.problems(sub.ravel())
    problem = problem.reshape(sub.shape)
    if m.text is not None:
        problem[m.text[at]] = "not_a_number"
    broken = (problem != "").any(axis=1)
    for r in np.flatnonzero(broken):
        i, c = int(rows[r]), int(np.flatnonzero(problem[r] != "")[0])
        j = cols[c]
        found.add((k, i), Violation(rule, str(problem[r, c]), m.cell(i, j), m.raw(i, j)))
    if len(cols) >= 2:
        flat = ~broken & (np.ptp(np.where(problem == "", sub, 0.0), axis=1) == 0)
        for r in np.flatnonzero(flat):
            i = int(rows[r])
            value = float(sub[r, 0])
            found.add((k, i), Violation(_SAMPLE, "no_information", m.sample(i), value))
        broken |= flat
    ok[rows[broken]] = False


def _combine(
    matrices: list[_Matrix],
    spec: H5adSpec | ExpressionTableSpec,
    ctx: ReadContext,
    checks: _Checks,
) -> ModalityBlock:
    """Genes shared by every file; checked samples; one per patient (the latest in the
    window)."""
    genes = list(matrices[0].genes)
    if not genes:
        raise InputError(f"{matrices[0].path}: the expression matrix has no genes")
    for m in matrices[1:]:
        present = set(m.genes)
        shared = [g for g in genes if g in present]
        if not shared:
            raise InputError(
                f"{m.path}: no gene id in common with {matrices[0].path} (e.g. {m.genes[0]!r} vs "
                f"{genes[0]!r}); use the same gene identifiers (Ensembl ids or symbols) everywhere"
            )
        genes = shared
    n_dropped = sum(len(set(m.genes) - set(genes)) for m in matrices)
    index = ctx.index.set_index(ctx.index["patient_id"].astype(str))["index_date"]
    found = _Found([])
    outside: set[str] = set()
    unknown: set[str] = set()
    keep: list[np.ndarray] = []
    dates: list[pd.Series | None] = []
    positions = [{g: j for j, g in enumerate(m.genes)} for m in matrices]
    cols = [[pos[g] for g in genes] for pos in positions]
    for k, m in enumerate(matrices):
        ctx.audit.read(spec.name, len(m.ids))
        ok = np.ones(len(m.ids), dtype=bool)
        for i, pid in enumerate(m.ids):
            if pid is None:
                found.add((k, i), Violation(_PATIENT, "missing", m.sample(i), None))
                ok[i] = False
            elif pid not in index.index:
                unknown.add(pid)
                ok[i] = False
        ctx.audit.exclude_rows(
            spec.name, "unknown_patient", sum(1 for p in m.ids if p is not None and p in unknown)
        )
        dates.append(
            _check_dates(
                m, k, ok, index=index, ctx=ctx, name=spec.name, found=found, outside=outside
            )
        )
        keep.append(ok)
    ctx.audit.unknown_patients(spec.name, sorted(unknown))
    scale, detected, evidence = _scale(spec, matrices, keep, cols)
    rule = checks.expression(scale)
    for k, m in enumerate(matrices):
        _check_values(m, k, keep[k], cols[k], rule, found)
    found.report(checks, spec, ctx)
    bad = found.patients(matrices)
    chosen = _choose(matrices, keep, dates, cols, spec, ctx)
    seen = {str(p) for m in matrices for p in m.ids if p is not None and p in index.index}
    lost = seen - set(chosen)
    ctx.audit.missing(spec.name, "no_usable_sample", len(lost & bad))
    ctx.audit.missing(spec.name, "no_sample_in_window", len((lost - bad) & outside))
    ctx.audit.missing(spec.name, "no_sample", len(set(index.index) - seen))
    ids = list(chosen)
    x = np.vstack([chosen[p] for p in ids]) if ids else np.zeros((0, len(genes)))
    ctx.audit.used(spec.name, len(ids))
    if detected:
        log.info("source %r: expression on a %s scale (detected: %s)", spec.name, scale, evidence)
    return ModalityBlock(
        name=spec.name,
        kind="omics",
        ids=ids,
        x=x.astype(np.float32),
        feature_names=genes,
        meta={
            "genes_dropped_not_in_all_files": n_dropped,
            "files": len(matrices),
            "example_source_id": next((p for m in matrices for p in m.ids if p), None),
            "scale": scale,
            "scale_detected": detected,
            "scale_evidence": evidence,
        },
    )


def _scale(
    spec: H5adSpec | ExpressionTableSpec,
    matrices: list[_Matrix],
    keep: list[np.ndarray],
    cols: list[list[int]],
) -> tuple[ExpressionScale, bool, str]:
    """The declared scale, or the one found in the values of the samples in the window."""
    if spec.scale != "auto":
        return spec.scale, False, "declared"
    parts = [
        m.x[np.ix_(ok, np.asarray(c, dtype=np.intp))].ravel()
        for m, ok, c in zip(matrices, keep, cols, strict=True)
    ]
    scale, evidence = detect_scale(np.concatenate(parts) if parts else np.zeros(0))
    return scale, True, evidence


def _choose(
    matrices: list[_Matrix],
    keep: list[np.ndarray],
    dates: list[pd.Series | None],
    cols: list[list[int]],
    spec: SourceSpec,
    ctx: ReadContext,
) -> dict[str, np.ndarray]:
    """Per patient the latest usable sample (two undated ones are an error)."""
    chosen: dict[str, tuple[np.ndarray, pd.Timestamp | None, int, int]] = {}
    for k, m in enumerate(matrices):
        for i in map(int, np.flatnonzero(keep[k])):
            pid = str(m.ids[i])
            when = dates[k]
            date = None if when is None else when.iloc[i]
            if pid in chosen:
                prev = chosen[pid]
                if date is None or prev[1] is None:
                    raise InputError(
                        f"{m.sample(i)}: patient {pid!r} has a second sample (also in "
                        f"{matrices[prev[2]].sample(prev[3])}); with no collection dates "
                        "(date_key) there is no way to choose one"
                    )
                ctx.audit.exclude_rows(spec.name, "older_sample", 1)
                if date <= prev[1]:
                    continue
            chosen[pid] = (m.x[i, cols[k]], date, k, int(i))
    return {pid: v[0] for pid, v in chosen.items()}


def _paths(spec: H5adSpec | ExpressionTableSpec, ctx: ReadContext) -> list[Path]:
    raw = spec.path if isinstance(spec.path, list) else [spec.path]
    return [ctx.resolve(p) for p in raw]


def _read_all(
    spec: H5adSpec | ExpressionTableSpec,
    ctx: ReadContext,
    read: Callable[[Path], _Matrix],
) -> list[_Matrix]:
    """Every file of the source; under ``on_error: skip`` a file that cannot be read at all
    is left out and counted (``unreadable_file``), as long as another one can be."""
    matrices, failures = [], []
    for path in _paths(spec, ctx):
        try:
            matrices.append(read(path))
        except _Unreadable as exc:
            if spec.on_error == "raise":
                raise
            failures.append(exc)
    if failures and not matrices:
        raise failures[0]
    for failure in failures:
        ctx.audit.exclude_rows(spec.name, "unreadable_file", 1)
        log.warning("source %r: %s (left out and counted in the audit)", spec.name, failure)
    return matrices


@register("h5ad", spec=H5adSpec, description="expression matrix as AnnData .h5ad (samples x genes)")
def read_h5ad(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    assert isinstance(spec, H5adSpec)
    return _combine(_read_all(spec, ctx, lambda p: _read_h5ad(p, spec)), spec, ctx, H5AD_CHECKS)


@register(
    "expression_table",
    spec=ExpressionTableSpec,
    description="expression matrix as CSV/TSV, samples or genes as rows (declared)",
)
def read_expression_table(spec: SourceSpec, ctx: ReadContext) -> ModalityBlock:
    assert isinstance(spec, ExpressionTableSpec)
    matrices = _read_all(spec, ctx, lambda p: _read_table(p, spec))
    return _combine(matrices, spec, ctx, TABLE_CHECKS)
