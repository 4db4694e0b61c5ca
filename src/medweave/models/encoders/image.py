"""``image_cnn``: 2-D and 3-D image encoders built from MONAI, and an embedding cache.

The number of spatial axes comes from the input spec (``shape = (channels, *spatial)``):
two for slices and pictures, three for volumes. ``arch`` chooses the network:

* ``small`` (default): a light CNN of MONAI ``Convolution`` blocks (per stage a stride-2
  and a stride-1 convolution, then global average pooling and a linear layer) that trains
  in seconds on a CPU at 64-128 px;
* ``resnet10``, ``resnet18``: ``monai.networks.nets.resnet10/18`` (stride-2 stem);
* ``densenet121``: ``monai.networks.nets.DenseNet121``.

Every network is built with random initial weights (``pretrained=False``): nothing is
downloaded. Load trained weights with ``load_state_dict``. The default normalisation is
GroupNorm, which unlike BatchNorm gives the same output for a row whatever else is in the
batch and works for a batch of one at any depth (``norm="batch"`` is available).
``freeze=True`` keeps every weight fixed (no gradients, and the network stays in eval mode
when the model around it trains): the setting for a pretrained backbone, whose embeddings
:class:`EmbeddingCache` then computes once and stores.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from medweave._atomic import atomic_file
from medweave.errors import InputError
from medweave.models.encoders._base import ENCODERS, Encoder, InputSpec
from medweave.models.encoders.tabular import check_kind, check_positive

__all__ = [
    "ARCHS",
    "EmbeddingCache",
    "ImageCNNEncoder",
    "cached_embeddings",
    "image_batches",
    "weights_hash",
]

#: the networks ``image_cnn`` can build
ARCHS: tuple[str, ...] = ("small", "resnet10", "resnet18", "densenet121")
_NORMS = ("group", "batch", "instance", "none")
_AUGMENTS = ("flips", "dihedral")
_POOLS = ("avg", "max", "avgmax")
_GROUPS = 8
_DENSENET_MIN_SIZE = 32  # five halvings before the last transition's pooling


def _norm(norm: str, channels: int) -> str | tuple[str, dict[str, Any]] | None:
    """MONAI's norm argument; GroupNorm groups divide ``channels``."""
    if norm == "none":
        return None
    if norm == "group":
        return ("group", {"num_groups": math.gcd(_GROUPS, channels)})
    return norm


