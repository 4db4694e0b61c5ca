"""DICOM pixel values: frame geometry, rescale and LUTs, stacking a series into a volume.

Messages name the file and the tag keyword, never a header value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medweave.sources._dicom import (
    FileProblem,
    describe_error,
    float_tag,
    quiet_pydicom,
    read_dataset,
    read_header,
    slice_normal,
    slice_order,
)
from medweave.sources._studies import ValueSummary

__all__ = ["RawImage", "frame_geometry", "pixel_spacing", "read_dicom", "tally_pixels"]


@dataclass(frozen=True)
class RawImage:
    """Pixel values before any transform: spatial axes first, channels last if ``channels``."""

    array: np.ndarray
    spacing: tuple[float, ...] | None  # per spatial axis, in mm; None if not known
    channels: bool
    affine: np.ndarray | None = None  # NIfTI only: voxel to world
    window: tuple[float, float] | None = None  # DICOM (low, high) from WindowCenter/Width


def _functional(ds: Dataset, group: str, item: str, frame: int | None) -> Any:
    """A value from the shared or (if ``frame`` is given) per-frame functional groups."""
    seqs = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if frame < len(per_frame):
            seqs.append(per_frame[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        seqs.append(ds.SharedFunctionalGroupsSequence[0])
    for fg in seqs:
        inner = fg.get(group)
        if inner is not None and len(inner) and item in inner[0]:
            return inner[0].get(item)
    return None


def pixel_spacing(ds: Dataset, path: Path) -> tuple[float, float] | None:
    """In-plane spacing (between rows, between columns) in mm, if the header has it."""
    with quiet_pydicom():
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            value = float_tag(ds, keyword, path, 2)
            if value is not None:
                return (value[0], value[1])
        try:
            value = _functional(ds, "PixelMeasuresSequence", "PixelSpacing", 0)
            return (float(value[0]), float(value[1])) if value is not None else None
        except (TypeError, ValueError, IndexError):
            raise FileProblem(path, "tag PixelSpacing (functional groups) is not valid") from None


def frame_geometry(ds: Dataset, path: Path, frames: int) -> tuple[np.ndarray, float | None]:
    """A multi-frame file: frame order along the slice normal and the slice spacing."""
    order = np.arange(frames)
    try:
        with quiet_pydicom():
            dist: np.ndarray | None = None
            normal = None
            orient = _functional(ds, "PlaneOrientationSequence", "ImageOrientationPatient", 0)
            orient = orient if orient is not None else ds.get("ImageOrientationPatient")
            if orient is not None and len(orient) == 6:
                normal = slice_normal(tuple(float(v) for v in orient))
            pos = [
                _functional(ds, "PlanePositionSequence", "ImagePositionPatient", i)
                for i in range(frames)
            ]
            offsets = ds.get("GridFrameOffsetVector")
            if normal is not None and all(p is not None and len(p) == 3 for p in pos):
                dist = np.array([np.dot([float(v) for v in p], normal) for p in pos])
            elif offsets is not None and len(offsets) == frames:
                dist = np.array([float(v) for v in offsets])
            fallback = _functional(ds, "PixelMeasuresSequence", "SpacingBetweenSlices", 0)
            fallback = fallback or ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    except (TypeError, ValueError, AttributeError):
        raise FileProblem(path, "tags describing the frame positions are not valid") from None
    if dist is not None and len(np.unique(np.round(dist, 4))) == frames and frames > 1:
        order = np.argsort(dist, kind="stable")
        return order, float(np.median(np.diff(dist[order])))
    try:
        spacing = float(fallback) if fallback not in (None, "") else None
    except (TypeError, ValueError):
        raise FileProblem(
            path, "tag SpacingBetweenSlices or SliceThickness is not a number"
        ) from None
    return order, spacing


def _rescale(ds: Dataset, path: Path, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame RescaleSlope and RescaleIntercept (top level or functional groups)."""
    slopes, intercepts = np.ones(frames), np.zeros(frames)
    try:
        for i in range(frames):
            s = _functional(ds, "PixelValueTransformationSequence", "RescaleSlope", i)
            b = _functional(ds, "PixelValueTransformationSequence", "RescaleIntercept", i)
            s = s if s is not None else ds.get("RescaleSlope")
            b = b if b is not None else ds.get("RescaleIntercept")
            slopes[i] = float(s) if s not in (None, "") else 1.0
            intercepts[i] = float(b) if b not in (None, "") else 0.0
    except (TypeError, ValueError):
        raise FileProblem(path, "tag RescaleSlope or RescaleIntercept is not a number") from None
    if not (np.all(np.isfinite(slopes)) and np.all(np.isfinite(intercepts))):
        raise FileProblem(path, "tag RescaleSlope or RescaleIntercept is not finite")
    return slopes, intercepts


