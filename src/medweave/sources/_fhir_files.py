"""FHIR files as resources: NDJSON lines and Bundle entries, plain or gzip.

Used by the ``fhir`` reader (:mod:`medweave.sources.fhir`). :class:`FileReader` walks one
file and hands each resource with its place (NDJSON line number, or ``"entry 3"``) to
:meth:`FileReader.add`; what cannot be read goes to :meth:`FileReader.report` with an audit
reason, so that ``on_error`` decides whether it is an error or an audited exclusion:

* ``invalid_json``: an NDJSON line that is not JSON (or not UTF-8 text); the other lines
  are read;
* ``not_a_resource``: a line, Bundle entry or file whose JSON is not an object with a
  ``resourceType``;
* ``empty_bundle``: a Bundle with no ``entry`` (or whose ``entry`` is not a list);
* ``unreadable_file``: a file that cannot be read whole (a Bundle cut short, corrupt
  gzip data, not UTF-8 text); it is left out whole: nothing of it is used.
"""

from __future__ import annotations

import gzip
import json
import zlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medweave.errors import InputError

__all__ = ["SUFFIXES", "FileReader", "fhir_files"]

SUFFIXES = (".ndjson", ".json", ".ndjson.gz", ".json.gz")
_DECODER = json.JSONDecoder()


