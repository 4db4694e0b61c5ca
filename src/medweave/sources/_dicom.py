"""DICOM files: finding them, checking headers at the door, ordering a series.

Messages name the file and the tag keyword, never a header value: values can identify a
patient. pydicom's own warnings (which may quote values) are silenced while reading.
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from medweave.errors import InputError

__all__ = [
    "DicomFile",
    "FileProblem",
    "describe_error",
    "find_dicom_files",
    "float_tag",
    "parse_da",
    "quiet_pydicom",
    "read_dataset",
    "read_header",
    "slice_normal",
    "slice_order",
]

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima"})
DATE_TAGS = ("StudyDate", "SeriesDate", "AcquisitionDate")
_DEFER = 1024  # values longer than this are not read during the header scan
_UNDEFINED = 0xFFFFFFFF
_PIXEL_TAGS = (Tag(0x7FE0, 0x0010), Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009))
_ITEM, _SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)


class FileProblem(InputError):
    """A file that cannot be used; ``reason`` is how the audit counts it under on_error=skip."""

    def __init__(self, path: Path, what: str, *, reason: str = "unreadable") -> None:
        super().__init__(f"{path}: {what}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class DicomFile:
    """What the reader needs from one file's header (kept in memory only, never stored)."""

    path: Path
    patient_id: str
    study_uid: str
    series_uid: str
    series_number: int
    instance_number: int
    modality: str
    date_tag: str | None
    date_value: str | None
    rows: int
    columns: int
    frames: int
    samples: int
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    compressed: bool


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log records (they can quote header values)."""
    logger = logging.getLogger("pydicom")
    was_disabled = logger.disabled
    logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = was_disabled


def _has_dicm(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def find_dicom_files(root: Path) -> list[Path]:
    """``root`` itself if a file; else the DICOM files below it, recursively, sorted.

    A file named ``*.dcm``, ``*.dicom`` or ``*.ima`` must be DICOM (it is read and fails
    loudly if not); any other file is taken if it carries the DICM marker. Hidden files
    and folders and DICOMDIR index files are skipped. Symbolic links to folders are
    followed (image archives are often assembled from links); a folder or file reached
    twice (a link back up the tree, or two links to one place) is read once, by its real
    path.
    """
    if root.is_file():
        return [root]
    out: list[Path] = []
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a cycle, or a second link to a folder already read
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and os.path.realpath(os.path.join(dirpath, d)) not in seen_dirs
        )
        for name in sorted(filenames):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            p = Path(dirpath) / name
            if p.suffix.lower() in DICOM_SUFFIXES or _has_dicm(p):
                real_file = os.path.realpath(p)
                if real_file not in seen_files:
                    seen_files.add(real_file)
                    out.append(p)
    return sorted(out)


def _keyword(tag: Any) -> str:
    kw = pydicom.datadict.keyword_for_tag(tag)
    return kw or str(Tag(tag))


def _fragments_complete(path: Path, start: int, size: int) -> bool:
    """Encapsulated pixel data: every item lies inside the file and the sequence ends."""
    with path.open("rb") as fh:
        pos = start
        while pos + 8 <= size:
            fh.seek(pos)
            group, element, length = struct.unpack("<HHL", fh.read(8))
            if (group, element) == _SEQ_END:
                return True
            if (group, element) != _ITEM or pos + 8 + length > size:
                return False
            pos += 8 + length
    return False


def _check_extent(ds: Dataset, path: Path, size: int) -> int | None:
    """Raise if an element runs past the end of the file; the pixel data length if defined."""
    meta = getattr(ds, "file_meta", None)
    deflated = meta is not None and meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    pixel_length: int | None = None
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or deflated:
            continue
        if raw.length == _UNDEFINED:
            deferred_pixels = tag in _PIXEL_TAGS and raw.value is None
            if deferred_pixels and not _fragments_complete(path, raw.value_tell, size):
                raise FileProblem(
                    path, f"file is truncated: tag {_keyword(tag)} (encapsulated) is incomplete"
                )
            continue
        if raw.value_tell + raw.length > size:
            raise FileProblem(
                path, f"file is truncated: tag {_keyword(tag)} ends past the end of the file"
            )
        if tag in _PIXEL_TAGS:
            pixel_length = int(raw.length)
    return pixel_length


def _get(ds: Dataset, keyword: str, path: Path) -> Any:
    try:
        return ds.get(keyword)
    except Exception:
        raise FileProblem(path, f"tag {keyword} cannot be read (invalid value)") from None


def _int(ds: Dataset, keyword: str, path: Path, default: int, *, lenient: bool = False) -> int:
    """An integer tag; ``lenient``: a malformed value counts as absent (an optional tag)."""
    try:
        value = _get(ds, keyword, path)
        if value is None or value == "":
            return default
        return int(value)
    except (TypeError, ValueError, FileProblem):
        if lenient:
            return default
        raise FileProblem(path, f"tag {keyword} is not an integer") from None


def float_tag(ds: Dataset, keyword: str, path: Path, n: int) -> tuple[float, ...] | None:
    value = _get(ds, keyword, path)
    if value is None or value == "":
        return None
    seq = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    try:
        out = tuple(float(v) for v in seq)
    except (TypeError, ValueError):
        raise FileProblem(path, f"tag {keyword} is not a list of numbers") from None
    if len(out) != n or not all(np.isfinite(out)):
        raise FileProblem(path, f"tag {keyword} needs {n} finite numbers")
    return out


def read_dataset(path: Path, *, header_only: bool = False) -> Dataset:
    """The whole file, or its header only; errors name the file, never a value."""
    return _read(path, stop_before_pixels=header_only)


def _read(path: Path, **kwargs: Any) -> Dataset:
    """dcmread with a retry for files without the DICM preamble, which must look like DICOM."""
    with quiet_pydicom():
        try:
            return pydicom.dcmread(path, **kwargs)
        except InvalidDicomError:
            pass
        except Exception as exc:
            raise FileProblem(path, f"cannot be parsed as DICOM ({type(exc).__name__})") from None
        try:
            ds = pydicom.dcmread(path, force=True, **kwargs)
            plausible = "SOPClassUID" in ds or ("Rows" in ds and any(t in ds for t in _PIXEL_TAGS))
        except Exception:
            plausible = False
        if not plausible:
            raise FileProblem(path, "not a DICOM file (no DICM marker and no DICOM header)")
        return ds


def read_header(path: Path) -> DicomFile | None:
    """Check one file at the door; None if it is DICOM but holds no image (SR, RT plan...)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FileProblem(path, f"cannot be opened ({type(exc).__name__})") from None
    if size == 0:
        raise FileProblem(path, "is empty (0 bytes); was it copied completely?")
    ds = _read(path, defer_size=_DEFER)
    with quiet_pydicom():
        pixel_length = _check_extent(ds, path, size)
        has_pixels = any(t in ds for t in _PIXEL_TAGS)
        if not has_pixels:
            _refuse_missing_pixels(ds, path)
            return None
        rows = _int(ds, "Rows", path, 0)
        columns = _int(ds, "Columns", path, 0)
        if rows <= 0 or columns <= 0:
            raise FileProblem(path, "tags Rows and Columns must be positive")
        frames = _int(ds, "NumberOfFrames", path, 1)
        samples = _int(ds, "SamplesPerPixel", path, 1)
        bits = _int(ds, "BitsAllocated", path, 0)
        if frames <= 0 or samples not in (1, 3) or bits not in (1, 8, 16, 32, 64):
            raise FileProblem(
                path, "tags NumberOfFrames, SamplesPerPixel or BitsAllocated are not valid"
            )
        meta = getattr(ds, "file_meta", None)
        syntax = UID(str(meta.get("TransferSyntaxUID", "")) if meta is not None else "")
        if syntax and syntax.is_compressed:
            _check_decoder(syntax, path)
        elif pixel_length is not None and Tag(0x7FE0, 0x0010) in ds:
            need = (rows * columns * frames * samples * bits + 7) // 8
            if pixel_length < need:
                raise FileProblem(
                    path,
                    f"tag PixelData holds {pixel_length} bytes but Rows x Columns x "
                    f"NumberOfFrames x SamplesPerPixel x BitsAllocated need {need}",
                )
        date_tag, date_value = None, None
        for tag in DATE_TAGS:
            value = _get(ds, tag, path)
            if value is not None and str(value).strip():
                date_tag, date_value = tag, str(value)
                break
        return DicomFile(
            path=path,
            patient_id=str(_get(ds, "PatientID", path) or "").strip(),
            study_uid=str(_get(ds, "StudyInstanceUID", path) or ""),
            series_uid=str(_get(ds, "SeriesInstanceUID", path) or ""),
            series_number=_int(ds, "SeriesNumber", path, 0, lenient=True),
            instance_number=_int(ds, "InstanceNumber", path, 0, lenient=True),
            modality=str(_get(ds, "Modality", path) or "").strip().upper(),
            date_tag=date_tag,
            date_value=date_value,
            rows=rows,
            columns=columns,
            frames=frames,
            samples=samples,
            position=float_tag(ds, "ImagePositionPatient", path, 3),
            orientation=float_tag(ds, "ImageOrientationPatient", path, 6),
            compressed=bool(syntax and syntax.is_compressed),
        )


