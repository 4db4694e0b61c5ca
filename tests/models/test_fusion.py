"""Fusion strategies, modality dropout, the learned imputer and the conformance check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medweave.errors import InputError
from medweave.models.fusion import (
    FUSIONS,
    AttentionFusion,
    ConcatFusion,
    EarlyFusion,
    Fusion,
    GatedFusion,
    LateFusion,
    LearnedImputer,
    ModalityDropout,
    TensorFusion,
    build_fusion,
)
from medweave.testing.fusion import check_fusion

DIMS = {"ehr": 11, "imaging": 7, "omics": 5}
BUILTIN = {"attention", "concat", "early", "gated", "late", "tensor"}


def _batch(
    dims: dict[str, int], patterns: list[list[bool]], *, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    present = torch.tensor(patterns)
    emb = {m: torch.randn(len(patterns), d, generator=gen) for m, d in dims.items()}
    return emb, {m: present[:, j].clone() for j, m in enumerate(dims)}


ALL_PATTERNS = [[a, b, c] for a in (False, True) for b in (False, True) for c in (False, True)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add contention (several times slower on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the conformance check over every registered fusion ---------------------------------


def test_builtin_fusions_are_registered() -> None:
    assert set(FUSIONS.names()) >= BUILTIN
    assert all(FUSIONS.describe()[name] for name in BUILTIN)
    with pytest.raises(InputError, match="did you mean 'gated'"):
        build_fusion("gatde", DIMS)


@pytest.mark.parametrize("name", FUSIONS.names())
def test_registered_fusion_conforms_small(name: str) -> None:
    check_fusion(name, DIMS, out_dim=6)


@pytest.mark.parametrize("name", FUSIONS.names())
def test_registered_fusion_conforms_defaults_one_modality(name: str) -> None:
    check_fusion(name, {"ehr": 9})


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("gated", {"gate": "softmax", "out_dim": 5}),
        ("attention", {"d_model": 8, "heads": 2, "layers": 1, "ff_dim": 16, "out_dim": 3}),
        ("early", {"layers": 1, "dropout": 0.0}),
        ("late", {"layers": 1}),
        ("tensor", {"rank": 1, "hidden": 3}),
        ("concat", {"proj_dim": 4, "layers": 3}),
    ],
)
def test_fusion_options_conform(name: str, params: dict[str, Any]) -> None:
    check_fusion(name, DIMS, **params)


def test_fusion_with_many_modalities_conforms() -> None:
    dims = {f"m{i}": 2 + i for i in range(7)}  # more than 6: sampled mask patterns
    check_fusion("attention", dims, d_model=8, heads=2, layers=1, out_dim=4)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("early", {"hidden": 0}, "hidden=0"),
        ("attention", {"d_model": 30, "heads": 4}, "not divisible"),
        ("gated", {"gate": "relu"}, "gate='relu'"),
        ("tensor", {"rank": 2.5}, "rank=2.5"),
        ("late", {"dropout": 1.0}, "dropout=1.0"),
        ("concat", {"out_dim": True}, "out_dim=True"),
    ],
)
def test_bad_options_are_input_errors(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        build_fusion(name, DIMS, **params)


def test_bad_in_dims_and_batches_are_errors() -> None:
    with pytest.raises(InputError, match="non-empty"):
        build_fusion("late", {})
    with pytest.raises(InputError, match="positive integer"):
        build_fusion("late", {"ehr": 0})
    fusion = build_fusion("late", DIMS)
    emb, masks = _batch(DIMS, ALL_PATTERNS)
    with pytest.raises(ValueError, match="expects modalities"):
        fusion({m: emb[m] for m in ("ehr", "omics")}, masks)
    with pytest.raises(ValueError, match="shape"):
        fusion({**emb, "omics": emb["omics"][:, :3]}, masks)


# -- the check catches broken strategies --------------------------------------------------


class _Reference(Fusion):
    """A minimal correct fusion: learned missing vectors and indicators, then a linear map.

    The broken variants below each change one thing; the reference itself passes, so each
    failure is due to that one defect.
    """

    def __init__(self, in_dims: dict[str, int], *, out_dim: int = 4, scale: float = 1.0) -> None:
        Fusion.__init__(self, in_dims, out_dim=out_dim)
        self.scale = scale
        self.missing = nn.ParameterList([nn.Parameter(torch.randn(d)) for d in in_dims.values()])
        self.linear = nn.Linear(sum(in_dims.values()) + len(in_dims), out_dim)

    def get_config(self) -> dict[str, Any]:
        return {"out_dim": self.out_dim, "scale": self.scale}

    def features(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        blocks = [
            torch.where(masks[m][:, None], embeddings[m], fill)
            for m, fill in zip(self.modalities, self.missing, strict=True)
        ]
        blocks += [masks[m][:, None].float() for m in self.modalities]
        return torch.cat(blocks, dim=1)

    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return self.scale * self.linear(self.features(embeddings, masks))


class _IgnoresMask(_Reference):
    """Assumes missing rows were zero-filled upstream and ignores the mask."""

    def features(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        n = embeddings[self.modalities[0]].shape[0]
        blocks = [embeddings[m] for m in self.modalities]
        blocks += [fill.mean() * torch.ones(n, 1) for fill in self.missing]  # same for all
        return torch.cat(blocks, dim=1)


class _ZeroFills(_Reference):
    """Zero-fills missing rows with the mask (masked rows cannot leak) but no indicator."""

    def features(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        n = embeddings[self.modalities[0]].shape[0]
        blocks = [embeddings[m] * masks[m][:, None].float() for m in self.modalities]
        blocks += [fill.mean() * torch.ones(n, 1) for fill in self.missing]  # same for all
        return torch.cat(blocks, dim=1)


class _NaNWhenEmpty(_Reference):
    """Divides by the number of present modalities: NaN for a patient with none."""

    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        count = torch.stack([masks[m] for m in self.modalities], dim=1).sum(1, keepdim=True)
        return super().forward(embeddings, masks) / count


class _WrongWidth(_Reference):
    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return super().forward(embeddings, masks)[:, :-1]


class _BatchMean(_Reference):
    """Adds the batch mean: each row depends on the other patients of the batch."""

    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        out = super().forward(embeddings, masks)
        return out + out.mean(dim=0, keepdim=True)


class _UnusedParameter(_Reference):
    def __init__(self, in_dims: dict[str, int], *, out_dim: int = 4, scale: float = 1.0) -> None:
        super().__init__(in_dims, out_dim=out_dim, scale=scale)
        self.forgotten = nn.Linear(3, 3)


class _DropsAModality(_Reference):
    """Never looks at the last modality's embedding (only at its indicator)."""

    def features(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        last = self.modalities[-1]
        dummy = torch.zeros_like(embeddings[last]) + self.missing[-1]
        return super().features({**embeddings, last: dummy}, masks)


class _BatchNorm(_Reference):
    def __init__(self, in_dims: dict[str, int], *, out_dim: int = 4, scale: float = 1.0) -> None:
        super().__init__(in_dims, out_dim=out_dim, scale=scale)
        self.norm = nn.BatchNorm1d(out_dim)

    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return self.norm(super().forward(embeddings, masks))


class _UnseededInit(_Reference):
    def __init__(self, in_dims: dict[str, int], *, out_dim: int = 4, scale: float = 1.0) -> None:
        super().__init__(in_dims, out_dim=out_dim, scale=scale)
        noise = np.random.default_rng().normal(size=out_dim)  # not torch's seeded RNG
        self.offset = nn.Parameter(torch.as_tensor(noise, dtype=torch.float32))

    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return super().forward(embeddings, masks) + self.offset


class _StateOutsideStateDict(_Reference):
    def __init__(self, in_dims: dict[str, int], *, out_dim: int = 4, scale: float = 1.0) -> None:
        super().__init__(in_dims, out_dim=out_dim, scale=scale)
        self.shift = torch.randn(out_dim)  # a plain attribute: not saved

    def forward(
        self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return super().forward(embeddings, masks) + self.shift


class _ForgetfulConfig(_Reference):
    def get_config(self) -> dict[str, Any]:
        return {"out_dim": self.out_dim}


def test_reference_fusion_passes() -> None:
    check_fusion(_Reference, DIMS, out_dim=4, scale=2.0)


@pytest.mark.parametrize(
    ("cls", "check"),
    [
        (_IgnoresMask, "mask invariance"),
        (_ZeroFills, "missing is not zero"),
        (_NaNWhenEmpty, "output: non-finite output .* no modality present"),
        (_WrongWidth, "output: evaluation mode returned"),
        (_BatchMean, "row independence"),
        (_UnusedParameter, "gradients: parameter 'forgotten.weight'"),
        (_DropsAModality, "present modalities matter: changing the embedding of 'omics'"),
        (_BatchNorm, "batch of one"),
        (_UnseededInit, "determinism"),
        (_StateOutsideStateDict, "state_dict round trip"),
        (_ForgetfulConfig, "get_config round trip: .*scale=2.0"),
    ],
)
def test_check_catches_broken_fusion(cls: type[Fusion], check: str) -> None:
    with pytest.raises(AssertionError, match=check):
        check_fusion(cls, DIMS, out_dim=4, scale=2.0)


def test_check_by_name_catches_a_registered_zero_filling_fusion() -> None:
    FUSIONS.register("zero-filling-test", description="broken on purpose")(_ZeroFills)
    try:
        with pytest.raises(AssertionError, match=r"'zero-filling-test'.*treated as observed zeros"):
            check_fusion("zero-filling-test", DIMS, out_dim=4)
    finally:
        del FUSIONS._entries["zero-filling-test"]


def test_check_leaves_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check_fusion("early", {"a": 2}, out_dim=2)
    assert torch.equal(torch.rand(3), expected)


# -- strategy-specific behaviour ----------------------------------------------------------


def test_late_weights_are_softmax_over_present_modalities() -> None:
    fusion = LateFusion(DIMS, out_dim=5).eval()
    with torch.no_grad():
        fusion.logits.copy_(torch.tensor([0.3, -1.0, 2.0]))
    emb, masks = _batch(DIMS, ALL_PATTERNS)
    present = torch.stack([masks[m] for m in DIMS], dim=1)
    weights = fusion.modality_weights(present)
    for row, pattern in enumerate(ALL_PATTERNS):
        expected = torch.zeros(3)
        if any(pattern):
            idx = [j for j, p in enumerate(pattern) if p]
            expected[idx] = torch.softmax(fusion.logits.detach()[idx], dim=0)
        torch.testing.assert_close(weights[row], expected, rtol=0, atol=1e-7)
    with torch.no_grad():
        out = fusion(emb, masks)
        heads = [head(emb[m]) for m, head in zip(DIMS, fusion.heads, strict=True)]
    for row, pattern in enumerate(ALL_PATTERNS):
        if sum(pattern) == 1:  # one present modality: exactly that head's output
            assert torch.equal(out[row], heads[pattern.index(True)][row])
        elif not any(pattern):
            assert torch.equal(out[row], fusion.nothing.detach())
        else:
            mix = sum(weights[row, j] * heads[j][row] for j in range(3))
            torch.testing.assert_close(out[row], mix)


def test_attention_excludes_missing_tokens() -> None:
    fusion = AttentionFusion(DIMS, out_dim=4, d_model=16, heads=2, layers=2).eval()
    emb, masks = _batch(DIMS, ALL_PATTERNS)
    with torch.no_grad():
        out = fusion(emb, masks)
        seq, padding = fusion.tokens(emb, masks)
        assert not padding[:, 0].any()  # [CLS] is never masked
        for row, pattern in enumerate(ALL_PATTERNS):
            assert padding[row, 1:].tolist() == [not p for p in pattern]
            keep = [0] + [j + 1 for j, p in enumerate(pattern) if p]
            alone = fusion.encoder(seq[row : row + 1, keep])  # missing tokens removed
            torch.testing.assert_close(out[row], fusion.head(alone[0, 0]), rtol=1e-5, atol=1e-5)


def _naive_tensor_fusion(
    fusion: TensorFusion, emb: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The full (unfactorised) tensor fusion: outer product of [1; z_m], full weight tensor."""
    f1, f2, f3 = (f.detach() for f in fusion.factors)
    w = fusion.rank_weights.detach()
    full = torch.einsum("r,rao,rbo,rco->abco", w, f1, f2, f3)  # W = sum_r w_r W1 ⊗ W2 ⊗ W3
    aug = []
    for m, subnet in zip(DIMS, fusion.subnet, strict=True):
        z = subnet(emb[m]) * masks[m][:, None]  # missing: only the constant part remains
        aug.append(torch.cat([torch.ones(len(z), 1), z], dim=1))
    outer = torch.einsum("na,nb,nc->nabc", *aug)  # Z = [1; z1] ⊗ [1; z2] ⊗ [1; z3]
    return torch.einsum("nabc,abco->no", outer, full) + fusion.bias.detach()


def test_tensor_fusion_equals_full_outer_product() -> None:
    fusion = TensorFusion(DIMS, out_dim=3, rank=5, hidden=2).eval()
    emb, masks = _batch(DIMS, ALL_PATTERNS)
    with torch.no_grad():
        out = fusion(emb, masks)
        naive = _naive_tensor_fusion(fusion, emb, masks)
    torch.testing.assert_close(out, naive, rtol=1e-5, atol=1e-5)
    # nothing observed: sum_r w_r prod_m (bias row of factor m) + b
    nothing = torch.einsum(
        "r,ro->o", fusion.rank_weights, torch.stack([f[:, 0] for f in fusion.factors]).prod(0)
    )
    torch.testing.assert_close(out[0], (nothing + fusion.bias).detach())


@pytest.mark.parametrize("gate", ["sigmoid", "softmax"])
def test_gated_missing_gates_are_exactly_zero(gate: str) -> None:
    fusion = GatedFusion(DIMS, out_dim=4, hidden=6, gate=gate).eval()  # type: ignore[arg-type]
    emb, masks = _batch(DIMS, ALL_PATTERNS)
    with torch.no_grad():
        weights, _ = fusion.gates(emb, masks)
        out = fusion(emb, masks)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(ALL_PATTERNS), 6))
    for row, pattern in enumerate(ALL_PATTERNS):
        for j, present in enumerate(pattern):
            assert bool((weights[row, j + 1] == 0).all()) == (not present)
        assert bool((weights[row, 0] > 0).all())  # the nothing-observed slot
    torch.testing.assert_close(out[0], fusion.head(fusion.nothing).detach())


@pytest.mark.parametrize("name", ["early", "concat"])
def test_concatenating_fusions_fill_in_learned_vectors_and_indicators(name: str) -> None:
    fusion = build_fusion(name, DIMS, out_dim=3).eval()
    assert isinstance(fusion, EarlyFusion | ConcatFusion)
    assert isinstance(fusion, EarlyFusion) == (name == "early")
    seen: list[torch.Tensor] = []
    fusion.net.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    emb, masks = _batch(DIMS, ALL_PATTERNS)
    with torch.no_grad():
        fusion(emb, masks)
    features = seen[0]
    width = features.shape[1] - len(DIMS)
    indicators = features[:, width:]
    assert torch.equal(indicators, torch.tensor(ALL_PATTERNS, dtype=torch.float32))
    blocks = features[:, :width].split(
        list(DIMS.values()) if isinstance(fusion, EarlyFusion) else [fusion.proj_dim] * 3, dim=1
    )
    for j, (block, fill) in enumerate(zip(blocks, fusion.missing, strict=True)):
        missing_rows = [r for r, p in enumerate(ALL_PATTERNS) if not p[j]]
        assert torch.equal(block[missing_rows], fill.detach().expand(len(missing_rows), -1))
        assert bool(fill.detach().abs().sum() > 0)  # not a zero vector


# -- modality dropout ---------------------------------------------------------------------


def _random_masks(n: int, k: int, *, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    present = torch.rand(n, k, generator=gen) < 0.6
    return {f"m{j}": present[:, j] for j in range(k)}


@pytest.mark.parametrize("p", [0.3, 0.9, 1.0])
def test_modality_dropout_never_removes_the_last_modality(p: float) -> None:
    masks = _random_masks(4000, 4, seed=1)
    dropout = ModalityDropout(p).train()
    out = dropout(masks, generator=torch.Generator().manual_seed(0))
    before = torch.stack(list(masks.values()), dim=1)
    after = torch.stack([out[m] for m in masks], dim=1)
    assert not (after & ~before).any()  # only hides, never adds
    assert torch.equal(after.any(dim=1), before.any(dim=1))  # everyone with data keeps some
    if p == 1.0:
        assert torch.equal(after.sum(dim=1), before.any(dim=1).long())  # exactly one kept
        full = before.all(dim=1)
        share = after[full].float().mean(dim=0)  # which one: uniform among the present
        assert bool(((share - 0.25).abs() < 0.06).all())
    else:
        # patients with all 4: each hidden with probability p, but when all 4 would go
        # (probability p**4) one comes back, so the expected hidden share is p - p**4 / 4
        full = before.all(dim=1)
        rate = 1 - after[full].float().mean()
        assert abs(float(rate) - (p - p**4 / 4)) < 0.035


def test_modality_dropout_is_identity_in_eval_and_deterministic() -> None:
    masks = _random_masks(500, 3, seed=2)
    dropout = ModalityDropout(0.5)
    dropout.eval()
    assert all(torch.equal(dropout(masks)[m], masks[m]) for m in masks)
    dropout.train()
    assert all(torch.equal(ModalityDropout(0.0)(masks)[m], masks[m]) for m in masks)
    a = dropout(masks, generator=torch.Generator().manual_seed(3))
    b = dropout(masks, generator=torch.Generator().manual_seed(3))
    c = dropout(masks, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(a[m], b[m]) for m in masks)
    assert any(not torch.equal(a[m], c[m]) for m in masks)
    torch.manual_seed(9)
    d = dropout(masks)
    torch.manual_seed(9)
    e = dropout(masks)
    assert all(torch.equal(d[m], e[m]) for m in masks)
    assert any(not torch.equal(d[m], masks[m]) for m in masks)
    with pytest.raises(InputError, match=r"p=1\.5"):
        ModalityDropout(1.5)


# -- learned imputer ----------------------------------------------------------------------


def _imputer_case() -> tuple[
    LearnedImputer, dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]
]:
    torch.manual_seed(0)
    imputer = LearnedImputer(DIMS, hidden=8).eval()
    emb, observed = _batch(DIMS, ALL_PATTERNS * 3, seed=3)
    visible = ModalityDropout(0.5).train()(observed, generator=torch.Generator().manual_seed(1))
    return imputer, emb, observed, visible


def test_imputer_loss_only_where_truth_is_known() -> None:
    imputer, emb, observed, visible = _imputer_case()
    res = imputer(emb, visible, observed=observed)
    hidden = {m: observed[m] & ~visible[m] for m in DIMS}
    assert any(h.any() for h in hidden.values())
    # the manual loss: per-modality MSE on hidden rows, averaged over modalities
    preds = {m: res.embeddings[m] for m in DIMS}
    manual = torch.stack(
        [((preds[m][h] - emb[m][h]) ** 2).mean() for m, h in hidden.items() if h.any()]
    ).mean()
    torch.testing.assert_close(res.loss, manual)
    for m in DIMS:
        assert torch.equal(res.embeddings[m][visible[m]], emb[m][visible[m]])
        assert torch.equal(res.imputed[m], ~visible[m])
        assert torch.equal(res.masks[m], visible[m])

    # truly missing rows: their content changes neither the loss nor the imputations
    noisy = {m: torch.where(observed[m][:, None], emb[m], 1e3) for m in DIMS}
    again = imputer(noisy, visible, observed=observed)
    assert torch.equal(again.loss, res.loss)
    for m in DIMS:
        assert torch.equal(again.embeddings[m][observed[m]], res.embeddings[m][observed[m]])

    # hidden rows are targets only: they change the loss, not what the imputer predicts
    m = next(m for m in DIMS if hidden[m].any())
    moved = {**emb, m: torch.where(hidden[m][:, None], emb[m] + 1.0, emb[m])}
    third = imputer(moved, visible, observed=observed)
    assert not torch.equal(third.loss, res.loss)
    torch.testing.assert_close(third.embeddings[m], res.embeddings[m])

    # nothing hidden: no truth to compare with, loss exactly 0 (and differentiable)
    none = imputer(emb, observed)
    assert float(none.loss.detach()) == 0.0
    none.loss.backward()
    with pytest.raises(ValueError, match="observed does not"):
        imputer(
            emb,
            {**visible, "ehr": torch.ones(len(ALL_PATTERNS) * 3, dtype=torch.bool)},
            observed={**observed, "ehr": torch.zeros(len(ALL_PATTERNS) * 3, dtype=torch.bool)},
        )


def test_imputed_rows_are_not_observed_unless_opted_in() -> None:
    imputer, emb, observed, visible = _imputer_case()
    res = imputer(emb, visible, observed=observed)
    fusion = build_fusion("late", DIMS, out_dim=4).eval()
    with torch.no_grad():
        default = fusion(*res.fusion_inputs())
        assert torch.equal(default, fusion(emb, visible))  # the imputations are ignored
        emb_in, masks_in = res.fusion_inputs(use_imputed=True)
        assert all(bool(masks_in[m].all()) for m in DIMS)
        opted = fusion(emb_in, masks_in)
    assert not torch.allclose(opted, default)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_flagged_imputations_reach_every_fusion_with_an_indicator(name: str) -> None:
    imputer, emb, observed, visible = _imputer_case()
    res = imputer(emb, visible, observed=observed)
    emb_in, masks_in = res.flagged()
    for m in DIMS:
        assert bool(masks_in[m].all())
        assert emb_in[m].shape == (len(visible[m]), DIMS[m] + 1)
        torch.testing.assert_close(emb_in[m][:, -1], (~visible[m]).float())  # 1 = imputed
        assert torch.equal(emb_in[m][:, :-1], res.embeddings[m])
    torch.manual_seed(0)
    fusion = build_fusion(name, {m: d + 1 for m, d in DIMS.items()}, out_dim=4).eval()
    with torch.no_grad():
        out = fusion(emb_in, masks_in)
        # the same embeddings passed as observed (indicator 0) give another output: the
        # fusion can tell an imputation from an observation
        as_data = {
            m: torch.cat([x[:, :-1], torch.zeros_like(x[:, -1:])], 1) for m, x in emb_in.items()
        }
        lied = fusion(as_data, masks_in)
    assert torch.isfinite(out).all()
    rows = ~torch.stack([visible[m] for m in DIMS], 1).all(1)  # rows with an imputation
    assert rows.any() and not torch.allclose(out[rows], lied[rows])
    torch.testing.assert_close(out[~rows], lied[~rows])


def test_imputer_learns_a_cross_modal_relation() -> None:
    torch.manual_seed(0)
    dims = {"a": 4, "b": 3}
    imputer = LearnedImputer(dims, hidden=16, dropout=0.0)
    mix = torch.randn(4, 3)
    optim = torch.optim.Adam(imputer.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(0)

    def step() -> torch.Tensor:
        a = torch.randn(256, 4, generator=gen)
        emb = {"a": a, "b": torch.tanh(a @ mix)}
        observed = {"a": torch.ones(256, dtype=torch.bool), "b": torch.ones(256, dtype=torch.bool)}
        visible = {"a": observed["a"], "b": torch.arange(256) % 2 == 0}
        return imputer(emb, visible, observed=observed).loss

    first = float(step().detach())
    for _ in range(150):
        optim.zero_grad()
        loss = step()
        loss.backward()
        optim.step()
    assert float(step().detach()) < 0.2 * first
    assert imputer.get_config() == {
        "hidden": 16,
        "layers": 2,
        "dropout": 0.0,
        "detach_target": True,
    }
