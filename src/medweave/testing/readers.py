"""Conformance check for readers: every bad input ends in one clear line, or in an audited
exclusion, never in a traceback, exit code 1 or a silent change.

A corpus entry (:class:`BrokenInput`) writes one broken input into a folder that already
holds a small valid cohort (:func:`write_index`: six patients, ``P1`` … ``P6``, index date
:data:`INDEX_DATE`) and returns the ``cohort.yaml`` entry of the source that reads it.
:func:`check_broken_input` then runs ``medweave build`` on it as a user would (the CLI's
``main``, in this process):

* with ``on_error: raise``: exit code 2 and exactly one line on stderr, naming what the
  entry's ``names`` list (the file, and the row, tag or key);
* with ``on_error: skip``, when the entry gives a ``skip_reason``: exit code 0, and the
  reason counted in ``audit.json`` for that source (rows excluded, or patients missing).
  Entries whose problem cannot be skipped (a missing column named in the config, a file
  that cannot be parsed at all) give no ``skip_reason`` and must fail the same way under
  both settings;
* entries marked ``audited=True`` are not errors at all but must never pass silently
  (ids of patients outside the cohort, a judgement call such as an all-zero sample): both
  settings exit 0 with ``skip_reason`` counted in the audit.

Entries for a whole config rather than one source (bad YAML) give ``argv`` instead: the
command line to run, which must end the same way.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "INDEX_DATE",
    "INDEX_IDS",
    "SOURCE",
    "BrokenInput",
    "check_broken_input",
    "check_corpus",
    "run_cli",
    "write_cohort_yaml",
    "write_index",
]

#: The patients of the small valid cohort every entry starts from, and their index date.
INDEX_IDS: tuple[str, ...] = ("P1", "P2", "P3", "P4", "P5", "P6")
INDEX_DATE = "2020-06-30"
#: The name of the source under test in the written cohort.yaml.
SOURCE = "src"


@dataclass(frozen=True)
class BrokenInput:
    """One broken input of the corpus.

    ``write(folder)`` writes the broken file(s) into ``folder`` (which holds
    ``index.csv``) and returns the source's ``cohort.yaml`` entry without ``name`` and
    ``on_error`` (paths relative to ``folder``). ``names``: what the one-line error must
    contain (case-sensitive substrings). ``skip_reason``: the audit reason expected under
    ``on_error: skip`` (a substring of a key of the source's ``excluded`` rows or
    ``patients_missing``), or None when the input is an error under either setting.
    ``argv(folder)``, for inputs that are not one source: the command line to run instead.
    ``audited``: not an error under either setting, but counted under ``skip_reason``.
    """

    name: str
    reader: str
    write: Callable[[Path], dict[str, Any]]
    names: tuple[str, ...]
    skip_reason: str | None = None
    argv: Callable[[Path], list[str]] | None = None
    audited: bool = False

    def __post_init__(self) -> None:
        if self.audited and self.skip_reason is None:
            raise ValueError(f"broken input {self.name!r}: audited=True needs a skip_reason")


def write_index(folder: Path, *, ids: Iterable[str] = INDEX_IDS) -> Path:
    """``folder/index.csv``: patient_id, index_date, outcome (alternating 0/1)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["patient_id,index_date,outcome"]
    rows += [f"{pid},{INDEX_DATE},{i % 2}" for i, pid in enumerate(ids)]
    path = folder / "index.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def write_cohort_yaml(folder: Path, source: dict[str, Any], *, on_error: str = "raise") -> Path:
    """``folder/cohort.yaml`` over ``index.csv`` with ``source`` as its one source."""
    config = {
        "name": "broken-input",
        "lookback_days": 1095,
        "index": {"rule": "column", "table": "index.csv"},
        "outcome": {"binary": {"column": "outcome"}},
        "sources": [{"name": SOURCE, "on_error": on_error, **source}],
    }
    path = folder / "cohort.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run the medweave command line in this process: (exit code, stdout, stderr)."""
    from medweave.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
    return (
        (code if isinstance(code, int) else (0 if code is None else 1)),
        out.getvalue(),
        (err.getvalue()),
    )


def _fail(case: BrokenInput, what: str) -> None:
    raise AssertionError(f"broken input {case.name!r} ({case.reader}): {what}")


def _expect_error(case: BrokenInput, argv: list[str], setting: str) -> str:
    code, _, err = run_cli(argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code != 2:
        _fail(case, f"with {setting}: exit code {code}, expected 2; stderr: {err.strip()!r}")
    if "Traceback" in err or len(lines) != 1:
        _fail(case, f"with {setting}: expected one line on stderr, got {len(lines)}: {err!r}")
    for name in case.names:
        if name not in lines[0]:
            _fail(case, f"with {setting}: the message does not name {name!r}: {lines[0]!r}")
    return lines[0]


def check_broken_input(case: BrokenInput, folder: Path) -> str:
    """Run ``case`` in the empty folder ``folder``; raise AssertionError naming the broken
    expectation. Returns the error line of the ``on_error: raise`` run."""
    folder.mkdir(parents=True, exist_ok=True)
    write_index(folder)
    if case.argv is not None:
        case.write(folder)
        return _expect_error(case, case.argv(folder), "its command line")
    entry = case.write(folder)
    out = folder / "built"
    if case.audited:
        for setting in ("raise", "skip"):
            _expect_audited(case, folder, entry, setting, out)
        return ""
    config = write_cohort_yaml(folder, entry, on_error="raise")
    message = _expect_error(case, ["build", str(config), "--out", str(out)], "on_error: raise")
    if out.exists():
        _fail(case, f"a failed build left {out} behind")
    if case.skip_reason is None:
        config = write_cohort_yaml(folder, entry, on_error="skip")
        _expect_error(case, ["build", str(config), "--out", str(out)], "on_error: skip")
        return message
    _expect_audited(case, folder, entry, "skip", out)
    return message


def _expect_audited(
    case: BrokenInput, folder: Path, entry: dict[str, Any], setting: str, out: Path
) -> None:
    config = write_cohort_yaml(folder, entry, on_error=setting)
    code, _, err = run_cli(["build", str(config), "--out", str(out), "--overwrite"])
    if code != 0:
        _fail(case, f"with on_error: {setting}: exit code {code}, expected 0; stderr: {err!r}")
    audit = json.loads((out / "audit.json").read_text())
    src = audit["sources"].get(SOURCE, {})
    reasons = [*src.get("excluded", {}), *src.get("patients_missing", {})]
    if not any(str(case.skip_reason) in r for r in reasons):
        _fail(
            case,
            f"with on_error: {setting}: no audit reason containing {case.skip_reason!r} for "
            f"source {SOURCE!r} (reasons: {reasons})",
        )


def check_corpus(
    cases: Iterable[BrokenInput], *, readers: Iterable[str], at_least: int = 50
) -> None:
    """The corpus has ``at_least`` entries, unique names, and some for every reader."""
    cases = list(cases)
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise AssertionError(f"corpus: entry name {dup!r} is used twice")
    if len(cases) < at_least:
        raise AssertionError(f"corpus: {len(cases)} entries, expected at least {at_least}")
    covered = {c.reader for c in cases}
    missing = sorted(set(readers) - covered)
    if missing:
        raise AssertionError(f"corpus: no broken input for the reader(s) {', '.join(missing)}")
