"""Reading NIfTI and PNG/JPEG files, and :func:`load_image`: any image to a model input.

MONAI is imported on first use only: it takes seconds to import, and most commands never
load pixels.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medweave.errors import InputError
from medweave.sources._dicom import FileProblem, find_dicom_files
from medweave.sources._dicom_pixels import RawImage, read_dicom
from medweave.sources._studies import ValueSummary

__all__ = [
    "PICTURE_SUFFIXES",
    "Intensity",
    "is_nifti",
    "load_image",
    "nifti_info",
    "picture_info",
    "read_nifti",
    "read_picture",
    "read_raw",
]

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
Intensity = Literal["zscore", "window", "minmax"]
_INTENSITIES = ("zscore", "window", "minmax")
_CHUNK = 1 << 22  # bytes read at a time when a NIfTI file is read through
_GREY_MODES = ("L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[tuple[int, ...], bool]:
    """NIfTI dims to (spatial shape, has a trailing channel/time axis)."""
    if len(shape) in (2, 3):
        return shape, False
    if len(shape) == 4:
        return shape[:3], True
    if len(shape) == 5 and shape[3] == 1:
        return shape[:3], True
    raise FileProblem(path, f"NIfTI with {len(shape)} dimensions {shape}; expected 2 to 4")


def _refuse_empty(path: Path) -> None:
    try:
        empty = path.stat().st_size == 0
    except OSError as exc:
        raise FileProblem(path, f"cannot be opened ({type(exc).__name__})") from None
    if empty:
        raise FileProblem(path, "is empty (0 bytes); was it copied completely?")


def _stored_dtype(dtype: np.dtype) -> np.dtype:
    """The numbers a NIfTI data type is made of: RGB(A) as bytes, complex as float pairs."""
    if dtype.fields:
        return np.dtype(np.uint8)
    if dtype.kind == "c":
        return np.dtype(f"f{dtype.itemsize // 2}").newbyteorder(dtype.byteorder)
    return dtype


def _read_through(
    path: Path,
    *,
    offset: int,
    nbytes: int,
    dtype: np.dtype,
    scale: tuple[float, float],
    values: ValueSummary | None,
) -> int:
    """Read the file (gunzipped) to its end in chunks; its size in bytes.

    With ``values``, the voxel data (``nbytes`` from ``offset``) is tallied on the way,
    scaled by ``scale`` = (slope, intercept), one chunk in memory at a time.
    """
    gz = path.name.lower().endswith(".gz")
    if values is None and not gz:
        return path.stat().st_size
    slope, inter = scale
    size = dtype.itemsize
    pos, carry = 0, b""
    with gzip.open(path, "rb") if gz else path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            start, pos = pos, pos + len(chunk)
            lo, hi = max(offset - start, 0), min(offset + nbytes - start, len(chunk))
            if values is None or lo >= hi:
                continue
            buf = carry + chunk[lo:hi]
            whole = len(buf) // size * size
            raw = np.frombuffer(buf[:whole], dtype=dtype)
            if (slope, inter) != (1.0, 0.0):
                raw = raw.astype(np.float64) * slope + inter
            values.add(raw, path=path)
            carry = buf[whole:]
    return pos


def nifti_info(path: Path, *, values: ValueSummary | None = None) -> dict[str, Any]:
    """Check a NIfTI file at the door (header, and that the data is all there): its geometry.

    With ``values``, every voxel is read once (scaled by scl_slope/scl_inter) and tallied
    there, for the reader's value checks.
    """
    import nibabel as nib

    _refuse_empty(path)
    try:
        img = nib.load(path)
    except Exception as exc:
        raise FileProblem(path, f"cannot be read as NIfTI ({type(exc).__name__})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise FileProblem(path, f"is a {type(img).__name__}, not a NIfTI-1 or NIfTI-2 image")
    header = img.header
    shape = tuple(int(v) for v in img.shape)
    spatial, channels = _spatial_shape(path, shape)
    proxy: Any = img.dataobj
    offset = getattr(proxy, "offset", None)  # nibabel reads vox_offset 0 as 352
    offset = int(offset) if offset is not None else int(header.get_data_offset())
    dtype = header.get_data_dtype()
    nbytes = int(np.prod(shape)) * dtype.itemsize
    scale = (float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0)))
    try:
        have = _read_through(
            path,
            offset=offset,
            nbytes=nbytes,
            dtype=_stored_dtype(dtype),
            scale=scale,
            values=values,
        )
    except (OSError, EOFError, zlib.error) as exc:
        raise FileProblem(path, f"compressed data is corrupt ({type(exc).__name__})") from None
    if have < offset + nbytes:
        raise FileProblem(
            path, f"file is truncated: the header needs {offset + nbytes} bytes, it has {have}"
        )
    zooms = tuple(float(z) for z in header.get_zooms()[: len(spatial)])
    return {
        "shape": list(spatial),
        "channels": int(np.prod(shape[len(spatial) :])) if channels else 1,
        "spacing": [round(z, 6) for z in zooms],
    }


def read_nifti(path: Path) -> RawImage:
    """Voxels as float32 (scl_slope/scl_inter applied), spatial axes in file order."""
    import nibabel as nib

    nifti_info(path)
    img: Any = nib.load(path)
    try:
        arr = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:
        raise FileProblem(path, f"voxel data cannot be read ({type(exc).__name__})") from None
    spatial, channels = _spatial_shape(path, arr.shape)
    if arr.ndim == 5:
        arr = arr[:, :, :, 0, :]
    affine = np.asarray(img.affine, dtype=np.float64)
    if len(spatial) == 2:
        affine = affine[np.ix_([0, 1, 3], [0, 1, 3])]
    zooms = tuple(float(z) for z in img.header.get_zooms()[: len(spatial)])
    return RawImage(array=arr, spacing=zooms, channels=channels, affine=affine)


def _open_picture(path: Path) -> tuple[np.ndarray, str]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    _refuse_empty(path)
    try:
        with Image.open(path) as im:
            im.load()
            if getattr(im, "n_frames", 1) > 1:
                raise FileProblem(path, "has several frames; expected one 2-D picture")
            mode = im.mode
            pic = ImageOps.exif_transpose(im)
            if mode in ("1", "LA"):
                arr = np.asarray(pic.convert("L"))
            elif mode in _GREY_MODES:
                arr = np.asarray(pic)
            else:
                arr = np.asarray(pic.convert("RGB"))
                if mode in ("P", "PA") and _is_grey(arr):  # a grey palette
                    arr = arr[..., 0]
    except FileProblem:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise FileProblem(path, f"cannot be read as an image ({type(exc).__name__})") from None
    return arr, mode


def _is_grey(rgb: np.ndarray) -> bool:
    return bool(
        np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    )


def picture_info(path: Path, *, values: ValueSummary | None = None) -> dict[str, Any]:
    """Check a PNG/JPEG at the door (it decodes completely): its geometry and colour mode;
    its pixels are tallied in ``values`` if given."""
    arr, mode = _open_picture(path)
    if values is not None:
        values.add(arr, path=path)
    return {"shape": list(arr.shape[:2]), "channels": 1 if arr.ndim == 2 else 3, "mode": mode}


def read_picture(path: Path) -> RawImage:
    """A PNG/JPEG as (rows, columns) grey or (rows, columns, 3) RGB float32; no spacing."""
    arr, _ = _open_picture(path)
    return RawImage(array=arr.astype(np.float32), spacing=None, channels=arr.ndim == 3)


def read_raw(path: str | Path) -> RawImage:
    """Dispatch on the file type: NIfTI, PNG/JPEG, a DICOM file, folder or path list."""
    text = str(path)
    if os.pathsep in text and not Path(text).exists():
        files = [Path(p) for p in text.split(os.pathsep) if p]
        for f in files:
            if not f.is_file():
                raise InputError(f"{f}: image file not found")
        return read_dicom(files)
    p = Path(text)
    if not p.exists():
        raise InputError(f"{p}: image file not found")
    if p.is_dir():
        files = find_dicom_files(p)
        if not files:
            raise InputError(f"{p}: no DICOM files in this folder")
        return read_dicom(files)
    if is_nifti(p):
        return read_nifti(p)
    if p.suffix.lower() in PICTURE_SUFFIXES:
        return read_picture(p)
    return read_dicom([p])


def _check_options(
    spatial_size: tuple[int, ...] | None,
    spacing: tuple[float, ...] | None,
    intensity: str,
    window: tuple[float, float] | None,
) -> None:
    if intensity not in _INTENSITIES:
        raise InputError(f"intensity {intensity!r} is not one of {', '.join(_INTENSITIES)}")
    if spatial_size is not None and not all(
        int(s) == s and (s > 0 or s == -1) for s in spatial_size
    ):
        raise InputError(f"spatial_size {spatial_size} must hold positive integers (or -1 to keep)")
    if spacing is not None and not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"spacing {spacing} must hold positive numbers (mm)")
    if window is not None and (len(window) != 2 or not window[0] < window[1]):
        raise InputError(f"window {window} must be (low, high) with low < high")


def load_image(
    path: str | Path,
    *,
    spatial_size: tuple[int, ...] | None = None,
    spacing: tuple[float, ...] | None = None,
    intensity: Intensity = "zscore",
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Read one image and prepare it for a model: a channel-first float32 array.

    ``path`` is what an image block stores: a DICOM file (2-D or multi-frame), a DICOM
    series (its folder, or its files joined with ``os.pathsep``), a NIfTI file or a
    PNG/JPEG. Values are in modality units first (DICOM rescale applied, so CT is in HU).

    Spatial axes keep the file's order: (rows, columns) for 2-D DICOM and pictures,
    (slices, rows, columns) for DICOM volumes (slices ascending along the slice normal),
    nibabel's (i, j, k) for NIfTI; ``spacing`` and ``spatial_size`` follow the same order.
    Colour images have 3 channels, 4-D NIfTI one channel per volume, others one.

    Steps, all MONAI transforms and deterministic: EnsureChannelFirst; ``spacing`` (mm)
    resamples with Spacing where the file records its spacing (PNG/JPEG and DICOM without
    PixelSpacing do not, and are left as they are); ``spatial_size`` then pads or crops
    (ResizeWithPadOrCrop, padding with the image minimum) when ``spacing`` fixed the scale,
    or else resizes (Resize, anti-aliased); finally ``intensity``: ``zscore``
    (NormalizeIntensity per channel), ``minmax`` (ScaleIntensity to [0, 1] per channel) or
    ``window`` (ScaleIntensityRange from ``window`` = (low, high) to [0, 1], clipped; a DICOM
    file's own WindowCenter/WindowWidth when ``window`` is None).
    """
    _check_options(spatial_size, spacing, intensity, window)
    raw = read_raw(path)
    n_spatial = raw.array.ndim - (1 if raw.channels else 0)
    for name, value in (("spatial_size", spatial_size), ("spacing", spacing)):
        if value is not None and len(value) != n_spatial:
            raise InputError(
                f"{path}: {name} has {len(value)} values but the image has {n_spatial} spatial "
                f"axes (shape {raw.array.shape})"
            )
    if intensity == "window" and window is None:
        if raw.window is None:
            raise InputError(
                f"{path}: intensity='window' needs window=(low, high); the file has no "
                "WindowCenter/WindowWidth"
            )
        window = raw.window
    return _transform(
        raw, spatial_size=spatial_size, spacing=spacing, intensity=intensity, window=window
    )


