"""Value checks: what each source's fields may hold, declared next to its reader and
applied by one mechanism.

A reader declares its checks once, at import, as a :class:`ValueChecks` holding one
:class:`Rule` per field (a number in a range, a count, a value that must be present...).
:meth:`ValueChecks.apply` checks columns of raw values (text from a CSV, numbers from
Parquet or a database) and returns them as numbers; each value that breaks its rule is
either an :class:`InputError` naming the place (file and line, table and row, tag), the
field and the value (``on_error: raise``), or its row is left out and counted in the
audit under ``{field}:{problem}`` (``on_error: skip``). A rule of severity ``"warn"`` is
a judgement call (an all-zero sample): its rows are left out, counted and logged with a
warning whatever ``on_error`` says.

:data:`DECLARED` lists every reader's checks (``medweave list --checks`` and the README
show them; a test asserts that every registered reader declares some).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from medweave.cohort._audit import Audit
from medweave.errors import InputError
from medweave.sources._io import date_problems

__all__ = [
    "DECLARED",
    "PROBLEMS",
    "Problem",
    "Rule",
    "ValueChecks",
    "Violation",
    "parse_numbers",
]

log = logging.getLogger("medweave.sources")

Problem = Literal[
    "missing",
    "not_a_number",
    "non_finite",
    "not_integer",
    "out_of_range",
    "no_information",
    "not_a_date",
]
#: Each problem in words, for messages: "{field} {value!r} {words}".
PROBLEMS: dict[str, str] = {
    "missing": "is empty",
    "not_a_number": "is not a number",
    "non_finite": "is not finite (inf or NaN)",
    "not_integer": "is not a whole number",
    "out_of_range": "is out of range",
    "no_information": "holds no information (all values zero, equal or missing)",
    "not_a_date": "is not an ISO 8601 date",
}
_NAN_WORDS = frozenset({"nan", "+nan", "-nan"})


def parse_numbers(values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numbers from raw values (text or numeric), with what went wrong where.

    Returns ``(numbers, empty, text)``: float64 numbers (NaN where empty or not a
    number), a mask of empty values (None, NaN, blank text, the words ``nan``) and a mask
    of text that is not a number (``'6.1%'``, ``'1,5'``, ``'high'``). ``inf`` and
    ``-inf`` are numbers (not finite: a rule reports them).
    """
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))
    if pd.api.types.is_bool_dtype(series.dtype):
        series = series.astype(float)
    if pd.api.types.is_numeric_dtype(series.dtype):
        numbers = series.to_numpy(dtype=np.float64, na_value=np.nan)
        empty = np.isnan(numbers)
        return numbers, empty, np.zeros(len(numbers), dtype=bool)
    text = series.astype("string").str.strip()
    blank = text.isna() | (text == "") | text.str.lower().isin(_NAN_WORDS)
    numbers = pd.to_numeric(text.where(~blank), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    empty = blank.to_numpy(dtype=bool)
    bad_text = np.isnan(numbers) & ~empty
    return numbers, empty, bad_text


@dataclass(frozen=True)
class Rule:
    """What one field may hold.

    ``field`` names it in messages and audit reasons (``"*"``: any field without a rule of
    its own); ``expect`` says in words what a valid value is (``"a concentration >= 0"``).
    A value breaks the rule when it is empty and ``required``, text that is not a number,
    not finite (``finite``), not a whole number (``integer``), or outside ``[min, max]``.
    ``reason`` replaces ``{field}:{problem}`` as the audit reason (e.g.
    ``birth_after_index``). A ``date`` rule takes ISO 8601 dates (see
    :func:`~medweave.sources._io.date_problems`) instead of numbers.
    """

    field: str
    expect: str
    min: float | None = None
    max: float | None = None
    integer: bool = False
    required: bool = False
    finite: bool = True
    severity: Literal["error", "warn"] = "error"
    reason: str | None = None
    date: bool = False

    def problems(self, values: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(numbers, problem)`` per value: float64 (NaN where unusable; datetime64[ns],
        NaT where unusable, for a ``date`` rule) and the problem name, or ``""`` where the
        value is fine (an empty value is fine unless ``required``)."""
        if self.date:
            return self._date_problems(values)
        numbers, empty, text = parse_numbers(values)
        problem = np.full(len(numbers), "", dtype=object)
        with np.errstate(invalid="ignore"):
            inf = np.isinf(numbers)
            outside = np.zeros(len(numbers), dtype=bool)
            if self.min is not None:
                outside |= numbers < self.min
            if self.max is not None:
                outside |= numbers > self.max
            frac = ~np.isnan(numbers) & ~inf & (numbers != np.round(numbers))
        if self.integer:
            problem[frac] = "not_integer"
        problem[outside & ~inf] = "out_of_range"
        if self.finite:
            problem[inf] = "non_finite"
        elif self.min is not None or self.max is not None:
            problem[outside & inf] = "out_of_range"
        problem[text] = "not_a_number"
        if self.required:
            problem[empty] = "missing"
        bad = problem != ""
        numbers = np.where(bad, np.nan, numbers)
        return numbers, problem

    def _date_problems(self, values: Any) -> tuple[np.ndarray, np.ndarray]:
        series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))
        dates, words = date_problems(series.reset_index(drop=True))
        bad = (words != "").to_numpy(dtype=bool)
        problem = np.where(bad, "not_a_date", "").astype(object)
        if self.required:
            problem[dates.isna().to_numpy() & ~bad] = "missing"
        return dates.to_numpy(dtype="datetime64[ns]"), problem

    def describe(self, problem: str, value: Any) -> str:
        """What is wrong with ``value``, in words (a bad date says which form it has)."""
        if self.date and problem == "not_a_date":
            return str(date_problems(pd.Series([value], dtype=object))[1].iloc[0])
        return PROBLEMS.get(problem, problem)

    def audit_reason(self, problem: str, field: str = "") -> str:
        """``reason``, else ``{field}:{problem}`` (the column's own name when given)."""
        return self.reason or f"{field or self.field}:{problem}"

    def range_text(self) -> str:
        if self.min is not None and self.max is not None:
            return f"between {self.min:g} and {self.max:g}"
        if self.min is not None:
            return f">= {self.min:g}"
        if self.max is not None:
            return f"<= {self.max:g}"
        return "any finite number" if self.finite else "any number"


@dataclass(frozen=True)
class Violation:
    """One value that breaks a rule, where it is, and what it holds."""

    rule: Rule
    problem: str
    where: str  # "data.csv line 7", "table measurement row 12", "a.dcm tag PixelData"
    value: Any
    field: str = ""  # the actual field (a rule "*" covers many)

    def message(self, *, source: str, can_skip: bool = True) -> str:
        field = self.field or self.rule.field
        shown = "" if self.problem in ("missing", "no_information") else f" {_show(self.value)}"
        text = (
            f"{self.where}: {field}{shown} {self.rule.describe(self.problem, self.value)}; "
            f"expected {self.rule.expect}"
        )
        if can_skip:
            text += f"; fix it, or set on_error: skip in source {source!r} to leave such rows out"
        return text


def _show(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


class ValueChecks:
    """The value checks of one reader, by field; registered in :data:`DECLARED`."""

    def __init__(self, reader: str, rules: Iterable[Rule], *, declare: bool = True) -> None:
        self.reader = reader
        self.rules: dict[str, Rule] = {}
        for rule in rules:
            if rule.field in self.rules:
                raise ValueError(f"{reader}: two rules for field {rule.field!r}")
            self.rules[rule.field] = rule
        if declare:
            DECLARED.setdefault(reader, []).append(self)

    def declare_for(self, *readers: str) -> ValueChecks:
        """Declare these checks for other readers too (one event model, several formats)."""
        for reader in readers:
            DECLARED.setdefault(reader, []).append(self)
        return self

    def with_rules(self, rules: Iterable[Rule]) -> ValueChecks:
        """These checks with ``rules`` added or replacing those of the same field, for one
        read (a spec's own ranges); the copy is not declared again."""
        merged = {**self.rules, **{r.field: r for r in rules}}
        return ValueChecks(self.reader, merged.values(), declare=False)

    def rule(self, field: str) -> Rule:
        """The rule of ``field``, else the catch-all ``"*"`` rule."""
        if field in self.rules:
            return self.rules[field]
        if "*" in self.rules:
            return self.rules["*"]
        raise KeyError(f"{self.reader}: no value rule for field {field!r}")

    def apply(
        self,
        columns: Mapping[str, Any],
        *,
        source: str,
        on_error: Literal["raise", "skip"],
        audit: Audit,
        locate: Callable[[int], str],
        rules: Mapping[str, str] | None = None,
        active: np.ndarray | None = None,
        skippable: bool = True,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Check ``columns`` (field -> raw values, all of one length) row by row.

        ``rules`` maps a column to the field whose rule applies (default: its own name);
        ``locate(i)`` names row ``i`` in messages (``"data.csv line 7"``); only rows where
        ``active`` is true are checked (rows already left out for another reason). Returns
        the numbers per column (NaN where a value broke its rule) and the rows to keep;
        rows left out are counted in ``audit`` under ``source``. ``skippable=False``: the
        input has no ``on_error`` key (the index table), so the message does not offer it.
        """
        lengths = {len(v) for v in columns.values()}
        n = lengths.pop() if lengths else 0
        if lengths:
            raise ValueError("ValueChecks.apply: columns of different lengths")
        act = np.ones(n, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        keep = np.ones(n, dtype=bool)
        numbers: dict[str, np.ndarray] = {}
        found: list[tuple[int, Violation]] = []
        counts: dict[str, int] = {}
        for column, raw in columns.items():
            rule = self.rule((rules or {}).get(column, column))
            values, problem = rule.problems(raw)
            numbers[column] = values
            bad = (problem != "") & act
            if not bad.any():
                continue
            rows = np.flatnonzero(bad)
            first = int(rows[0])
            raw_values = raw.iloc if isinstance(raw, pd.Series) else np.asarray(raw, dtype=object)
            found.append(
                (
                    first,
                    Violation(rule, str(problem[first]), locate(first), raw_values[first], column),
                )
            )
            # A row is counted once, under the first of its columns that broke a rule.
            rows = rows[keep[rows]]
            keep[rows] = False
            for p in np.unique(problem[rows].astype(str)):
                reason = rule.audit_reason(p, column)
                counts[reason] = counts.get(reason, 0) + int((problem[rows] == p).sum())
        if found:
            found.sort(key=lambda t: t[0])
            errors = [v for _, v in found if v.rule.severity == "error"]
            if errors and on_error == "raise":
                raise InputError(errors[0].message(source=source, can_skip=skippable))
            for reason, count in sorted(counts.items()):
                audit.exclude_rows(source, reason, count)
            for _, v in found:
                if v.rule.severity == "warn":
                    log.warning(
                        "source %r: %s (left out and counted in the audit)",
                        source,
                        v.message(source=source, can_skip=False),
                    )
        return numbers, keep

    def report(
        self,
        violations: list[Violation],
        *,
        source: str,
        on_error: Literal["raise", "skip"],
        audit: Audit,
        counts: Mapping[str, int] | None = None,
    ) -> None:
        """Raise on the first error-severity violation (``on_error: raise``), else count
        them in the audit (``counts``: rows per audit reason, default one per violation).

        For checks that are not column by column (a sample's or an image's values as a
        whole), the reader finds the violations and hands them here.
        """
        if not violations:
            return
        errors = [v for v in violations if v.rule.severity == "error"]
        if errors and on_error == "raise":
            raise InputError(errors[0].message(source=source))
        tally: dict[str, int] = dict(counts or {})
        if counts is None:
            for v in violations:
                reason = v.rule.audit_reason(v.problem, v.field)
                tally[reason] = tally.get(reason, 0) + 1
        for reason, count in sorted(tally.items()):
            audit.exclude_rows(source, reason, count)
        for v in violations:
            if v.rule.severity == "warn":
                log.warning(
                    "source %r: %s (left out and counted in the audit)",
                    source,
                    v.message(source=source, can_skip=False),
                )


#: Reader name -> the checks it declares.
DECLARED: dict[str, list[ValueChecks]] = {}


def declared_rules() -> dict[str, list[Rule]]:
    """Every reader's rules (for ``medweave list`` and the README)."""
    return {k: [r for c in v for r in c.rules.values()] for k, v in sorted(DECLARED.items())}
