"""Modality encoders: the conformance check over every registered encoder, and specifics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medweave.errors import InputError
from medweave.models.encoders import (
    ENCODERS,
    EmbeddingCache,
    Encoder,
    ImageCNNEncoder,
    InputSpec,
    MLPEncoder,
    build_encoder,
    cached_embeddings,
    image_batches,
)
from medweave.models.encoders.omics import UNGROUPED, OmicsMLPEncoder
from medweave.testing.encoders import (
    KIND_SPECS,
    check_encoder,
    check_encoder_class,
    default_params,
    default_spec,
    example_batch,
)

CANONICAL = {"mlp", "omics_mlp", "image_cnn", "gru", "transformer", "passthrough"}


def test_canonical_encoders_are_registered() -> None:
    assert set(ENCODERS.names()) >= CANONICAL
    assert all(ENCODERS.describe()[name] for name in CANONICAL)


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_registered_encoder_conforms(name: str) -> None:
    enc = check_encoder(name, default_spec(name), **default_params(name))
    assert enc.out_dim == 8


@pytest.mark.parametrize(
    ("name", "spec", "params"),
    [
        ("mlp", KIND_SPECS["exposure"], {"hidden": [], "norm": "none"}),
        ("mlp", KIND_SPECS["tabular"], {"hidden": [8, 8], "activation": "relu", "dropout": 0}),
        ("mlp", KIND_SPECS["tabular"], {"categorical": {"0": 2, "3": 4}, "embedding_dim": 3}),
        ("omics_mlp", KIND_SPECS["omics"], {"hidden": [8], "gene_sets": False}),
        ("omics_mlp", KIND_SPECS["omics"], {"gene_sets": True, "include_ungrouped": False}),
        ("image_cnn", InputSpec("image", (2, 16, 16, 16)), {"channels": [4, 8]}),
        ("image_cnn", InputSpec("image", (3, 32, 32)), {"arch": "resnet10"}),
        ("image_cnn", InputSpec("image", (1, 32, 32)), {"channels": [8], "freeze": True}),
        ("image_cnn", InputSpec("image", (1, 32, 32)), {"channels": [8], "norm": "batch"}),
        ("image_cnn", InputSpec("image", (1, 32, 32)), {"channels": [8], "norm": "none"}),
        ("image_cnn", InputSpec("image", (1, 32, 32)), {"arch": "resnet10", "norm": "none"}),
        ("image_cnn", InputSpec("image", (1, 16, 16, 16)), {"channels": [4], "augment": True}),
        (
            "image_cnn",
            InputSpec("image", (1, 16, 16)),
            {"channels": [4], "augment": "dihedral", "tta": True},
        ),
        ("gru", KIND_SPECS["sequence"], {"num_layers": 2, "bidirectional": True}),
        ("gru", KIND_SPECS["sequence"], {"value_transform": "none", "hidden_size": 8}),
        ("transformer", KIND_SPECS["sequence"], {"d_model": 8, "n_heads": 2, "ff_dim": 16}),
        ("passthrough", KIND_SPECS["embedding"], {"out_dim": 6}),
        ("passthrough", KIND_SPECS["tabular"], {"out_dim": 3}),
    ],
)
def test_encoder_variants_conform(name: str, spec: InputSpec, params: dict[str, Any]) -> None:
    check_encoder(name, spec, **{"out_dim": 8, **params})


# --- the check itself catches broken encoders -----------------------------------------------


class _Flat(Encoder):
    def __init__(self, spec: InputSpec, *, out_dim: int = 4) -> None:
        Encoder.__init__(self, spec, out_dim=out_dim)
        self.lin = nn.Linear(spec.shape[0], out_dim)

    def get_config(self) -> dict[str, Any]:
        return {"out_dim": self.out_dim}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.lin(x)
        return out


class _Centering(_Flat):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x - x.mean(dim=0, keepdim=True))


class _NormalisesRows(_Flat):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x / x.norm(dim=1, keepdim=True))


class _DeadParameter(_Flat):
    def __init__(self, spec: InputSpec, *, out_dim: int = 4) -> None:
        super().__init__(spec, out_dim=out_dim)
        self.unused = nn.Linear(2, 2)


class _ForgetsConfig(_Flat):
    def __init__(self, spec: InputSpec, *, out_dim: int = 4, width: int = 3) -> None:
        super().__init__(spec, out_dim=out_dim)
        self.width = width


class _WrongShape(_Flat):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, :-1]


class _BatchNormTrain(_Flat):
    def __init__(self, spec: InputSpec, *, out_dim: int = 4) -> None:
        super().__init__(spec, out_dim=out_dim)
        self.bn = nn.BatchNorm1d(spec.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.bn(x))


class _Unseeded(_Flat):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.from_numpy(np.random.default_rng().normal(size=x.shape)).float()
        return super().forward(x + noise * float(self.training))


class _ReadsPadding(Encoder):
    def __init__(self, spec: InputSpec, *, out_dim: int = 4) -> None:
        Encoder.__init__(self, spec, out_dim=out_dim)
        self.lin = nn.Linear(1, out_dim)

    def get_config(self) -> dict[str, Any]:
        return {"out_dim": self.out_dim}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out: torch.Tensor = self.lin(batch["values"].mean(dim=1, keepdim=True))
        return out


@pytest.mark.parametrize(
    ("cls", "kind", "message"),
    [
        (_Flat, "tabular", None),
        (_Centering, "tabular", "depend on other rows"),
        (_NormalisesRows, "tabular", "NaN or Inf|finite"),
        (_DeadParameter, "tabular", r"gradient reaches trainable parameter\(s\) unused"),
        (_ForgetsConfig, "tabular", r"missing \['width'\]"),
        (_WrongShape, "tabular", "output shape"),
        (_BatchNormTrain, "tabular", "batch of one fails in train mode"),
        (_Unseeded, "tabular", "same torch seed"),
        (_ReadsPadding, "sequence", "padded positions"),
    ],
)
def test_check_catches_broken_encoders(cls: type[Encoder], kind: str, message: str | None) -> None:
    if message is None:
        check_encoder_class(cls, KIND_SPECS[kind], out_dim=4)
    else:
        with pytest.raises(AssertionError, match=message):
            check_encoder_class(cls, KIND_SPECS[kind], out_dim=4)


def test_check_reports_params_not_stored() -> None:
    class Ignores(_Flat):
        def __init__(self, spec: InputSpec, *, out_dim: int = 4) -> None:
            super().__init__(spec, out_dim=4)

    with pytest.raises(AssertionError, match="out_dim is 4 but out_dim=5"):
        check_encoder_class(Ignores, KIND_SPECS["tabular"], out_dim=5)


def test_default_spec_for_unknown_encoder_is_an_error() -> None:
    with pytest.raises(InputError, match="unknown encoder"):
        default_spec("no-such-encoder")


# --- input validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "spec", "params", "message"),
    [
        ("mlp", KIND_SPECS["image"], {}, "takes tabular"),
        ("image_cnn", KIND_SPECS["tabular"], {}, "takes image"),
        ("gru", InputSpec("sequence", (5,), vocab_size=1), {}, "vocab_size"),
        ("image_cnn", KIND_SPECS["image"], {"arch": "vgg"}, "unknown arch"),
        ("image_cnn", InputSpec("image", (1, 16, 16)), {"arch": "densenet121"}, "at least 32"),
        ("mlp", KIND_SPECS["tabular"], {"categorical": {"9": 3}}, "outside the 6"),
        ("mlp", KIND_SPECS["tabular"], {"activation": "tanhh"}, "unknown activation"),
        ("omics_mlp", KIND_SPECS["tabular"], {"gene_sets": True}, "feature_groups is empty"),
        ("transformer", KIND_SPECS["sequence"], {"d_model": 10, "n_heads": 4}, "multiple"),
    ],
)
def test_bad_options_are_input_errors(
    name: str, spec: InputSpec, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        build_encoder(name, spec, **params)


# --- tabular ---------------------------------------------------------------------------------


def test_mlp_categorical_columns_are_embedded() -> None:
    torch.manual_seed(0)
    enc = build_encoder("mlp", KIND_SPECS["tabular"], out_dim=4, categorical={2: 3}).eval()
    assert isinstance(enc, MLPEncoder)
    assert enc.get_config()["categorical"] == {"2": 3}
    x = torch.zeros(6, 6)
    x[:, 2] = torch.tensor([0.0, 1.0, 2.0, 3.0, 0.5, float("nan")])
    with torch.no_grad():
        out = enc(x)
    assert torch.isfinite(out).all()
    # the valid categories differ; out of range, fractional and NaN share "unknown"
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    assert torch.allclose(out[3], out[4], atol=1e-6)
    assert torch.allclose(out[4], out[5], atol=1e-6)
    assert not torch.allclose(out[3], out[0])


# --- omics: gene-set structure ---------------------------------------------------------------


def _omics(*, include_ungrouped: bool) -> OmicsMLPEncoder:
    torch.manual_seed(0)
    enc = build_encoder(
        "omics_mlp",
        KIND_SPECS["omics"],
        out_dim=4,
        gene_sets=True,
        group_dim=3,
        include_ungrouped=include_ungrouped,
    )
    assert isinstance(enc, OmicsMLPEncoder)
    return enc.eval()


def test_gene_set_layer_connects_each_set_only_to_its_genes() -> None:
    enc = _omics(include_ungrouped=True)
    groups = KIND_SPECS["omics"].feature_groups
    assert enc.group_names == [*sorted(groups), UNGROUPED]
    assert enc.groups is not None
    jac = torch.autograd.functional.jacobian(enc.groups, torch.randn(1, 12))[0, :, 0, :]
    assert jac.shape == (len(enc.group_names) * 3, 12)
    members = [*(set(groups[g]) for g in sorted(groups)), {9, 10, 11}]
    for g, allowed in enumerate(members):
        rows = jac[g * 3 : (g + 1) * 3]
        for feature in range(12):
            connected = bool((rows[:, feature] != 0).any())
            assert connected == (feature in allowed), (enc.group_names[g], feature)


def test_genes_outside_every_set_are_dropped_only_when_asked() -> None:
    x = torch.randn(3, 12)
    y = x.clone()
    y[:, 9:] = torch.randn(3, 3) * 5  # genes 9-11 are in no set
    with torch.no_grad():
        dropped = _omics(include_ungrouped=False)
        assert torch.equal(dropped(x), dropped(y))
        kept = _omics(include_ungrouped=True)
        assert not torch.allclose(kept(x), kept(y))
        z = x.clone()
        z[:, 0] += 3.0  # gene 0 is in set_a
        assert not torch.allclose(dropped(x), dropped(z))


def test_gene_set_index_out_of_range_is_an_error() -> None:
    spec = InputSpec("omics", (4,), feature_groups={"s": [1, 7]})
    with pytest.raises(InputError, match="gene set 's' has feature index 7"):
        build_encoder("omics_mlp", spec, gene_sets=True)


# --- images ----------------------------------------------------------------------------------


def test_image_3d_path() -> None:
    spec = InputSpec("image", (1, 16, 16, 16))
    torch.manual_seed(0)
    small = build_encoder("image_cnn", spec, out_dim=5, channels=[4, 8]).eval()
    convs = [m for m in small.modules() if isinstance(m, nn.Conv3d)]
    assert convs and not any(isinstance(m, nn.Conv2d) for m in small.modules())
    resnet = build_encoder("image_cnn", spec, out_dim=5, arch="resnet10").eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        for enc in (small, resnet):
            out = enc(x)
            assert out.shape == (2, 5) and torch.isfinite(out).all()
    with pytest.raises(InputError, match="expected images"):
        small(torch.randn(2, 1, 16, 16))


def test_image_augmentation_flips_in_training_only() -> None:
    spec = InputSpec("image", (1, 16, 16))
    torch.manual_seed(0)
    plain = build_encoder("image_cnn", spec, out_dim=4, channels=[4])
    torch.manual_seed(0)
    aug = build_encoder("image_cnn", spec, out_dim=4, channels=[4], augment=True)
    x = torch.randn(64, 1, 16, 16)
    with torch.no_grad():
        aug.eval()
        plain.eval()
        torch.testing.assert_close(aug(x), plain(x))  # never at inference
        aug.train()
        torch.manual_seed(1)
        a = aug(x)
        torch.manual_seed(1)
        b = aug(x)
        torch.testing.assert_close(a, b)  # seeded: reproducible
        plain.train()
        flipped_rows = (a - plain(x)).abs().amax(dim=1) > 1e-6
    # each axis flipped with probability 1/2: about 3 in 4 images change
    assert 30 < int(flipped_rows.sum()) < 64
    assert aug.get_config()["augment"] is True


@pytest.mark.parametrize(("augment", "views"), [("flips", 4), ("dihedral", 8)])
def test_test_time_augmentation_averages_over_every_transform(augment: str, views: int) -> None:
    """With tta the embedding is the same for an image turned or mirrored by any of the
    transforms training draws from — and only then: without it, it is not."""
    spec = InputSpec("image", (1, 16, 16))
    torch.manual_seed(0)
    enc = build_encoder("image_cnn", spec, out_dim=4, channels=[4], augment=augment, tta=True)
    torch.manual_seed(0)
    plain = build_encoder("image_cnn", spec, out_dim=4, channels=[4], augment=augment)
    x = torch.randn(5, 1, 16, 16)
    turned = [x.flip(2), x.flip(3), x.flip(2).flip(3)]
    if augment == "dihedral":
        turned += [x.transpose(2, 3), torch.rot90(x, 1, (2, 3)), torch.rot90(x, 3, (2, 3))]
    else:
        assert not torch.allclose(enc.eval()(x.transpose(2, 3)), enc(x), atol=1e-4)
    with torch.no_grad():
        enc.eval()
        plain.eval()
        y = enc(x)
        for t in turned:
            torch.testing.assert_close(enc(t), y, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(plain(x.flip(3)), plain(x), atol=1e-4)
        # the mean of the plain network over the transforms, computed one by one
        mean = torch.stack([plain(v) for v in _views(x, augment)]).mean(0)
        torch.testing.assert_close(y, mean, atol=1e-5, rtol=1e-5)
    assert len(_views(x, augment)) == views


def _views(x: torch.Tensor, augment: str) -> list[torch.Tensor]:
    flips = [x, x.flip(2), x.flip(3), x.flip(2).flip(3)]
    return flips + ([v.transpose(2, 3) for v in flips] if augment == "dihedral" else [])


def test_image_augmentation_errors_name_the_fix() -> None:
    with pytest.raises(InputError, match="'dihedral' swaps the last two image axes"):
        build_encoder("image_cnn", InputSpec("image", (1, 16, 24)), augment="dihedral")
    with pytest.raises(InputError, match="tta averages over the transforms of augment"):
        build_encoder("image_cnn", InputSpec("image", (1, 16, 16)), tta=True)
    with pytest.raises(InputError, match="augment='rotate'; expected one of"):
        build_encoder("image_cnn", InputSpec("image", (1, 16, 16)), augment="rotate")


def test_frozen_image_encoder_stays_fixed() -> None:
    enc = build_encoder("image_cnn", KIND_SPECS["image"], out_dim=4, channels=[8], freeze=True)
    assert isinstance(enc, ImageCNNEncoder)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert enc.training and not enc.net.training
    assert not enc(torch.randn(2, 1, 32, 32)).requires_grad


# --- embedding cache -------------------------------------------------------------------------


class _Counting:
    """Counts the encoder's forward calls."""

    def __init__(self, enc: nn.Module) -> None:
        self.calls = 0
        enc.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1