def _transform(
    raw: RawImage,
    *,
    spatial_size: tuple[int, ...] | None,
    spacing: tuple[float, ...] | None,
    intensity: str,
    window: tuple[float, float] | None,
) -> np.ndarray:
    import torch
    from monai.data import MetaTensor
    from monai.transforms import (
        EnsureChannelFirst,
        NormalizeIntensity,
        Resize,
        ResizeWithPadOrCrop,
        ScaleIntensity,
        ScaleIntensityRange,
        Spacing,
    )
    from monai.utils import convert_to_numpy

    n_spatial = raw.array.ndim - (1 if raw.channels else 0)
    if raw.affine is not None:
        affine = raw.affine
    else:
        affine = np.diag([*(raw.spacing or (1.0,) * n_spatial), 1.0])
    img: Any = MetaTensor(
        torch.from_numpy(np.ascontiguousarray(raw.array, dtype=np.float32)),
        affine=torch.as_tensor(affine, dtype=torch.float64),
    )
    img = EnsureChannelFirst(channel_dim=-1 if raw.channels else "no_channel")(img)
    if spacing is not None and raw.spacing is not None:
        img = Spacing(pixdim=spacing, mode="bilinear", padding_mode="border")(img)
    if spatial_size is not None:
        if spacing is not None:
            low = float(img.min())
            img = ResizeWithPadOrCrop(spatial_size, mode="constant")(img - low) + low
        else:
            mode = "bilinear" if n_spatial == 2 else "trilinear"
            img = Resize(spatial_size, mode=mode, anti_aliasing=True)(img)
    if intensity == "zscore":
        img = NormalizeIntensity(channel_wise=True)(img)
    elif intensity == "minmax":
        img = ScaleIntensity(minv=0.0, maxv=1.0, channel_wise=True)(img)
    else:
        assert window is not None
        img = ScaleIntensityRange(
            a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0, clip=True
        )(img)
    return np.ascontiguousarray(convert_to_numpy(img), dtype=np.float32)
