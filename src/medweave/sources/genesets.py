"""Gene set files: GMT, MSigDB's format, one set per line.

Each line is ``name<TAB>description<TAB>gene1<TAB>gene2...``; the description may be empty
(or a URL) and is not kept. Blank lines are skipped. A malformed line is an
:class:`InputError` naming the file and the line.
"""

from __future__ import annotations

import os
from pathlib import Path

from medweave.errors import InputError

__all__ = ["read_gmt"]


def read_gmt(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Gene sets in the GMT file ``path``: set name -> gene ids, in file order (a gene listed
    twice in a set is kept once)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"gene sets: file {p} not found; give the path of a GMT file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{p}: not a text GMT file (byte {exc.start} is not UTF-8); "
            "save it as UTF-8 text, one tab-separated gene set per line"
        ) from None
    sets: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 3:
            raise InputError(
                f"{p}, line {number}: {len(fields)} tab-separated field(s), expected "
                "name<TAB>description<TAB>gene1<TAB>gene2... (fields are separated by tabs, "
                "not spaces)"
            )
        name, genes = fields[0], [g for g in fields[2:] if g]
        if not name:
            raise InputError(f"{p}, line {number}: the gene set name (first field) is empty")
        if not genes:
            raise InputError(f"{p}, line {number}: gene set {name!r} lists no genes")
        if name in sets:
            raise InputError(
                f"{p}, line {number}: gene set {name!r} is already defined on line "
                f"{first_line[name]}; gene set names must be unique"
            )
        sets[name] = list(dict.fromkeys(genes))
        first_line[name] = number
    if not sets:
        raise InputError(f"{p}: no gene sets; a GMT file has one set per line")
    return sets