@pytest.fixture
def frozen() -> ImageCNNEncoder:
    torch.manual_seed(0)
    enc = build_encoder("image_cnn", KIND_SPECS["image"], out_dim=6, channels=[8], freeze=True)
    assert isinstance(enc, ImageCNNEncoder)
    return enc


def test_embedding_cache_reuses_and_invalidates(frozen: ImageCNNEncoder, tmp_path: Path) -> None:
    calls = _Counting(frozen)
    images = torch.randn(5, 1, 32, 32)
    ids = [f"p{i}" for i in range(5)]
    loads = 0

    def loader() -> torch.Tensor:
        nonlocal loads
        loads += 1
        return images

    first = cached_embeddings(frozen, loader, key="ct", cache_dir=tmp_path, ids=ids)
    assert first.shape == (5, 6) and calls.calls > 0 and loads == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.json", "ct.safetensors"]
    meta = json.loads((tmp_path / "ct.json").read_text())
    assert meta["ids"] == ids and len(meta["weights_sha256"]) == 64
    assert meta["config"] == frozen.get_config()
    with torch.no_grad():
        assert torch.allclose(first, frozen.eval()(images), atol=1e-6)

    # same key, weights and ids: loaded, neither images nor encoder touched
    calls.calls = 0
    cache = EmbeddingCache(tmp_path)
    again = cache.get(frozen, loader, key="ct", ids=ids)
    assert torch.equal(again, first) and calls.calls == 0 and loads == 1
    assert (cache.hits, cache.computed) == (1, 0)

    # other ids (or order): recomputed
    cache.get(frozen, loader, key="ct", ids=ids[::-1])
    assert cache.computed == 1 and loads == 2
    assert json.loads((tmp_path / "ct.json").read_text())["ids"] == ids[::-1]

    # other weights: recomputed, with the new weights' embeddings
    with torch.no_grad():
        next(frozen.parameters()).add_(0.5)
    changed = cache.get(frozen, loader, key="ct", ids=ids[::-1])
    assert cache.computed == 2 and not torch.allclose(changed, first)
    assert cache.get(frozen, loader, key="ct", ids=ids[::-1]).equal(changed)
    assert cache.hits == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.json", "ct.safetensors"]


