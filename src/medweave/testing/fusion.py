"""Conformance check for fusion strategies (the contract of ``medweave.models.fusion._base``).

``check_fusion(name, in_dims, **params)`` builds the fusion registered as ``name`` (or a
:class:`Fusion` subclass passed directly, e.g. one not registered yet) with ``in_dims`` and
``params`` and raises :class:`AssertionError` naming the failed check and how it failed.
The checks, in order:

* **construction**: a :class:`Fusion` with the modalities of ``in_dims`` and the ``out_dim``
  asked for;
* **output**: shape ``(n, out_dim)``, floating point, finite for every mask pattern
  (all modalities missing included), in evaluation and training mode; inputs not modified;
* **mask invariance**: changing the embeddings of masked-out rows (large random values)
  changes nothing, in evaluation mode and in training mode under the same seed;
* **gradients**: over a batch with mixed masks every trainable parameter gets a finite,
  non-zero gradient, and masked-out rows of the embeddings get exactly zero;
* **present modalities matter**: changing a present modality's embedding changes the
  output, when it is alone and when all modalities are present;
* **missing is not zero**: a missing modality does not give the output of an observed
  all-zero embedding (the fusion is not zero-filling);
* **batch of one** in training and evaluation mode (no batch statistics);
* **row independence** in evaluation mode: each row's output is the same alone, in the
  batch, and in another batch order;
* **determinism**: the same seed builds the same parameters and the same outputs;
* **state_dict round trip** through ``torch.save`` / ``torch.load(weights_only=True)``;
* **get_config round trip**: ``get_config()`` (the keyword options, ``out_dim`` included;
  ``in_dims`` is stored separately) is JSON-able, reflects ``params``, and
  ``cls(in_dims, **config)`` plus the state dict rebuilds the same function.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import torch

from medweave.models.fusion import FUSIONS, Fusion

__all__ = ["check_fusion"]

_INVARIANCE_ATOL = 1e-6
_ROW_ATOL = 1e-5
_ROW_RTOL = 1e-4
_CHANGE_MIN = 1e-6

Batch = dict[str, torch.Tensor]


def check_fusion(name: str | type[Fusion], in_dims: dict[str, int], /, **params: Any) -> None:
    """Raise :class:`AssertionError` unless the fusion ``name`` meets the fusion contract.

    ``name`` is a registered fusion name or a :class:`Fusion` subclass; ``in_dims`` maps
    modality -> embedding size; ``params`` are the fusion's keyword options. Takes about a
    second for a small fusion on a CPU; the global torch RNG state is left unchanged.
    """
    cls = FUSIONS.get(name) if isinstance(name, str) else name
    _Checker(cls, name if isinstance(name, str) else cls.__name__, dict(in_dims), params).run()


class _Checker:
    def __init__(
        self, cls: type[Fusion], label: str, in_dims: dict[str, int], params: dict[str, Any]
    ) -> None:
        self.cls = cls
        self.label = label
        self.in_dims = in_dims
        self.params = params
        self.modalities = list(in_dims)
        self.patterns = _patterns(len(self.modalities))
        # every pattern twice, with different embeddings
        rows = self.patterns.repeat(2, 1)
        self.n = rows.shape[0]
        gen = torch.Generator().manual_seed(1234)
        self.emb: Batch = {m: torch.randn(self.n, d, generator=gen) for m, d in in_dims.items()}
        self.masks: Batch = {m: rows[:, j].clone() for j, m in enumerate(self.modalities)}
        self.gen = gen

    # -- helpers --------------------------------------------------------------------------

    def fail(self, check: str, detail: str) -> NoReturn:
        raise AssertionError(f"check_fusion({self.label!r}): {check}: {detail}")

    def build(self, seed: int) -> Fusion:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                return self.cls(dict(self.in_dims), **self.params)
            except Exception as exc:  # reported as a failed check
                self.fail("construction", f"{self.cls.__name__}(in_dims, **params) raised {exc!r}")

    def run_fusion(
        self, fusion: Fusion, emb: Batch, masks: Batch, *, train: bool = False, seed: int = 0
    ) -> torch.Tensor:
        fusion.train(train)
        with torch.random.fork_rng(devices=[]), torch.no_grad(), _keep_buffers(fusion):
            torch.manual_seed(seed)
            return fusion(emb, masks)

    def describe(self, row: int) -> str:
        have = [m for m in self.modalities if bool(self.masks[m][row])]
        return "{" + ", ".join(have) + "} present" if have else "no modality present"

    def rows_with(self, pattern: list[bool]) -> torch.Tensor:
        target = torch.tensor(pattern)
        stacked = torch.stack([self.masks[m] for m in self.modalities], dim=1)
        return (stacked == target).all(dim=1).nonzero().flatten()

    # -- the checks -----------------------------------------------------------------------

    def run(self) -> None:
        fusion = self.build(0)
        self.check_construction(fusion)
        out = self.check_output(fusion)
        self.check_mask_invariance(fusion, out)
        self.check_gradients(fusion)
        self.check_present_matters(fusion, out)
        self.check_missing_not_zero(fusion)
        self.check_batch_of_one(fusion)
        self.check_row_independence(fusion, out)
        self.check_determinism(fusion, out)
        self.check_state_dict(fusion, out)
        self.check_config(fusion, out)

    def check_construction(self, fusion: Fusion) -> None:
        check = "construction"
        if not isinstance(fusion, Fusion):
            self.fail(check, f"{type(fusion).__name__} is not a medweave Fusion")
        out_dim = getattr(fusion, "out_dim", None)
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            self.fail(check, f"out_dim must be a positive int, got {out_dim!r}")
        if "out_dim" in self.params and out_dim != self.params["out_dim"]:
            self.fail(
                check, f"out_dim is {out_dim}, but out_dim={self.params['out_dim']} was asked"
            )
        if list(fusion.modalities) != self.modalities:
            self.fail(
                check, f"modalities {fusion.modalities} differ from in_dims {self.modalities}"
            )

    def check_output(self, fusion: Fusion) -> torch.Tensor:
        check = "output"
        before = {m: x.clone() for m, x in self.emb.items()}
        masks_before = {m: x.clone() for m, x in self.masks.items()}
        for train in (False, True):
            mode = "training" if train else "evaluation"
            out = self.run_fusion(fusion, self.emb, self.masks, train=train)
            if not isinstance(out, torch.Tensor) or out.shape != (self.n, fusion.out_dim):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                self.fail(check, f"{mode} mode returned {shape}; expected ({self.n}, out_dim)")
            if not out.is_floating_point():
                self.fail(check, f"{mode} mode returned dtype {out.dtype}; expected floating")
            bad = (~torch.isfinite(out)).any(dim=1).nonzero().flatten()
            if len(bad):
                self.fail(
                    check,
                    f"non-finite output in {mode} mode for {self.describe(int(bad[0]))} "
                    "(every mask pattern, none present included, needs a finite output)",
                )
        for m in self.modalities:
            if not torch.equal(self.emb[m], before[m]) or not torch.equal(
                self.masks[m], masks_before[m]
            ):
                self.fail("inputs unchanged", f"forward modified the input tensors of {m!r}")
        return self.run_fusion(fusion, self.emb, self.masks)

    def check_mask_invariance(self, fusion: Fusion, out: torch.Tensor) -> None:
        check = "mask invariance"
        for m in self.modalities:
            missing = ~self.masks[m]
            if not missing.any():
                continue
            noise = 1e4 * torch.randn(self.emb[m].shape, generator=self.gen) + 3e3
            changed = dict(self.emb)
            changed[m] = torch.where(missing[:, None], noise, self.emb[m])
            for train in (False, True):
                ref = (
                    out if not train else self.run_fusion(fusion, self.emb, self.masks, train=True)
                )
                new = self.run_fusion(fusion, changed, self.masks, train=train)
                diff = (new - ref).abs().amax(dim=1)
                if not bool((diff <= _INVARIANCE_ATOL).all()):
                    row = int(diff.argmax())
                    mode = "training" if train else "evaluation"
                    self.fail(
                        check,
                        f"changing the embeddings of rows where {m!r} is missing changed the "
                        f"output by {float(diff[row]):.3g} ({mode} mode, {self.describe(row)}); "
                        "masked-out rows must not influence the output",
                    )

    def check_gradients(self, fusion: Fusion) -> None:
        fusion.train()
        fusion.zero_grad(set_to_none=True)
        emb = {m: x.clone().requires_grad_() for m, x in self.emb.items()}
        weight = torch.randn(self.n, fusion.out_dim, generator=self.gen)
        with torch.random.fork_rng(devices=[]), _keep_buffers(fusion):
            torch.manual_seed(0)
            (fusion(emb, self.masks) * weight).sum().backward()
        for m in self.modalities:
            grad = emb[m].grad
            missing = ~self.masks[m]
            if grad is not None and bool((grad[missing] != 0).any()):
                self.fail(
                    "gradients",
                    f"masked-out rows of {m!r} receive a non-zero gradient; missing rows must "
                    "not take part in the computation",
                )
        for pname, param in fusion.named_parameters():
            if not param.requires_grad:
                continue
            if param.grad is None:
                self.fail("gradients", f"parameter {pname!r} gets no gradient (unused?)")
            elif not bool(torch.isfinite(param.grad).all()):
                self.fail("gradients", f"parameter {pname!r} gets a non-finite gradient")
            elif not bool((param.grad != 0).any()):
                self.fail(
                    "gradients",
                    f"parameter {pname!r} gets an all-zero gradient over a batch with every "
                    "mask pattern",
                )
        fusion.zero_grad(set_to_none=True)

    def check_present_matters(self, fusion: Fusion, out: torch.Tensor) -> None:
        k = len(self.modalities)
        for j, m in enumerate(self.modalities):
            alone = [i == j for i in range(k)]
            for pattern in (alone, [True] * k):
                rows = self.rows_with(pattern)
                changed = dict(self.emb)
                bump = torch.zeros_like(self.emb[m])
                bump[rows] = torch.randn(len(rows), self.in_dims[m], generator=self.gen)
                changed[m] = self.emb[m] + bump
                new = self.run_fusion(fusion, changed, self.masks)
                diff = (new - out)[rows].abs().amax(dim=1)
                if not bool((diff > _CHANGE_MIN).all()):
                    row = int(rows[int(diff.argmin())])
                    self.fail(
                        "present modalities matter",
                        f"changing the embedding of {m!r} did not change the output for "
                        f"{self.describe(row)}",
                    )

    def check_missing_not_zero(self, fusion: Fusion) -> None:
        k = len(self.modalities)
        for j, m in enumerate(self.modalities):
            for pattern in ([i == j for i in range(k)], [True] * k):
                rows = self.rows_with(pattern)
                zeroed = dict(self.emb)
                zeroed[m] = self.emb[m].clone()
                zeroed[m][rows] = 0.0
                observed = self.run_fusion(fusion, zeroed, self.masks)
                hidden = dict(self.masks)
                hidden[m] = self.masks[m].clone()
                hidden[m][rows] = False
                missing = self.run_fusion(fusion, zeroed, hidden)
                diff = (observed - missing)[rows].abs().amax(dim=1)
                if not bool((diff > _CHANGE_MIN).all()):
                    row = int(rows[int(diff.argmin())])
                    self.fail(
                        "missing is not zero",
                        f"{m!r} missing gives the same output as an observed all-zero {m!r} "
                        f"embedding (for {self.describe(row)}); a missing modality must not "
                        "be treated as observed zeros",
                    )

    def check_batch_of_one(self, fusion: Fusion) -> None:
        k = len(self.modalities)
        patterns = [[True] * k, [False] * k] + [[i == j for i in range(k)] for j in range(k)]
        for pattern in patterns:
            row = int(self.rows_with(pattern)[0])
            emb = {m: x[row : row + 1] for m, x in self.emb.items()}
            masks = {m: x[row : row + 1] for m, x in self.masks.items()}
            for train in (False, True):
                mode = "training" if train else "evaluation"
                fusion.train(train)
                try:
                    with torch.random.fork_rng(devices=[]), _keep_buffers(fusion):
                        torch.manual_seed(0)
                        res = fusion(emb, masks)
                        if train:
                            res.sum().backward()
                except Exception as exc:
                    self.fail(
                        "batch of one",
                        f"{mode} mode raised {exc!r} for {self.describe(row)}",
                    )
                if res.shape != (1, fusion.out_dim) or not bool(torch.isfinite(res).all()):
                    self.fail(
                        "batch of one",
                        f"{mode} mode gave shape {tuple(res.shape)} / non-finite values for "
                        f"{self.describe(row)}",
                    )
        fusion.zero_grad(set_to_none=True)

    def check_row_independence(self, fusion: Fusion, out: torch.Tensor) -> None:
        check = "row independence"
        for row in range(self.n):
            emb = {m: x[row : row + 1] for m, x in self.emb.items()}
            masks = {m: x[row : row + 1] for m, x in self.masks.items()}
            single = self.run_fusion(fusion, emb, masks)[0]
            if not torch.allclose(single, out[row], atol=_ROW_ATOL, rtol=_ROW_RTOL):
                self.fail(
                    check,
                    f"row {row} ({self.describe(row)}) differs alone and in the batch by "
                    f"{float((single - out[row]).abs().max()):.3g} (evaluation mode)",
                )
        order = torch.randperm(self.n, generator=self.gen)
        emb = {m: x[order] for m, x in self.emb.items()}
        masks = {m: x[order] for m, x in self.masks.items()}
        shuffled = self.run_fusion(fusion, emb, masks)
        if not torch.allclose(shuffled, out[order], atol=_ROW_ATOL, rtol=_ROW_RTOL):
            self.fail(check, "reordering the batch changed the rows' outputs (evaluation mode)")

    def check_determinism(self, fusion: Fusion, out: torch.Tensor) -> None:
        check = "determinism"
        twin = self.build(0)
        mine, theirs = fusion.state_dict(), twin.state_dict()
        if list(mine) != list(theirs):
            self.fail(check, "two builds with the same seed have different state_dict keys")
        for key in mine:
            if not torch.equal(mine[key], theirs[key]):
                self.fail(check, f"two builds with the same seed differ in {key!r}")
        if not _close(self.run_fusion(twin, self.emb, self.masks), out):
            self.fail(check, "two builds with the same seed give different outputs")
        a = self.run_fusion(fusion, self.emb, self.masks, train=True, seed=7)
        b = self.run_fusion(twin, self.emb, self.masks, train=True, seed=7)
        if not _close(a, b):
            self.fail(check, "training-mode outputs differ under the same seed")

    def check_state_dict(self, fusion: Fusion, out: torch.Tensor) -> None:
        check = "state_dict round trip"
        buffer = io.BytesIO()
        torch.save(fusion.state_dict(), buffer)
        buffer.seek(0)
        try:
            state = torch.load(buffer, weights_only=True)
        except Exception as exc:
            self.fail(check, f"torch.load(weights_only=True) of the state dict raised {exc!r}")
        other = self.build(1)
        try:
            other.load_state_dict(state)
        except Exception as exc:
            self.fail(check, f"load_state_dict into a fresh build raised {exc!r}")
        if not _close(self.run_fusion(other, self.emb, self.masks), out):
            self.fail(check, "a fresh build with the loaded state dict gives a different output")

    def check_config(self, fusion: Fusion, out: torch.Tensor) -> None:
        check = "get_config round trip"
        get_config = getattr(fusion, "get_config", None)
        if not callable(get_config):
            self.fail(check, "the fusion has no get_config() method")
        config = get_config()
        if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
            self.fail(check, f"get_config() must return a dict with str keys, got {config!r}")
        try:
            reloaded = json.loads(json.dumps(config))
        except (TypeError, ValueError) as exc:
            self.fail(check, f"get_config() is not JSON-serialisable: {exc}")
        if reloaded != config:
            self.fail(check, f"get_config() does not survive JSON: {config!r} -> {reloaded!r}")
        if config.get("out_dim") != fusion.out_dim:
            self.fail(check, f"get_config() lacks out_dim={fusion.out_dim}: {config!r}")
        for key, value in self.params.items():
            if key not in config or not _same_value(config[key], value):
                self.fail(
                    check,
                    f"get_config() does not reflect the option {key}={value!r}: {config!r}",
                )
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(2)
                rebuilt = self.cls(dict(self.in_dims), **reloaded)
            rebuilt.load_state_dict(fusion.state_dict())
        except Exception as exc:
            self.fail(check, f"rebuilding from get_config() and the state dict raised {exc!r}")
        rebuilt_config = rebuilt.get_config()
        if rebuilt_config != config:
            self.fail(check, f"the rebuilt fusion's config {rebuilt_config!r} != {config!r}")
        if not _close(self.run_fusion(rebuilt, self.emb, self.masks), out):
            self.fail(check, "the fusion rebuilt from get_config() gives a different output")


@contextmanager
def _keep_buffers(fusion: Fusion) -> Iterator[None]:
    """Restore the buffers (e.g. running statistics) a training-mode call may update."""
    saved = {name: buf.detach().clone() for name, buf in fusion.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buf in fusion.named_buffers():
                if name in saved and buf.shape == saved[name].shape:
                    buf.copy_(saved[name])


def _patterns(k: int) -> torch.Tensor:
    """(P, k) bool: every mask pattern for k <= 6, else the informative ones and a sample."""
    if k <= 6:
        return torch.tensor(list(itertools.product([False, True], repeat=k)))
    rows = [[False] * k, [True] * k]
    rows += [[i == j for i in range(k)] for j in range(k)]
    rows += [[i != j for i in range(k)] for j in range(k)]
    gen = torch.Generator().manual_seed(99)
    rows += (torch.rand(32, k, generator=gen) < 0.5).tolist()
    return torch.tensor(rows)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= _INVARIANCE_ATOL)


def _same_value(a: object, b: object) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b))
    try:
        return bool(json.loads(json.dumps(a)) == json.loads(json.dumps(b)))
    except (TypeError, ValueError):
        return a == b
