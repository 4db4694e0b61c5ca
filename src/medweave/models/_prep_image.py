"""The grid an image modality is resampled to: ``image_size``, taken from the files by default.

``image_size="auto"`` follows the images' own dimensionality, read from the reader's meta
(``block.meta["images"][patient]["shape"]``, the spatial shape of each chosen image):

* 2-D images (slices, radiographs, pictures): ``(64, 64)`` whatever their size — the
  setting the demo's image encoder was tuned at (``benchmarks/image_signal.py``);
* 3-D volumes: per axis the median extent over the patients' volumes, at least 8 and at
  most 64 voxels, and at most 32 along the axis with the fewest voxels (the slices of a
  CT or MR): a 512 x 512 CT series of 120 slices becomes (32, 64, 64), a 16 x 16 x 16
  volume stays 16 x 16 x 16 (resampling up adds no information, only cost). Every volume
  is resampled to that one grid, so DICOM series of different slice counts stack.

One image modality holds one dimensionality: a source mixing 2-D images and 3-D volumes
is refused by ``medweave build`` (:meth:`medweave.sources._studies.Reading.choose`), and
again here for a block built otherwise, naming a file. An explicit ``image_size`` of the
wrong number of values is an error naming the modality and the images' dimensionality —
before any training, not when the first image is loaded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from medweave.cohort import ModalityBlock
from medweave.errors import InputError

__all__ = ["AUTO", "check_image_sizes", "image_dims", "resolve_image_size"]

#: The value of ``image_size`` that takes the size from the images.
AUTO = "auto"
_SIZE_2D = (64, 64)
_MAX_3D, _MAX_THIN, _MIN_3D = 64, 32, 8
_PROBE = 20  # images read for their shape when a block has no reader's meta


def _present(block: ModalityBlock, rows: np.ndarray | None) -> np.ndarray:
    idx = np.arange(len(block.ids)) if rows is None else np.asarray(rows, dtype=np.int64)
    return idx[block.present[idx]]


def _shapes(block: ModalityBlock, rows: np.ndarray | None) -> dict[int, tuple[int, ...]]:
    """The spatial shape of each present image (of ``rows``), by row: from the reader's
    meta, else (a block made by hand) read from a few of the files."""
    images: dict[str, Any] = block.meta.get("images") or {}
    out: dict[int, tuple[int, ...]] = {}
    unknown: list[int] = []
    for i in _present(block, rows):
        shape = (images.get(block.ids[i]) or {}).get("shape")
        if shape:
            out[int(i)] = tuple(int(v) for v in shape)
        else:
            unknown.append(int(i))
    paths = block.paths or []
    for i in unknown[:_PROBE]:
        if i < len(paths) and paths[i] is not None:
            from medweave.sources._imload import read_raw

            raw = read_raw(str(paths[i]))
            out[i] = tuple(raw.array.shape[: raw.array.ndim - (1 if raw.channels else 0)])
    return out


def _what(dims: int) -> str:
    return "2-D images" if dims == 2 else f"{dims}-D volumes"


def image_dims(block: ModalityBlock, *, rows: np.ndarray | None = None) -> int | None:
    """The number of spatial axes of ``block``'s images (of ``rows``): 2 or 3; None when
    no image is present. Mixed dimensionalities are an error naming a file of the fewer."""
    shapes = _shapes(block, rows)
    counts = Counter(len(s) for s in shapes.values())
    if not counts:
        return None
    if len(counts) > 1:
        # the more common one is taken as intended (a tie: the volumes)
        main = max(counts, key=lambda d: (counts[d], d))
        odd = next(i for i, s in shapes.items() if len(s) != main)
        path = (block.paths or [None] * len(block.ids))[odd]
        other = len(shapes[odd])
        raise InputError(
            f"modality {block.name!r}: {path} (patient {block.ids[odd]!r}) is one of "
            f"{sum(n for d, n in counts.items() if d != main)} {_what(other)} (shape "
            f"{' x '.join(map(str, shapes[odd]))}) among {counts[main]} {_what(main)}; one "
            "image source holds one dimensionality: remove them from the source or give "
            "them a source of their own (medweave build names each such file)"
        )
    return next(iter(counts))


def _explicit(image_size: Any, *, key: str) -> tuple[int, ...]:
    values = list(image_size) if isinstance(image_size, Sequence | np.ndarray) else None
    if (
        isinstance(image_size, str)
        or not values
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values)
        or min(values) <= 0
    ):
        raise InputError(
            f"{key}={image_size!r}; expected {AUTO!r} (the size follows the images) or "
            "positive whole numbers, 2 for 2-D images (e.g. [64, 64]) or 3 for volumes "
            "(e.g. [32, 64, 64])"
        )
    return tuple(int(v) for v in values)


def _auto(shapes: list[tuple[int, ...]], dims: int | None) -> tuple[int, ...]:
    if dims is None or dims == 2:
        return _SIZE_2D
    median = np.median(np.asarray(shapes, dtype=np.float64), axis=0)
    size = np.clip(np.rint(median), _MIN_3D, _MAX_3D).astype(int)
    thin = int(np.argmin(median))
    size[thin] = min(size[thin], _MAX_THIN)
    return tuple(int(v) for v in size)


def resolve_image_size(
    block: ModalityBlock,
    image_size: Any,
    *,
    rows: np.ndarray | None = None,
    key: str = "image_size",
) -> tuple[int, ...]:
    """The grid ``block``'s images are resampled to: ``image_size`` as given (checked
    against the images' dimensionality) or, for ``"auto"``, the module's rule over the
    images of ``rows`` (default: every present patient). ``key`` names the setting in
    messages."""
    if isinstance(image_size, str) and image_size == AUTO:
        shapes = _shapes(block, rows)
        return _auto(list(shapes.values()), image_dims(block, rows=rows))
    size = _explicit(image_size, key=key)
    dims = image_dims(block, rows=rows)
    if dims is not None and len(size) != dims:
        example = "[64, 64]" if dims == 2 else "[32, 64, 64]"
        raise InputError(
            f"{key}={list(size)} has {len(size)} values, but modality {block.name!r} holds "
            f"{_what(dims)}; give {dims} values (e.g. {example}) or {AUTO!r}"
        )
    return size


def check_image_sizes(
    cohort: Any, modalities: Sequence[str], image_size: Any, *, key: str = "image_size"
) -> dict[str, tuple[int, ...]]:
    """Each image modality's grid (see :func:`resolve_image_size`) — for a run to call
    before any training, so that a wrong ``image_size`` stops it there."""
    return {
        m: resolve_image_size(cohort.modalities[m], image_size, key=key)
        for m in modalities
        if m in cohort.modalities and cohort.modalities[m].kind == "image"
    }