def test_embedding_cache_recomputes_damaged_files(frozen: ImageCNNEncoder, tmp_path: Path) -> None:
    images = torch.randn(3, 1, 32, 32)
    cache = EmbeddingCache(tmp_path)
    first = cache.get(frozen, images, key="k")  # ids default to a hash of the images
    (tmp_path / "k.safetensors").write_bytes(b"not a safetensors file")
    assert torch.allclose(cache.get(frozen, images, key="k"), first)
    assert cache.computed == 2
    # a metadata file that matches but a tensor file from other weights: not trusted
    meta = (tmp_path / "k.json").read_text()
    other = build_encoder("image_cnn", KIND_SPECS["image"], out_dim=6, channels=[8], freeze=True)
    cache.get(other, images, key="k")
    (tmp_path / "k.json").write_text(meta)
    assert torch.allclose(cache.get(frozen, images, key="k"), first)
    assert cache.computed == 4
    # other image contents under the same key: recomputed
    cache.get(frozen, images + 1, key="k")
    assert cache.computed == 5


def test_embedding_cache_writes_nothing_on_failure(frozen: ImageCNNEncoder, tmp_path: Path) -> None:
    def broken() -> Iterator[torch.Tensor]:
        yield torch.randn(2, 1, 32, 32)
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        cached_embeddings(frozen, broken, key="x", cache_dir=tmp_path, ids=["a", "b", "c"])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="pass ids"):
        cached_embeddings(frozen, broken, key="x", cache_dir=tmp_path)
    with pytest.raises(InputError, match="2 ids but 3 images"):
        cached_embeddings(
            frozen, torch.randn(3, 1, 32, 32), key="x", cache_dir=tmp_path, ids=["a", "b"]
        )
    with pytest.raises(InputError, match="cache key"):
        cached_embeddings(frozen, torch.randn(1, 1, 32, 32), key="../x", cache_dir=tmp_path)


