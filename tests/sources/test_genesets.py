"""GMT gene set files: MSigDB's layout read, malformed lines named by file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from medweave.errors import InputError
from medweave.sources.genesets import read_gmt


def test_reads_msigdb_layout(tmp_path: Path) -> None:
    path = tmp_path / "h.all.gmt"
    path.write_text(
        "HALLMARK_HYPOXIA\thttp://www.gsea-msigdb.org/gsea/msigdb/HALLMARK_HYPOXIA\tADM\tADORA2B\tAK4\n"
        "\n"
        "HALLMARK_APOPTOSIS\t\tCASP3\tCASP8\tCASP3\t\r\n"  # empty description, repeat, CRLF
        "ONE_GENE\tna\tTP53\n"
    )
    assert read_gmt(path) == {
        "HALLMARK_HYPOXIA": ["ADM", "ADORA2B", "AK4"],
        "HALLMARK_APOPTOSIS": ["CASP3", "CASP8"],
        "ONE_GENE": ["TP53"],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A\tdesc\tg1\nB desc g2 g3\n", r"sets\.gmt, line 2: 1 tab-separated field\(s\)"),
        ("A\tdesc\n", r"sets\.gmt, line 1: 2 tab-separated field\(s\), expected name<TAB>"),
        ("A\tdesc\tg1\n\tdesc\tg2\n", r"sets\.gmt, line 2: the gene set name .* is empty"),
        ("A\tdesc\t\t\n", r"sets\.gmt, line 1: gene set 'A' lists no genes"),
        ("A\td\tg1\nB\td\tg2\nA\td\tg3\n", r"line 3: gene set 'A' is already defined on line 1"),
        ("\n\n", r"sets\.gmt: no gene sets"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sets.gmt"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_gmt(path)


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"file .*nope\.gmt not found"):
        read_gmt(tmp_path / "nope.gmt")
    binary = tmp_path / "sets.gmt"
    binary.write_bytes(b"A\td\t\xff\xfe\n")
    with pytest.raises(InputError, match=r"sets\.gmt: not a text GMT file \(byte 4"):
        read_gmt(binary)
