"""Broken inputs that are not one source: cohort.yaml and study.yaml, and the index table.

Each writes its files into the case folder (which holds a valid ``index.csv``) and gives
the command line to run; the harness expects exit code 2 and one line naming the culprit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medweave.testing.readers import BrokenInput

_COHORT = """\
name: broken-config
index: {rule: column, table: index.csv}
outcome: {binary: {column: outcome}}
sources: []
"""


def _text(name: str, text: str) -> Callable[[Path], dict[str, Any]]:
    def write(folder: Path) -> dict[str, Any]:
        (folder / name).write_text(text, encoding="utf-8")
        return {}

    return write


def _build(config: str = "cohort.yaml") -> Callable[[Path], list[str]]:
    return lambda folder: ["build", str(folder / config), "--out", str(folder / "built")]


def _run(study: str = "study.yaml") -> Callable[[Path], list[str]]:
    return lambda folder: ["run", str(folder / study), "--out", str(folder / "run"), "--quiet"]


def _index(text: str) -> Callable[[Path], dict[str, Any]]:
    """An index table replaced by ``text``, and a cohort.yaml that reads it."""

    def write(folder: Path) -> dict[str, Any]:
        (folder / "index.csv").write_text(text, encoding="utf-8")
        (folder / "cohort.yaml").write_text(_COHORT)
        return {}

    return write


def _study(text: str) -> Callable[[Path], dict[str, Any]]:
    def write(folder: Path) -> dict[str, Any]:
        (folder / "cohort.yaml").write_text(_COHORT)
        (folder / "study.yaml").write_text(text)
        return {}

    return write


def _case(
    name: str,
    write: Callable[[Path], dict[str, Any]],
    argv: Callable[[Path], list[str]],
    *names: str,
) -> BrokenInput:
    reader = "study.yaml" if name.startswith("study") else "cohort.yaml"
    return BrokenInput(name, reader, write, names=names, argv=argv)


CASES: list[BrokenInput] = [
    _case(
        "cohort.yaml: not YAML (an unclosed bracket)",
        _text("cohort.yaml", "name: x\nindex: {rule: column, table: index.csv\noutcome: 1\n"),
        _build(),
        "cohort.yaml",
        "line",
        "not valid YAML",
    ),
    _case(
        "cohort.yaml: a list instead of a mapping",
        _text("cohort.yaml", "- name: x\n- index: 1\n"),
        _build(),
        "cohort.yaml",
        "expected a mapping",
    ),
    _case(
        "cohort.yaml: misspelt source key",
        _text(
            "cohort.yaml",
            _COHORT.replace("sources: []", "sources: [{name: a, type: table, paht: x.csv}]"),
        ),
        _build(),
        "sources[0].paht",
        "did you mean 'path'",
    ),
    _case(
        "cohort.yaml: unknown source type",
        _text(
            "cohort.yaml",
            _COHORT.replace("sources: []", "sources: [{name: a, type: dicm, path: x}]"),
        ),
        _build(),
        "sources[0].type",
        "did you mean 'dicom'",
    ),
    _case(
        "cohort.yaml: no index",
        _text("cohort.yaml", "outcome: {binary: {column: outcome}}\n"),
        _build(),
        "cohort.yaml",
        "index",
    ),
    _case(
        "cohort.yaml: negative lookback",
        _text("cohort.yaml", _COHORT + "lookback_days: -30\n"),
        _build(),
        "lookback_days",
    ),
    _case(
        "cohort.yaml: a source path with spaces and accents that does not exist",
        _text(
            "cohort.yaml",
            _COHORT.replace(
                "sources: []", "sources: [{name: a, type: table, path: 'données c/x.csv'}]"
            ),
        ),
        _build(),
        "données c/x.csv",
        "not found",
    ),
    _case(
        "cohort.yaml: two sources with one name",
        _text(
            "cohort.yaml",
            _COHORT.replace(
                "sources: []",
                "sources: [{name: a, type: table, path: x.csv},"
                " {name: a, type: table, path: y.csv}]",
            ),
        ),
        _build(),
        "name 'a' is used twice",
    ),
    _case(
        "index: ambiguous day/month date",
        _index("patient_id,index_date,outcome\nP1,01/03/2020,0\n"),
        _build(),
        "index.csv line 2",
        "'01/03/2020' is ambiguous",
    ),
    _case(
        "index: duplicated patient id",
        _index("patient_id,index_date,outcome\nP1,2020-01-01,0\nP1,2020-02-01,1\n"),
        _build(),
        "index.csv line 3",
        "'P1' appears more than once",
    ),
    _case(
        "index: a row with one field too many",
        _index("patient_id,index_date,outcome\nP1,2020-01-01,0\nP2,2020-01-01,1,9\n"),
        _build(),
        "index.csv line 3",
        "4 fields",
    ),
    _case(
        "index: outcome neither 0 nor 1",
        _index("patient_id,index_date,outcome\nP1,2020-01-01,0\nP2,2020-01-01,2\n"),
        _build(),
        "index.csv line 3",
        "outcome '2' is out of range",
    ),
    _case(
        "index: duplicated column",
        _index("patient_id,index_date,outcome,outcome\nP1,2020-01-01,0,1\n"),
        _build(),
        "index.csv",
        "'outcome' appears 2 times",
    ),
    _case(
        "study.yaml: not YAML",
        _study("name: s\ncohort: cohort.yaml\nmodels: [\n"),
        _run(),
        "study.yaml",
        "not valid YAML",
    ),
    _case(
        "study.yaml: misspelt key",
        _study("name: s\ncohort: cohort.yaml\nvalidaton: {folds: 3}\n"),
        _run(),
        "validaton",
        "did you mean 'validation'",
    ),
    _case(
        "study.yaml: the cohort file does not exist",
        _study("name: s\ncohort: nowhere/cohort.yaml\n"),
        _run(),
        "nowhere/cohort.yaml",
    ),
]