def test_embedding_cache_over_image_files(frozen: ImageCNNEncoder, tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 40), (32, 48), (64, 64)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(path)
        paths.append(path)
    ids = [p.stem for p in paths]

    def load() -> Iterator[torch.Tensor]:
        return image_batches(paths, batch_size=2, spatial_size=(32, 32))

    emb = cached_embeddings(frozen, load, key="png", cache_dir=tmp_path / "cache", ids=ids)
    assert emb.shape == (3, 6) and torch.isfinite(emb).all()
    direct = torch.cat(list(load()))
    with torch.no_grad():
        assert torch.allclose(emb, frozen.eval()(direct), atol=1e-5)
    with pytest.raises(InputError, match="differ in shape"):
        list(image_batches(paths, batch_size=3))


# --- sequences -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gru", "transformer"])
def test_sequence_encoders_ignore_padding(name: str) -> None:
    spec = KIND_SPECS["sequence"]
    torch.manual_seed(0)
    enc = build_encoder(name, spec, **default_params(name)).eval()
    batch = example_batch(spec, 6, seed=3)
    assert isinstance(batch, dict)
    pad = ~batch["mask"]
    assert pad.any() and (~pad).any()
    wild = {
        "codes": torch.where(pad, torch.full_like(batch["codes"], 10**6), batch["codes"]),
        "values": torch.where(pad, torch.full_like(batch["values"], float("nan")), batch["values"]),
        "days": torch.where(pad, torch.full_like(batch["days"], float("inf")), batch["days"]),
        "mask": batch["mask"],
    }
    # a longer padded tail changes nothing either
    longer = {k: torch.cat([v, torch.zeros_like(v[:, :3])], dim=1) for k, v in batch.items()}
    with torch.no_grad():
        out = enc(batch)
        assert torch.allclose(enc(wild), out, atol=1e-6)
        assert torch.allclose(enc(longer), out, atol=1e-5)
        # while the real events do matter
        real = {**batch, "codes": torch.where(pad, batch["codes"], batch["codes"] % 10 + 1)}
        assert not torch.allclose(enc(real)[0], out[0])
        # a patient without events gets the same finite "no history" output
        empty = ~batch["mask"].any(dim=1)
        assert empty[-1] and torch.isfinite(out).all()


def test_gru_orders_events_by_time() -> None:
    spec = KIND_SPECS["sequence"]
    torch.manual_seed(0)
    enc = build_encoder("gru", spec, **default_params("gru")).eval()
    batch = example_batch(spec, 2, seed=4)
    assert isinstance(batch, dict)
    perm = torch.randperm(spec.shape[0])
    shuffled = {k: v[:, perm] for k, v in batch.items()}
    with torch.no_grad():
        assert torch.allclose(enc(shuffled), enc(batch), atol=1e-6)
        later = {**batch, "days": batch["days"].flip(1)}
        assert not torch.allclose(enc(later)[0], enc(batch)[0])


# --- passthrough -----------------------------------------------------------------------------


def test_passthrough_is_identity_or_a_projection() -> None:
    spec = KIND_SPECS["embedding"]
    x = torch.randn(4, 6)
    identity = build_encoder("passthrough", spec, out_dim=6)
    assert not list(identity.parameters()) and torch.equal(identity(x), x)
    proj = build_encoder("passthrough", spec, out_dim=2)
    assert [p.shape for p in proj.parameters()] == [torch.Size([2, 6]), torch.Size([2])]
    assert proj(x).shape == (4, 2)
