"""The shared value-check mechanism (sources/_checks.py) and every reader's declaration."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from medweave.cohort._audit import Audit
from medweave.errors import InputError
from medweave.sources import available
from medweave.sources._checks import DECLARED, Rule, ValueChecks, Violation, parse_numbers


@pytest.fixture
def checks() -> ValueChecks:
    checks = ValueChecks(
        "test-reader",
        [
            Rule("age", "years between 0 and 125", min=0, max=125),
            Rule("count", "a whole number >= 0", min=0, integer=True, required=True),
            Rule("*", "any finite number"),
        ],
    )
    yield checks
    DECLARED.pop("test-reader")


def _where(i: int) -> str:
    return f"data.csv line {i + 2}"


def test_parse_numbers_tells_empty_from_text() -> None:
    numbers, empty, text = parse_numbers(pd.Series(["1.5", "", None, "nan", "6.1%", "1,5", "inf"]))
    assert numbers[0] == 1.5 and np.isinf(numbers[6])
    assert empty.tolist() == [False, True, True, True, False, False, False]
    assert text.tolist() == [False, False, False, False, True, True, False]


def test_rule_names_each_problem() -> None:
    rule = Rule("n", "a count", min=0, integer=True, required=True)
    values, problem = rule.problems(pd.Series(["3", "-1", "2.5", "x", "", "inf"]))
    assert problem.tolist() == [
        "",
        "out_of_range",
        "not_integer",
        "not_a_number",
        "missing",
        "non_finite",
    ]
    assert values[0] == 3 and np.isnan(values[1:]).all()


def test_numeric_input_is_checked_too() -> None:
    _, problem = Rule("x", "x >= 0", min=0).problems(np.array([1.0, -2.0, np.nan, np.inf]))
    assert problem.tolist() == ["", "out_of_range", "", "non_finite"]


def test_raise_names_place_field_value_and_fix(checks: ValueChecks) -> None:
    frame = pd.DataFrame({"age": ["40", "-3"], "count": ["1", "2"]})
    with pytest.raises(InputError) as err:
        checks.apply(
            dict(frame.items()), source="s", on_error="raise", audit=Audit(), locate=_where
        )
    message = str(err.value)
    assert message.startswith("data.csv line 3: age '-3' is out of range; expected years")
    assert "on_error: skip in source 's'" in message and "\n" not in message


def test_first_violation_in_row_order_is_reported(checks: ValueChecks) -> None:
    cols = {"age": ["1", "2", "x"], "count": ["1", "", "1"]}
    with pytest.raises(InputError, match="line 3: count is empty"):
        checks.apply(cols, source="s", on_error="raise", audit=Audit(), locate=_where)


def test_skip_drops_rows_and_counts_reasons(checks: ValueChecks) -> None:
    audit = Audit()
    cols = {"age": ["40", "-3", "200", "50"], "count": ["1", "2", "3", "x"], "crp": ["1"] * 4}
    numbers, keep = checks.apply(cols, source="s", on_error="skip", audit=audit, locate=_where)
    assert keep.tolist() == [True, False, False, False]
    assert dict(audit.source("s").excluded) == {
        "age:out_of_range": 2,
        "count:not_a_number": 1,
    }
    assert numbers["age"][0] == 40 and np.isnan(numbers["age"][1])


def test_a_row_is_counted_once_under_its_first_broken_column(checks: ValueChecks) -> None:
    audit = Audit()
    cols = {"age": ["-1", "1"], "count": ["x", "y"]}
    _, keep = checks.apply(cols, source="s", on_error="skip", audit=audit, locate=_where)
    assert not keep.any()
    assert dict(audit.source("s").excluded) == {"age:out_of_range": 1, "count:not_a_number": 1}


def test_with_rules_overrides_for_one_read_without_declaring(checks: ValueChecks) -> None:
    wider = checks.with_rules([Rule("age", "years between 0 and 200", min=0, max=200)])
    _, keep = wider.apply(
        {"age": ["150"]}, source="s", on_error="raise", audit=Audit(), locate=_where
    )
    assert keep.all() and checks.rule("age").max == 125
    assert DECLARED["test-reader"] == [checks]


def test_inactive_rows_are_not_checked(checks: ValueChecks) -> None:
    audit = Audit()
    _, keep = checks.apply(
        {"age": ["-1", "3"]},
        source="s",
        on_error="raise",
        audit=audit,
        locate=_where,
        active=np.array([False, True]),
    )
    assert keep.tolist() == [True, True] and not audit.source("s").excluded


def test_catch_all_rule_and_column_to_field_mapping(checks: ValueChecks) -> None:
    audit = Audit()
    _, keep = checks.apply(
        {"pm25": ["1", "inf"], "years": ["130", "1"]},
        source="s",
        on_error="skip",
        audit=audit,
        locate=_where,
        rules={"years": "age"},
    )
    assert keep.tolist() == [False, False]
    assert dict(audit.source("s").excluded) == {"pm25:non_finite": 1, "years:out_of_range": 1}


def test_warn_severity_is_excluded_and_logged_even_under_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    checks = ValueChecks(
        "test-warn", [Rule("sample", "some signal", severity="warn", reason="no_information")]
    )
    try:
        audit = Audit()
        violation = Violation(checks.rule("sample"), "no_information", "x.h5ad sample 'P1'", 0)
        with caplog.at_level(logging.WARNING, logger="medweave.sources"):
            checks.report([violation], source="s", on_error="raise", audit=audit)
        assert dict(audit.source("s").excluded) == {"no_information": 1}
        assert "x.h5ad sample 'P1': sample holds no information" in caplog.text
    finally:
        DECLARED.pop("test-warn")


def test_date_rules_parse_iso_and_say_what_a_bad_date_looks_like() -> None:
    rule = Rule("when", "an ISO date", required=True, date=True)
    dates, problem = rule.problems(pd.Series(["2020-01-31", "", "01/03/2020", "2020-02-30"]))
    assert problem.tolist() == ["", "missing", "not_a_date", "not_a_date"]
    assert str(dates[0])[:10] == "2020-01-31" and np.isnat(dates[1:]).all()
    checks = ValueChecks("test-dates", [rule], declare=False)
    with pytest.raises(InputError, match=r"line 4: when '01/03/2020' is ambiguous: day/month"):
        checks.apply(
            {"when": ["2020-01-31", "2020-02-01", "01/03/2020"]},
            source="s",
            on_error="raise",
            audit=Audit(),
            locate=_where,
        )


def test_two_rules_for_one_field_are_refused() -> None:
    with pytest.raises(ValueError, match="two rules for field 'a'"):
        ValueChecks("test-dup", [Rule("a", "x"), Rule("a", "y")])
    DECLARED.pop("test-dup", None)


def test_every_registered_reader_declares_value_checks() -> None:
    missing = sorted(set(available()) - set(DECLARED))
    assert not missing, f"readers without declared value checks: {missing}"