def _sop_class(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    for value in (ds.get("SOPClassUID"), meta.get("MediaStorageSOPClassUID") if meta else None):
        if value:
            return UID(str(value))
    return None


def _refuse_missing_pixels(ds: Dataset, path: Path) -> None:
    """A file without pixel data: fine if it is a non-image object (SR, RT plan...), an
    error if it should hold an image (a file cut short after its header).

    An image is told by its SOP class (a UID whose name holds "Image Storage"), or by
    tags only images carry (Rows, ImageType). A file holding its file meta header and no
    data set at all is cut short too, whatever its SOP class.
    """
    if len(ds) == 0:
        raise FileProblem(
            path,
            "holds only its file meta header, no data set (is the file truncated?)",
        )
    sop = _sop_class(ds)
    if "Rows" in ds:
        why = "tag Rows is there"
    elif sop is not None and "Image Storage" in sop.name:
        why = f"SOPClassUID is {sop.name}"
    elif "ImageType" in ds:
        why = "tag ImageType is there"
    else:
        return
    raise FileProblem(
        path,
        f"tag PixelData is missing but the file is an image ({why}): is the file truncated "
        "after its header?",
    )


def describe_error(exc: Exception) -> str:
    """A decoder's complaint on one line (about the pixel encoding, never the patient)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _check_decoder(syntax: UID, path: Path) -> None:
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise FileProblem(
            path,
            f"tag PixelData is compressed as {syntax.name} and no installed decoder reads "
            "it; install pylibjpeg with its plugins or python-gdcm",
        )


def parse_da(value: str, *, path: Path, keyword: str) -> np.datetime64:
    """A DICOM date (YYYYMMDD, or the old YYYY.MM.DD) as datetime64[D]; the value is not quoted."""
    s = value.strip()
    if len(s) == 10 and s[4] == "." and s[7] == ".":
        s = s.replace(".", "")
    try:
        if len(s) != 8 or not s.isdigit():
            raise ValueError(s)
        return np.datetime64(date(int(s[:4]), int(s[4:6]), int(s[6:])), "D")
    except ValueError:
        raise FileProblem(
            path, f"tag {keyword} is not a DICOM date (YYYYMMDD)", reason="bad_date"
        ) from None


def slice_normal(orientation: tuple[float, ...]) -> np.ndarray:
    o = np.asarray(orientation, dtype=np.float64)
    return np.cross(o[:3], o[3:])


def slice_order(files: list[DicomFile]) -> tuple[list[DicomFile], float | None]:
    """Files of one series in slice order, and the slice spacing in mm (None if unknown).

    Sorted by ImagePositionPatient along the slice normal when every file has a position
    and all share ImageOrientationPatient; otherwise by InstanceNumber.
    """
    if len(files) == 1:
        return list(files), None
    first = files[0]
    for f in files[1:]:
        if (f.rows, f.columns, f.samples) != (first.rows, first.columns, first.samples):
            raise FileProblem(
                f.path,
                f"tags Rows, Columns or SamplesPerPixel differ from {first.path.name} in the "
                "same series; the slices cannot be stacked",
            )
    multi = any(f.frames > 1 for f in files)
    geometric = (
        not multi
        and all(f.position is not None and f.orientation is not None for f in files)
        and all(np.allclose(f.orientation, first.orientation, atol=1e-4) for f in files)  # type: ignore[arg-type]
    )
    if geometric:
        assert first.orientation is not None
        normal = slice_normal(first.orientation)
        dist = np.array([np.dot(f.position, normal) for f in files])  # type: ignore[arg-type]
        order = np.lexsort((np.array([f.instance_number for f in files]), dist))
        steps = np.diff(dist[order])
        if np.any(np.abs(steps) < 1e-4):
            dup = files[int(order[int(np.argmin(np.abs(steps))) + 1])]
            raise FileProblem(
                dup.path,
                "tag ImagePositionPatient repeats another slice of the same series (a 4-D or "
                "multi-echo series); split it into one series per volume",
            )
        step = float(np.median(steps))
        worst = int(np.argmax(np.abs(steps - step)))
        if abs(steps[worst] - step) > 0.2 * step:
            raise FileProblem(
                files[int(order[worst + 1])].path,
                "tag ImagePositionPatient leaves a gap or uneven step before this slice (a "
                "missing or unreadable slice?); the series cannot be stacked on a regular grid",
            )
        return [files[i] for i in order], step
    numbers = [f.instance_number for f in files]
    if len(set(numbers)) != len(numbers):
        dup = files[next(i for i, n in enumerate(numbers) if numbers.count(n) > 1)]
        raise FileProblem(
            dup.path,
            "tag InstanceNumber repeats within the series and ImagePositionPatient cannot "
            "order it; the slices cannot be stacked",
        )
    ordered = sorted(files, key=lambda f: f.instance_number)
    return ordered, None