def fhir_files(path: Path) -> list[Path]:
    """The FHIR files at ``path``: the file itself, or a folder's .ndjson / .json files."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(
            f"{path}: FHIR path not found; give a folder of .ndjson/.json files or one file"
        )
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.name.lower().endswith(SUFFIXES) and not p.name.startswith(".")
    )
    if not files:
        raise InputError(
            f"{path}: no FHIR files (.ndjson or Bundle .json, optionally .gz) in this folder"
        )
    return files


class FileReader(ABC):
    """Reads FHIR files resource by resource; subclasses parse the resources."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.excluded: Counter[str] = Counter()

    # -- what subclasses provide ------------------------------------------------------

    @abstractmethod
    def add(self, res: dict[str, Any], fi: int, pos: int | str, *, url: str | None = None) -> None:
        """Parse one resource of file ``fi`` at ``pos``; ``url``: its entry's fullUrl."""

    @abstractmethod
    def report(self, where: str, text: str, *, field: str, reason: str, what: str) -> None:
        """A problem at ``where``: raise (``text`` is the message's start) or count it
        under ``reason``; ``field`` names the value check, ``what`` the things skipped."""

    # -- files ------------------------------------------------------------------------

    def where_text(self, fi: int, pos: int | str) -> str:
        return f"{self.files[fi]} line {pos}" if isinstance(pos, int) else f"{self.files[fi]} {pos}"

    def _unreadable(self, where: str, text: str) -> None:
        self.report(where, f"{where}: {text}", field="file", reason="unreadable_file", what="files")

    def read_file(self, path: Path) -> None:
        """Every resource of ``path`` (.ndjson or .json, optionally .gz)."""
        self.files.append(path)
        fi = len(self.files) - 1
        name = path.name.lower()
        gz = name.endswith(".gz")
        if gz and not self._gzip_whole(path):
            return
        try:
            with gzip.open(path, "rb") if gz else path.open("rb") as fh:
                if name.endswith((".ndjson", ".ndjson.gz")):
                    self._read_lines(fh, fi)
                    return
                raw = fh.read()
        except OSError as exc:
            self._unreadable(str(path), f"cannot read the file ({exc})")
            return
        self._read_json(raw, fi)

    def _gzip_whole(self, path: Path) -> bool:
        """Whether the gzip data of ``path`` decompresses to its end (checked before any
        resource is used, so that a corrupt file is left out whole)."""
        lines = 0
        try:
            with gzip.open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    lines += chunk.count(b"\n")
        except (OSError, EOFError, zlib.error) as exc:
            self._unreadable(
                f"{path} line {lines + 1}",
                f"cannot read the file: its gzip data is corrupt or cut short ({exc})",
            )
            return False
        return True

    def _read_json(self, raw: bytes, fi: int) -> None:
        path = self.files[fi]
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            self._unreadable(f"{path} line {line}", f"not UTF-8 text ({exc.reason})")
            return
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data" and text.lstrip().startswith("{"):
                # NDJSON saved as .json: one resource per line.
                self._read_lines(text.splitlines(), fi)
                return
            # An unterminated string runs to the end of the text: cut short as well.
            ends = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
            cut = " (the text ends too early: was the file cut short?)" if ends else ""
            self._unreadable(
                f"{path} line {exc.lineno} column {exc.colno}",
                f"not valid JSON ({exc.msg.removesuffix(' starting at')}){cut}",
            )
            return
        if not isinstance(doc, dict):
            where = str(path)
            self.report(
                where,
                f"{where}: holds a JSON {type(doc).__name__}, not a Bundle or a resource",
                field="resourceType",
                reason="not_a_resource",
                what="files",
            )
            return
        if doc.get("resourceType") == "Bundle":
            self._read_bundle(doc, fi, "")
        else:
            self.add(doc, fi, "resource")

    def _read_lines(self, lines: Iterable[bytes | str], fi: int) -> None:
        decode = _DECODER.decode
        for no, line in enumerate(lines, start=1):
            try:
                text = line.decode("utf-8") if isinstance(line, bytes) else line
            except UnicodeDecodeError as exc:
                self._bad_line(fi, no, f"not UTF-8 text ({exc.reason} at byte {exc.start + 1})")
                continue
            text = text.rstrip("\r\n")
            if no == 1:
                text = text.removeprefix("\ufeff")
            if not text or text.isspace():
                continue
            try:
                res = decode(text)
            except json.JSONDecodeError as exc:
                msg = exc.msg.removesuffix(" starting at")
                self._bad_line(fi, no, f"not valid JSON ({msg} at column {exc.colno})")
                continue
            if not isinstance(res, dict):
                where = self.where_text(fi, no)
                self.report(
                    where,
                    f"{where}: holds a JSON {type(res).__name__}, not a resource",
                    field="resourceType",
                    reason="not_a_resource",
                    what="lines",
                )
            elif res.get("resourceType") == "Bundle":
                self._read_bundle(res, fi, f"line {no} ")
            else:
                self.add(res, fi, no)

    def _bad_line(self, fi: int, no: int, text: str) -> None:
        where = self.where_text(fi, no)
        self.report(
            where,
            f"{where}: {text}",
            field="json",
            reason="invalid_json",
            what="lines",
        )

    def _read_bundle(self, bundle: dict[str, Any], fi: int, prefix: str) -> None:
        entries = bundle.get("entry")
        if not isinstance(entries, list) or not entries:
            where = f"{self.files[fi]} {prefix}Bundle.entry"
            has = "is not a list" if entries is not None else "is missing"
            self.report(
                where,
                f"{where}: {has}, so the Bundle holds no resources",
                field="Bundle.entry",
                reason="empty_bundle",
                what="Bundles",
            )
            return
        for i, entry in enumerate(entries):
            where = f"{prefix}entry {i}"
            if not isinstance(entry, dict):
                self._not_resource(fi, where, f"is a JSON {type(entry).__name__}, not an entry")
                continue
            res = entry.get("resource")
            if res is None:
                self.excluded["entry_without_resource"] += 1
                continue
            if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
                self._not_resource(fi, where, "holds a resource without a resourceType")
                continue
            if res["resourceType"] == "Bundle":
                self._read_bundle(res, fi, f"{where} > ")
                continue
            url = entry.get("fullUrl")
            self.add(res, fi, where, url=url if isinstance(url, str) else None)

    def _not_resource(self, fi: int, pos: int | str, text: str) -> None:
        where = self.where_text(fi, pos)
        self.report(
            where, f"{where}: {text}", field="resourceType", reason="not_a_resource", what="entries"
        )
