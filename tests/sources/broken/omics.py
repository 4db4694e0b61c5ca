"""Broken inputs of the expression readers ``h5ad`` and ``expression_table``: values that
are not finite, empty, text, off the declared scale; samples that hold no information;
repeated or empty gene and sample ids; a damaged file; unknown patients; bad dates.

Each matrix is tiny: the cohort's patients P1 … P6 (some left out, so that other
patients stay usable when a sample is skipped) × genes G0 … G4.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from medweave.testing.readers import BrokenInput

GENES = [f"G{j}" for j in range(5)]
SAMPLES = [f"P{i}" for i in range(1, 6)]


def _values(n: int = len(SAMPLES)) -> np.ndarray:
    """Positive, log-normal, distinct values (a linear scale)."""
    return np.round(np.random.default_rng(7).lognormal(3, 1, (n, len(GENES))), 3)


def _h5ad(
    change: Callable[[np.ndarray], None] | None = None,
    *,
    samples: list[str] = SAMPLES,
    genes: list[str] = GENES,
    obs: dict[str, list[Any]] | None = None,
    counts: bool = False,
    entry: dict[str, Any] | None = None,
) -> Callable[[Path], dict[str, Any]]:
    """A writer of ``x.h5ad`` (samples × genes), its values changed by ``change``."""

    def write(folder: Path) -> dict[str, Any]:
        x = _values(len(samples))
        x = np.round(x) if counts else x
        if change is not None:
            change(x)
        frame = pd.DataFrame(obs or {}, index=pd.Index(samples))
        with warnings.catch_warnings():  # repeated sample names: the broken input itself
            warnings.simplefilter("ignore", UserWarning)
            adata = ad.AnnData(x.astype(np.float32), obs=frame, var=pd.DataFrame(index=genes))
        adata.write_h5ad(folder / "x.h5ad")
        return {"type": "h5ad", "path": "x.h5ad", **(entry or {})}

    return write


def _set(i: int, j: int, value: float) -> Callable[[np.ndarray], None]:
    def change(x: np.ndarray) -> None:
        x[i, j] = value

    return change


def _table(
    name: str,
    change: Callable[[list[list[str]]], None] | None = None,
    *,
    orientation: str = "samples_as_rows",
    header: list[str] | None = None,
    counts: bool = False,
    entry: dict[str, Any] | None = None,
) -> Callable[[Path], dict[str, Any]]:
    """A writer of a samples × genes (or genes × samples) text matrix ``name``."""

    def write(folder: Path) -> dict[str, Any]:
        x = np.round(_values()) if counts else _values()
        if orientation == "samples_as_rows":
            rows = [["patient_id", *GENES]] + [
                [s, *(f"{v:g}" for v in x[i])] for i, s in enumerate(SAMPLES)
            ]
        else:
            rows = [["gene", *SAMPLES]] + [
                [g, *(f"{v:g}" for v in x[:, j])] for j, g in enumerate(GENES)
            ]
        if header is not None:
            rows[0] = header
        if change is not None:
            change(rows)
        delimiter = "\t" if name.endswith(".tsv") else ","
        (folder / name).write_text("\n".join(delimiter.join(r) for r in rows) + "\n")
        id_column = "patient_id" if orientation == "samples_as_rows" else "gene"
        return {
            "type": "expression_table",
            "path": name,
            "orientation": orientation,
            "id_column": id_column,
            **(entry or {}),
        }

    return write


def _cell(row: int, col: int, value: str) -> Callable[[list[list[str]]], None]:
    def change(rows: list[list[str]]) -> None:
        rows[row][col] = value

    return change


def _corrupt_next_to(good: Callable[[Path], dict[str, Any]]) -> Callable[[Path], dict[str, Any]]:
    def write(folder: Path) -> dict[str, Any]:
        entry = good(folder)
        (folder / "bad.h5ad").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
        return {**entry, "path": [entry["path"], "bad.h5ad"]}

    return write


def _only_corrupt(folder: Path) -> dict[str, Any]:
    (folder / "bad.h5ad").write_bytes(b"this is not an HDF5 file")
    return {"type": "h5ad", "path": "bad.h5ad"}


_DATES = {"when": ["2020-01-03", "01/03/2020", "2020-02-01", "2020-03-01", "2020-04-01"]}
_NO_DATE = {"when": ["2020-01-03", "", "2020-02-01", "2020-03-01", "2020-04-01"]}

CASES: list[BrokenInput] = [
    BrokenInput(
        "h5ad: infinite value",
        "h5ad",
        _h5ad(_set(2, 2, np.inf)),
        names=("x.h5ad", "obs row 3", "'P3'", "'G2'", "inf", "not finite"),
        skip_reason="expression:non_finite",
    ),
    BrokenInput(
        "h5ad: missing value (NaN)",
        "h5ad",
        _h5ad(_set(3, 1, np.nan)),
        names=("x.h5ad", "obs row 4", "'P4'", "'G1'", "is empty"),
        skip_reason="expression:missing",
    ),
    BrokenInput(
        "expression_table: text value",
        "expression_table",
        _table("m.csv", _cell(2, 3, "high")),
        names=("m.csv", "line 3", "'P2'", "'G2'", "'high'", "not a number"),
        skip_reason="expression:not_a_number",
    ),
    BrokenInput(
        "expression_table: empty cell, genes as rows",
        "expression_table",
        _table("m.tsv", _cell(3, 4, ""), orientation="genes_as_rows"),
        names=("m.tsv", "line 4", "'G2'", "'P4'", "is empty"),
        skip_reason="expression:missing",
    ),
    BrokenInput(
        "h5ad: negative value with scale: counts",
        "h5ad",
        _h5ad(_set(4, 0, -3), counts=True, entry={"scale": "counts"}),
        names=("x.h5ad", "obs row 5", "'P5'", "'G0'", "-3", "out of range", "scale: counts"),
        skip_reason="expression:out_of_range",
    ),
    BrokenInput(
        "expression_table: fractional value with scale: counts",
        "expression_table",
        _table("m.csv", _cell(1, 2, "2.5"), counts=True, entry={"scale": "counts"}),
        names=("m.csv", "line 2", "'P1'", "'G1'", "2.5", "not a whole number"),
        skip_reason="expression:not_integer",
    ),
    BrokenInput(
        "expression_table: log-scaled values declared linear",
        "expression_table",
        _table("m.csv", _cell(4, 5, "-1.25"), entry={"scale": "linear"}),
        names=("m.csv", "line 5", "'P4'", "'G4'", "-1.25", "scale: log"),
        skip_reason="expression:out_of_range",
    ),
    BrokenInput(
        "h5ad: a wholly zero sample",
        "h5ad",
        _h5ad(lambda x: x.__setitem__(1, 0.0)),
        names=("x.h5ad",),
        skip_reason="no_information",
        audited=True,
    ),
    BrokenInput(
        "expression_table: duplicated gene column",
        "expression_table",
        _table("m.csv", header=["patient_id", "G0", "G1", "G0", "G3", "G4"]),
        names=("m.csv", "'G0'", "2 times"),
    ),
    BrokenInput(
        "expression_table: duplicated gene id, genes as rows",
        "expression_table",
        _table("m.tsv", _cell(4, 0, "g1"), orientation="genes_as_rows"),
        names=("m.tsv", "'G1'", "line 3", "line 5", "more than once"),
    ),
    BrokenInput(
        "h5ad: empty gene id",
        "h5ad",
        _h5ad(genes=["G0", "G1", "", "G3", "G4"]),
        names=("x.h5ad", "var row 3", "empty gene id"),
    ),
    BrokenInput(
        "h5ad: duplicated sample id",
        "h5ad",
        _h5ad(samples=["P1", "P2", "P2", "P4", "P5"]),
        names=("x.h5ad", "'P2'", "obs rows 2 and 3"),
    ),
    BrokenInput(
        "expression_table: two undated samples of one patient",
        "expression_table",
        _table("m.csv", _cell(4, 0, "P1")),
        names=("m.csv", "line 5", "at line 2", "'P1'", "second sample"),
    ),
    BrokenInput(
        "expression_table: empty patient id",
        "expression_table",
        _table("m.csv", _cell(3, 0, "")),
        names=("m.csv", "line 4", "patient_id", "is empty"),
        skip_reason="patient_id:missing",
    ),
    BrokenInput(
        "h5ad: corrupt file next to a good one",
        "h5ad",
        _corrupt_next_to(_h5ad()),
        names=("bad.h5ad", "cannot read as AnnData"),
        skip_reason="unreadable_file",
    ),
    BrokenInput(
        "h5ad: the only file is corrupt",
        "h5ad",
        _only_corrupt,
        names=("bad.h5ad", "cannot read as AnnData"),
    ),
    BrokenInput(
        "h5ad: sample of a patient not in the cohort",
        "h5ad",
        _h5ad(samples=["P1", "P2", "P3", "P4", "P99"]),
        names=("x.h5ad",),
        skip_reason="unknown_patient",
        audited=True,
    ),
    BrokenInput(
        "h5ad: collection date not in ISO form",
        "h5ad",
        _h5ad(obs=_DATES, entry={"date_key": "when"}),
        names=("x.h5ad", "obs row 2", "'P2'", "when", "'01/03/2020'", "ambiguous"),
        skip_reason="collection_date:not_a_date",
    ),
    BrokenInput(
        "h5ad: collection date missing",
        "h5ad",
        _h5ad(obs=_NO_DATE, entry={"date_key": "when"}),
        names=("x.h5ad", "obs row 2", "'P2'", "when", "is empty"),
        skip_reason="collection_date:missing",
    ),
    BrokenInput(
        "h5ad: obs column named by id_key absent",
        "h5ad",
        _h5ad(entry={"id_key": "patient"}),
        names=("x.h5ad", "'patient'", "id_key"),
    ),
]
