"""The error contract of every reader, on a corpus of broken inputs (tests/sources/broken)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medweave.sources import available
from medweave.testing.readers import BrokenInput, check_broken_input, check_corpus
from tests.sources.broken import CASES


def test_corpus_covers_every_reader() -> None:
    check_corpus(CASES, readers=available(), at_least=50)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broken_input(case: BrokenInput, tmp_path: Path) -> None:
    check_broken_input(case, tmp_path / "case")
