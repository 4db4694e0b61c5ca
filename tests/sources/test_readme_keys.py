"""The README's table of source keys names every key each reader accepts."""

from __future__ import annotations

import re
from pathlib import Path

from medweave.sources import available, get

README = Path(__file__).resolve().parents[2] / "README.md"


def _rows() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| source type | keys |") :].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        types, keys = line.strip("|").split("|", 1)
        for name in re.findall(r"`([a-z0-9_]+)`", types):
            rows[name] = keys
    return rows


def test_every_source_key_is_in_the_readme() -> None:
    rows = _rows()
    for name in available():
        assert name in rows, f"README: no row for source type {name!r}"
        _, spec = get(name)
        for key, field in spec.model_fields.items():
            shown = field.alias or key
            if shown in ("name", "type", "on_error"):
                continue
            assert f"`{shown}" in rows[name], f"README: source type {name!r} lacks key {shown!r}"