def _replace_batchnorm(module: nn.Module, *, norm: str, spatial_dims: int) -> None:
    """Swap every BatchNorm layer below ``module`` for GroupNorm, InstanceNorm (affine) or
    nothing."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            c = child.num_features
            new: nn.Module
            if norm == "group":
                new = nn.GroupNorm(math.gcd(_GROUPS, c), c)
            elif norm == "none":
                new = nn.Identity()
            else:
                inorm = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
                new = inorm(c, affine=True)
            setattr(module, name, new)
        else:
            _replace_batchnorm(child, norm=norm, spatial_dims=spatial_dims)


@ENCODERS.register(
    "image_cnn",
    description="2-D/3-D image CNN from MONAI (small CNN, ResNet-10/18, DenseNet-121)",
)
class ImageCNNEncoder(Encoder):
    """A MONAI CNN from (n, channels, *spatial) images to (n, out_dim).

    ``channels`` are the widths of the ``small`` network's stages (ignored by the other
    architectures), ``norm`` ``group``/``batch``/``instance``, ``freeze`` fixes all weights,
    ``augment`` transforms each training image at random (never at inference, nor when
    frozen): ``"flips"`` (or True) flips it along each spatial axis with probability 1/2,
    ``"dihedral"`` also swaps its last two axes with probability 1/2 (with the flips, every
    rotation by a multiple of 90° and every reflection of a square image or slice) — for a
    target that does not depend on orientation, as lesion burden or a tissue's texture.
    ``tta`` (test-time augmentation) makes the output the mean over every such transform of
    the image, so the embedding does not depend on the orientation either. ``pool`` is the
    ``small`` network's global pooling: ``avg`` (the default; a burden spread over the
    image is the mean of a detector's map, and on 3-D chest volumes the mean learnt the
    lesion burden faster than the mean beside the maximum, ``benchmarks/image_3d.py``),
    ``max`` (the strongest single finding) or ``avgmax`` (both).
    """

    input_kinds: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(
        self,
        spec: InputSpec,
        *,
        out_dim: int = 64,
        arch: str = "small",
        channels: Sequence[int] = (8, 16, 32),
        norm: str = "group",
        freeze: bool = False,
        augment: bool | str = False,
        tta: bool = False,
        pool: str = "avg",
    ) -> None:
        Encoder.__init__(self, spec, out_dim=check_positive(out_dim, key="out_dim"))
        check_kind("image_cnn", spec, ("image",))
        self.augment = augment
        self._transforms = _augment(augment=augment, shape=spec.shape)
        self.tta = bool(tta)
        if self.tta and self._transforms is None:
            raise InputError(
                "encoder 'image_cnn': tta averages over the transforms of augment; "
                "set augment to 'flips' or 'dihedral'"
            )
        if len(spec.shape) not in (3, 4):
            raise InputError(
                "encoder 'image_cnn': image input shape must be (channels, height, width) or "
                f"(channels, depth, height, width), got {tuple(spec.shape)}"
            )
        if arch not in ARCHS:
            raise InputError(f"encoder 'image_cnn': unknown arch {arch!r}; use one of {ARCHS}")
        if norm not in _NORMS:
            raise InputError(f"encoder 'image_cnn': unknown norm {norm!r}; use one of {_NORMS}")
        self.in_channels = check_positive(spec.shape[0], key="channels of the input spec")
        self.spatial_dims = len(spec.shape) - 1
        self.arch = arch
        self.channels = [check_positive(c, key=f"channels[{i}]") for i, c in enumerate(channels)]
        if not self.channels:
            raise InputError("encoder 'image_cnn': channels must name at least one stage")
        self.norm = norm
        if pool not in _POOLS:
            raise InputError(f"encoder 'image_cnn': unknown pool {pool!r}; use one of {_POOLS}")
        self.pool = pool
        self.freeze = bool(freeze)
        smallest = min(spec.shape[1:])
        if arch == "densenet121" and smallest < _DENSENET_MIN_SIZE:
            raise InputError(
                f"encoder 'image_cnn': densenet121 needs at least {_DENSENET_MIN_SIZE} voxels "
                f"along every spatial axis, the input spec has {tuple(spec.shape[1:])}; "
                "resize the images or use arch='small' or 'resnet10'"
            )
        self.net = self._build()
        if self.freeze:
            self.net.requires_grad_(requires_grad=False)
            self.net.eval()

    def _build(self) -> nn.Module:
        from monai.networks import nets
        from monai.networks.blocks import Convolution

        dims, cin = self.spatial_dims, self.in_channels
        if self.arch == "small":
            layers: list[nn.Module] = []
            for c in self.channels:
                for stride in (2, 1):
                    layers.append(
                        Convolution(
                            dims,
                            cin,
                            c,
                            strides=stride,
                            kernel_size=3,
                            act="RELU",
                            norm=_norm(self.norm, c),
                        )
                    )
                    cin = c
            pool = _GlobalPool(self.pool)
            # Flatten (a no-op here) keeps the layer indices, so saved weights still load
            flat = nn.Flatten()
            return nn.Sequential(*layers, pool, flat, nn.Linear(cin * pool.factor, self.out_dim))
        # MONAI's ResNet passes ``norm`` to its stem only, so the networks are built with
        # BatchNorm and every BatchNorm layer is then replaced by the chosen normalisation
        net: nn.Module
        if self.arch in ("resnet10", "resnet18"):
            factory = nets.resnet10 if self.arch == "resnet10" else nets.resnet18
            net = factory(
                pretrained=False,
                spatial_dims=dims,
                n_input_channels=cin,
                num_classes=self.out_dim,
                conv1_t_stride=2,
            )
        else:
            net = nets.DenseNet121(
                spatial_dims=dims, in_channels=cin, out_channels=self.out_dim, pretrained=False
            )
        if self.norm != "batch":
            _replace_batchnorm(net, norm=self.norm, spatial_dims=dims)
        return net

    def train(self, mode: bool = True) -> ImageCNNEncoder:  # noqa: FBT001, FBT002 - nn.Module API
        super().train(mode)
        if self.freeze:
            self.net.eval()
        return self

    def get_config(self) -> dict[str, Any]:
        """The constructor's keyword arguments, JSON-able."""
        return {
            "out_dim": self.out_dim,
            "arch": self.arch,
            "channels": list(self.channels),
            "norm": self.norm,
            "freeze": self.freeze,
            "augment": self.augment,
            "tta": self.tta,
            "pool": self.pool,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise InputError(
                f"encoder 'image_cnn': expected images (n, {self.in_channels}, "
                f"{self.spatial_dims} spatial axes), got {tuple(x.shape)}"
            )
        dihedral = self._transforms == "dihedral"
        if self._transforms is not None and self.training and not self.freeze:
            x = _random_transform(x, self.spatial_dims, transpose=dihedral)
        elif self.tta:
            views = _all_transforms(x, self.spatial_dims, transpose=dihedral)
            out: torch.Tensor = self.net(torch.cat(views))
            return out.reshape(len(views), len(x), -1).mean(0)
        out = self.net(x)
        return out


class _GlobalPool(nn.Module):
    """Global pooling over every spatial axis to (n, channels * factor): the mean (a
    burden spread over the image), the maximum (the strongest single finding), or both."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.factor = 2 if kind == "avgmax" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        if self.kind == "avg":
            return flat.mean(-1)
        if self.kind == "max":
            return flat.amax(-1)
        return torch.cat([flat.mean(-1), flat.amax(-1)], dim=1)


def _augment(*, augment: bool | str, shape: Sequence[int]) -> str | None:
    """The transforms ``augment`` names: None, ``"flips"`` or ``"dihedral"`` (checked
    against the input's shape)."""
    if augment is False:
        return None
    name = "flips" if augment is True else augment
    if name not in _AUGMENTS:
        raise InputError(
            f"encoder 'image_cnn': augment={augment!r}; expected one of {_AUGMENTS} or a bool"
        )
    if name == "dihedral" and shape[-1] != shape[-2]:
        raise InputError(
            f"encoder 'image_cnn': augment 'dihedral' swaps the last two image axes, which "
            f"need the same size; the input is {tuple(shape[1:])} (use 'flips', or square "
            "images: image_size)"
        )
    return name


def _random_transform(x: torch.Tensor, spatial_dims: int, *, transpose: bool) -> torch.Tensor:
    """Each image flipped along each spatial axis with probability 1/2 and, with
    ``transpose``, its last two axes swapped with probability 1/2 (torch's RNG, so seeded
    training stays deterministic)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    for axis in range(2, 2 + spatial_dims):
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(flip.view(shape), x.flip(axis), x)
    if transpose:
        swap = torch.rand(x.shape[0], device=x.device) < 0.5
        x = torch.where(swap.view(shape), x.transpose(-1, -2), x)
    return x


def _all_transforms(x: torch.Tensor, spatial_dims: int, *, transpose: bool) -> list[torch.Tensor]:
    """``x`` under every transform :func:`_random_transform` can draw."""
    views = [x]
    for axis in range(2, 2 + spatial_dims):
        views += [v.flip(axis) for v in views]
    if transpose:
        views += [v.transpose(-1, -2) for v in views]
    return views


# --- embedding cache -----------------------------------------------------------------------

ImageSource = torch.Tensor | Callable[[], torch.Tensor | Iterable[torch.Tensor]]

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_FORMAT = 1


def weights_hash(encoder: nn.Module) -> str:
    """SHA-256 of the encoder's class, config and every parameter and buffer."""
    h = hashlib.sha256()
    cls = type(encoder)
    h.update(f"{cls.__module__}.{cls.__qualname__}\n".encode())
    get_config = getattr(encoder, "get_config", None)
    if callable(get_config):
        h.update(json.dumps(get_config(), sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"\n{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _ids_hash(ids: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()


def _tensor_hash(x: torch.Tensor) -> str:
    t = x.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}\n".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def image_batches(
    paths: Sequence[str | Path], *, batch_size: int = 32, **load_options: Any
) -> Iterator[torch.Tensor]:
    """Read images with :func:`medweave.sources.imaging.load_image`, ``batch_size`` at a time.

    ``load_options`` (``spatial_size``, ``spacing``, ``intensity``, ``window``) go to
    ``load_image``; give ``spatial_size`` so that the images of a batch stack.
    """
    import numpy as np

    from medweave.sources.imaging import load_image

    batch_size = check_positive(batch_size, key="batch_size")
    for start in range(0, len(paths), batch_size):
        arrays = [load_image(p, **load_options) for p in paths[start : start + batch_size]]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise InputError(
                f"images {start}..{start + len(arrays) - 1} differ in shape {sorted(shapes)}; "
                "pass spatial_size=... so that they can be batched"
            )
        yield torch.from_numpy(np.stack(arrays)).float()


class EmbeddingCache:
    """Embeddings of a frozen encoder, computed once and stored under ``folder``.

    Per ``key``: ``<key>.safetensors`` (the (n, out_dim) float32 tensor ``embeddings``)
    and ``<key>.json`` (the encoder's class and config, the SHA-256 of its weights, the
    input ids and their hash). A later :meth:`get` with the same key, weights and ids loads
    the tensor instead of running the encoder; anything else (other weights, other ids or
    order, a damaged file) recomputes and replaces it. Both files are written to a
    temporary name and renamed, and the hashes are also stored inside the safetensors file,
    so an interrupted write is never mistaken for a valid cache. ``hits`` and ``computed``
    count what :meth:`get` did.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.hits = 0
        self.computed = 0

    def paths(self, key: str) -> tuple[Path, Path]:
        """The tensor and metadata files of ``key``."""
        if not _KEY.match(key) or ".." in key:
            raise InputError(
                f"embedding cache key {key!r}: use letters, digits, '.', '_' and '-' "
                "(not starting with '.' or '-', at most 200 characters)"
            )
        return self.folder / f"{key}.safetensors", self.folder / f"{key}.json"

    def get(
        self,
        encoder: nn.Module,
        images: ImageSource,
        *,
        key: str,
        ids: Sequence[str] | None = None,
        batch_size: int = 32,
    ) -> torch.Tensor:
        """The encoder's (n, out_dim) embeddings of ``images``, from the cache if valid.

        ``images`` is a tensor (n, channels, *spatial) or a callable returning one or an
        iterable of batches (only called when the embeddings must be computed, e.g.
        ``lambda: image_batches(paths, spatial_size=(64, 64))``). ``ids`` name the rows,
        one per image; they are required with a callable, and with a tensor default to a
        hash of its contents.
        """
        tensor_path, meta_path = self.paths(key)
        batch_size = check_positive(batch_size, key="batch_size")
        if ids is None:
            if not isinstance(images, torch.Tensor):
                raise InputError(
                    "embedding cache: pass ids=[...] (one per image) when images is a "
                    "callable; they identify the cached rows"
                )
            ids = [_tensor_hash(images)]
            expected_rows: int | None = int(images.shape[0])
        else:
            ids = [str(i) for i in ids]
            expected_rows = len(ids)
            if isinstance(images, torch.Tensor) and images.shape[0] != expected_rows:
                raise InputError(
                    f"embedding cache {key!r}: {expected_rows} ids but {images.shape[0]} "
                    "images; give one id per image"
                )
        w_hash = weights_hash(encoder)
        i_hash = _ids_hash(ids)
        cached = self._load(tensor_path, meta_path, w_hash, i_hash, expected_rows)
        if cached is not None:
            self.hits += 1
            return cached
        emb = _encode(encoder, images, batch_size=batch_size)
        if expected_rows is not None and emb.shape[0] != expected_rows:
            raise InputError(
                f"embedding cache {key!r}: {len(ids)} ids but {emb.shape[0]} images; "
                "give one id per image"
            )
        self._store(key, emb, encoder, w_hash, ids, i_hash)
        self.computed += 1
        return emb

    def _load(
        self,
        tensor_path: Path,
        meta_path: Path,
        w_hash: str,
        i_hash: str,
        rows: int | None,
    ) -> torch.Tensor | None:
        from safetensors import SafetensorError, safe_open

        if not (tensor_path.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if (
                meta.get("format") != _FORMAT
                or meta.get("weights_sha256") != w_hash
                or meta.get("ids_sha256") != i_hash
            ):
                return None
            with safe_open(str(tensor_path), framework="pt") as f:
                inner = f.metadata() or {}
                if inner.get("weights_sha256") != w_hash or inner.get("ids_sha256") != i_hash:
                    return None
                emb: torch.Tensor = f.get_tensor("embeddings")
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
            return None  # unreadable or damaged: recompute
        if emb.dim() != 2 or (rows is not None and emb.shape[0] != rows):
            return None
        return emb

    def _store(
        self,
        key: str,
        emb: torch.Tensor,
        encoder: nn.Module,
        w_hash: str,
        ids: Sequence[str],
        i_hash: str,
    ) -> None:
        from safetensors.torch import save_file

        tensor_path, meta_path = self.paths(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        hashes = {"weights_sha256": w_hash, "ids_sha256": i_hash}
        with atomic_file(tensor_path) as tmp:
            save_file({"embeddings": emb.contiguous()}, str(tmp), metadata=hashes)
        cls = type(encoder)
        get_config = getattr(encoder, "get_config", None)
        meta = {
            "format": _FORMAT,
            "key": key,
            "encoder": f"{cls.__module__}.{cls.__qualname__}",
            "config": get_config() if callable(get_config) else None,
            **hashes,
            "shape": list(emb.shape),
            "ids": list(ids),
        }
        with atomic_file(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=1) + "\n")


def _encode(encoder: nn.Module, images: ImageSource, *, batch_size: int) -> torch.Tensor:
    """Run ``encoder`` in eval mode without gradients; its training mode is restored."""
    source = images() if callable(images) and not isinstance(images, torch.Tensor) else images
    batches: Iterable[torch.Tensor]
    if isinstance(source, torch.Tensor):
        batches = (source[i : i + batch_size] for i in range(0, source.shape[0], batch_size))
    else:
        batches = source
    was_training = encoder.training
    encoder.eval()
    out: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for batch in batches:
                out.append(encoder(batch).detach().float().cpu())
    finally:
        encoder.train(was_training)
    if not out:
        width = int(getattr(encoder, "out_dim", 0))
        return torch.zeros(0, width)
    emb = torch.cat(out)
    if not torch.isfinite(emb).all():
        raise InputError("embedding cache: the encoder produced NaN or Inf; nothing was stored")
    return emb


def cached_embeddings(
    encoder: nn.Module,
    images: ImageSource,
    *,
    key: str,
    cache_dir: str | Path,
    ids: Sequence[str] | None = None,
    batch_size: int = 32,
) -> torch.Tensor:
    """``EmbeddingCache(cache_dir).get(encoder, images, key=key, ids=ids)``."""
    return EmbeddingCache(cache_dir).get(encoder, images, key=key, ids=ids, batch_size=batch_size)
