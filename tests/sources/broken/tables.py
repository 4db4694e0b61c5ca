"""Broken inputs of the flat-table readers ``table`` and ``events`` and of flat files in
general (encodings, delimiters, duplicated columns, dates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medweave.testing.readers import BrokenInput


def _file(name: str, text: str | bytes, entry: dict[str, Any]) -> Any:
    def write(folder: Path) -> dict[str, Any]:
        path = folder / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return {"path": name, **entry}

    return write


_GOOD = "P1,1.5\nP2,2.0\nP3,0.5\n"

CASES: list[BrokenInput] = [
    BrokenInput(
        "table: duplicated column name",
        "table",
        _file("wide.csv", "patient_id,crp,crp\nP1,1,2\n", {"type": "table"}),
        names=("wide.csv", "'crp'", "2 times"),
    ),
    BrokenInput(
        "table: text in a numeric column",
        "table",
        _file("wide.csv", "patient_id,crp\n" + _GOOD + "P4,6.1%\n", {"type": "table"}),
        names=("wide.csv", "line 5", "crp", "'6.1%'"),
        skip_reason="crp:not_a_number",
    ),
    BrokenInput(
        "table: infinite value",
        "table",
        _file("wide.csv", "patient_id,crp\n" + _GOOD + "P4,inf\n", {"type": "table"}),
        names=("wide.csv", "line 5", "crp"),
        skip_reason="crp:non_finite",
    ),
]
