"""Write a folder or file atomically: build it under a temporary name, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medweave.errors import InputError

__all__ = ["atomic_dir", "atomic_file", "check_output_dir"]


def check_output_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse to replace a non-empty ``out`` unless ``overwrite`` is set."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, expected a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(
            f"--out {out} is not empty; pass --overwrite to replace it or choose another folder"
        )


@contextlib.contextmanager
def atomic_dir(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` by rename.

    On any error the temporary folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    check_output_dir(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old: Path | None = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