def _pixels(ds: Dataset, path: Path) -> tuple[np.ndarray, bool]:
    """(frames, rows, columns[, 3]) float32 in modality units, and whether it is colour.

    Grey images get RescaleSlope/RescaleIntercept (per frame where the functional groups
    give them), a Modality LUT, or DoseGridScaling; MONOCHROME1 is inverted so that high
    values are bright. Colour (RGB, YBR, palette) comes out as RGB.
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    with quiet_pydicom():
        try:
            arr = ds.pixel_array
            photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
            if photometric == "PALETTE COLOR":
                arr = apply_color_lut(arr, ds)
        except Exception as exc:
            raise FileProblem(
                path, f"tag PixelData cannot be decoded ({describe_error(exc)})"
            ) from None
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        colour = samples > 1 or photometric == "PALETTE COLOR"
        if frames == 1:
            arr = arr[None]
        if colour:
            return np.asarray(arr, dtype=np.float32), True
        if "ModalityLUTSequence" in ds and "RescaleSlope" not in ds:
            try:
                out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
            except Exception:
                raise FileProblem(path, "tag ModalityLUTSequence cannot be applied") from None
        else:
            slopes, intercepts = _rescale(ds, path, frames)
            out = arr.astype(np.float64) * slopes[:, None, None] + intercepts[:, None, None]
        scaling = ds.get("DoseGridScaling")
        if scaling not in (None, ""):
            try:
                out = out * float(scaling)
            except (TypeError, ValueError):
                raise FileProblem(path, "tag DoseGridScaling is not a number") from None
        if photometric == "MONOCHROME1":  # low values are bright: invert
            out = out.max() + out.min() - out
    return out.astype(np.float32), False


def tally_pixels(paths: list[Path], values: ValueSummary) -> None:
    """Decode each file once and tally its pixels in modality units (rescale, LUTs and
    MONOCHROME1 applied: the values :func:`read_dicom` hands a model)."""
    for path in paths:
        arr, _ = _pixels(read_dataset(path), path)
        values.add(arr, path=path)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, MultiValue | list | tuple) else value


def _window(ds: Dataset) -> tuple[float, float] | None:
    """The first VOI window of the header as (low, high), if valid."""
    try:
        with quiet_pydicom():
            c, w = ds.get("WindowCenter"), ds.get("WindowWidth")
            if c is None or w is None:
                return None
            center, width = float(_first(c)), float(_first(w))
    except (TypeError, ValueError, IndexError):
        return None
    return (center - width / 2, center + width / 2) if width > 0 else None


def read_dicom(paths: list[Path]) -> RawImage:
    """One file (2-D or multi-frame) or the files of one series, stacked in slice order."""
    headers = []
    for p in paths:
        h = read_header(p)
        if h is None:
            raise FileProblem(p, "holds no image (tag PixelData is absent)")
        headers.append(h)
    if len({h.series_uid for h in headers}) > 1:
        raise FileProblem(
            paths[0].parent,
            f"the files belong to {len({h.series_uid for h in headers})} series "
            "(tag SeriesInstanceUID); load one series at a time",
        )
    ordered, dz = slice_order(headers)
    datasets = [read_dataset(h.path) for h in ordered]
    first = datasets[0]
    decoded = [_pixels(ds, h.path) for ds, h in zip(datasets, ordered, strict=True)]
    colour = decoded[0][1]
    in_plane = pixel_spacing(first, ordered[0].path)
    spacing: tuple[float, ...] | None
    if len(ordered) == 1:
        arr = decoded[0][0]
        if ordered[0].frames == 1:
            arr = arr[0]
            spacing = in_plane
        else:
            order, dz = frame_geometry(first, ordered[0].path, ordered[0].frames)
            arr = arr[order]
            spacing = (dz, *in_plane) if dz is not None and in_plane is not None else None
    else:
        arr = np.concatenate([a for a, _ in decoded], axis=0)
        spacing = (abs(dz), *in_plane) if dz is not None and in_plane is not None else None
    if spacing is not None and (not all(np.isfinite(spacing)) or min(spacing) <= 0):
        spacing = None
    return RawImage(
        array=np.ascontiguousarray(arr),
        spacing=tuple(float(v) for v in spacing) if spacing is not None else None,
        channels=colour,
        window=_window(first),
    )
