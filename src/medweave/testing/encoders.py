"""The encoder conformance check: what every registered encoder must satisfy.

:func:`check_encoder` builds a registered encoder and checks the contract of
:mod:`medweave.models.encoders._base`, raising :class:`AssertionError` with a message that
names the encoder and the failed property:

* ``out_dim`` is declared and the output is (n, out_dim), floating point and finite, also
  for placeholder rows (zeros, or sequences without any event);
* in eval mode a row's output does not depend on the other rows of the batch;
* a batch of one works in train and in eval mode;
* gradients reach every trainable parameter, and no frozen one;
* the same torch seed gives the same weights and the same (train-mode) outputs;
* ``get_config()`` returns the constructor's keyword arguments, JSON-able (every keyword
  argument, with the values given), and the encoder rebuilt from it accepts the state dict
  and gives identical outputs;
* sequence encoders ignore padded positions (changing them, or adding more, does not
  change the output).

:func:`default_spec` and :func:`default_params` give a small input spec and fast options
for every encoder, so a test can run the check over ``ENCODERS.names()`` and cover any
encoder registered later (one that declares ``input_kinds`` gets a spec of its first kind).
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import torch

from medweave.models.encoders import ENCODERS, Encoder, InputSpec

__all__ = [
    "KIND_SPECS",
    "Batch",
    "check_encoder",
    "check_encoder_class",
    "default_params",
    "default_spec",
    "example_batch",
    "take_rows",
    "zero_batch",
]

Batch = torch.Tensor | dict[str, torch.Tensor]

#: a small input spec per input kind
KIND_SPECS: dict[str, InputSpec] = {
    "tabular": InputSpec("tabular", (6,)),
    "exposure": InputSpec("exposure", (5,)),
    "omics": InputSpec(
        "omics",
        (12,),
        feature_groups={"set_a": [0, 1, 2, 3], "set_b": [3, 4, 5, 6, 7], "set_c": [8]},
    ),
    "embedding": InputSpec("embedding", (6,)),
    "image": InputSpec("image", (1, 32, 32)),
    "sequence": InputSpec("sequence", (7,), vocab_size=11),
}

_SPECS: dict[str, InputSpec] = {
    "mlp": KIND_SPECS["tabular"],
    "omics_mlp": KIND_SPECS["omics"],
    "image_cnn": KIND_SPECS["image"],
    "gru": KIND_SPECS["sequence"],
    "transformer": KIND_SPECS["sequence"],
    "passthrough": KIND_SPECS["embedding"],
}

_PARAMS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": [16], "categorical": {"5": 3}},
    "omics_mlp": {"hidden": [16], "gene_sets": True, "group_dim": 2},
    "image_cnn": {"channels": [8, 16]},
    "gru": {"embed_dim": 8, "hidden_size": 16},
    "transformer": {"d_model": 16, "n_heads": 2, "n_layers": 1, "ff_dim": 32},
    "passthrough": {},
}

_N = 5  # rows of the example batch
_ATOL, _RTOL = 1e-5, 1e-4


def default_spec(name: str) -> InputSpec:
    """A small input spec for the encoder registered as ``name``."""
    if name in _SPECS:
        return _SPECS[name]
    kinds = getattr(ENCODERS.get(name), "input_kinds", ())
    if not kinds or kinds[0] not in KIND_SPECS:
        raise AssertionError(
            f"encoder {name!r}: no default input spec; declare the class attribute "
            f"input_kinds (one of {', '.join(KIND_SPECS)}) so the conformance check can run it"
        )
    return KIND_SPECS[kinds[0]]


def default_params(name: str) -> dict[str, Any]:
    """Small, fast constructor options for ``name`` (``out_dim=8`` and tiny layers)."""
    return {"out_dim": 8, **json.loads(json.dumps(_PARAMS.get(name, {})))}


def example_batch(spec: InputSpec, n: int, *, seed: int = 0) -> Batch:
    """A random batch of ``n`` rows for ``spec``.

    Sequences get lengths from 0 to the maximum (the last row has no event, the first row
    is full when ``n > 1``) and random garbage at padded positions, which encoders must
    ignore.
    """
    g = torch.Generator().manual_seed(seed)
    if spec.kind != "sequence":
        return torch.randn((n, *spec.shape), generator=g)
    length = int(spec.shape[0])
    lengths = torch.randint(0, length + 1, (n,), generator=g)
    if n > 1:
        lengths[0] = length
    lengths[-1] = 0
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    codes = torch.randint(1, max(spec.vocab_size, 2), (n, length), generator=g)
    values = torch.randn((n, length), generator=g)
    # days before the index date, oldest first
    days = torch.sort(torch.rand((n, length), generator=g) * 1000, dim=1, descending=True).values
    return {"codes": codes, "values": values, "days": days, "mask": mask}


def zero_batch(spec: InputSpec, n: int) -> Batch:
    """Placeholder rows: zeros, or sequences with no event at all."""
    if spec.kind != "sequence":
        return torch.zeros((n, *spec.shape))
    length = int(spec.shape[0])
    return {
        "codes": torch.zeros((n, length), dtype=torch.long),
        "values": torch.zeros((n, length)),
        "days": torch.zeros((n, length)),
        "mask": torch.zeros((n, length), dtype=torch.bool),
    }


def take_rows(batch: Batch, rows: list[int] | torch.Tensor) -> Batch:
    """The given rows of a tensor or dict batch."""
    idx = torch.as_tensor(rows, dtype=torch.long)
    if isinstance(batch, torch.Tensor):
        return batch.index_select(0, idx)
    return {k: v.index_select(0, idx) for k, v in batch.items()}


def _scramble_padding(batch: dict[str, torch.Tensor], spec: InputSpec) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    pad = ~batch["mask"]
    shape = batch["mask"].shape
    return {
        "codes": torch.where(
            pad, torch.randint(1, max(spec.vocab_size, 2), shape, generator=g), batch["codes"]
        ),
        "values": torch.where(pad, torch.randn(shape, generator=g) * 1e3, batch["values"]),
        "days": torch.where(pad, torch.rand(shape, generator=g) * 1e4, batch["days"]),
        "mask": batch["mask"],
    }


def check_encoder(name: str, spec: InputSpec, /, **params: Any) -> Encoder:
    """Check the encoder registered as ``name`` on ``spec`` built with ``params``.

    Returns the encoder built with torch seed 0; raises :class:`AssertionError` naming the
    encoder and the property that does not hold.
    """
    return check_encoder_class(ENCODERS.get(name), spec, label=name, **params)


def check_encoder_class(
    cls: Callable[..., Encoder], spec: InputSpec, /, *, label: str | None = None, **params: Any
) -> Encoder:
    """:func:`check_encoder` for an encoder class, registered or not."""
    who = f"encoder {label or getattr(cls, '__name__', str(cls))!r}"

    def fail(message: str) -> AssertionError:
        return AssertionError(f"{who}: {message}")

    def build(seed: int, kwargs: Mapping[str, Any]) -> Encoder:
        torch.manual_seed(seed)
        return cls(spec, **kwargs)

    def close(a: torch.Tensor, b: torch.Tensor, what: str, *, exact: bool = False) -> None:
        atol, rtol = (1e-6, 1e-6) if exact else (_ATOL, _RTOL)
        if a.shape != b.shape or not torch.allclose(a, b, atol=atol, rtol=rtol):
            diff = (a - b).abs().max().item() if a.shape == b.shape else "shape"
            raise fail(f"{what} (max difference {diff})")

    enc = build(0, params)
    if not isinstance(enc, Encoder):
        raise fail(f"is a {type(enc).__name__}, not a medweave Encoder")
    out_dim = getattr(enc, "out_dim", None)
    if not isinstance(out_dim, int) or out_dim < 1:
        raise fail(f"out_dim must be a positive int attribute, got {out_dim!r}")
    if "out_dim" in params and out_dim != params["out_dim"]:
        raise fail(f"out_dim is {out_dim} but out_dim={params['out_dim']} was given")

    batch = example_batch(spec, _N)

    def run(model: Encoder, x: Batch, *, train: bool = False) -> torch.Tensor:
        model.train(train)
        if train:
            return model(x)
        with torch.no_grad():
            return model(x)

    # --- output shape, finiteness ---------------------------------------------------------
    out = run(enc, batch)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise fail(f"forward must return a floating point tensor, got {type(out).__name__}")
    if tuple(out.shape) != (_N, out_dim):
        raise fail(f"output shape is {tuple(out.shape)}, expected ({_N}, {out_dim})")
    if not torch.isfinite(out).all():
        raise fail("output has NaN or Inf on the example batch")
    # train-mode passes run on a copy: they may update buffers (BatchNorm statistics)
    scratch = copy.deepcopy(enc)
    zeros = zero_batch(spec, 3)
    for train in (False, True):
        z = run(scratch, zeros, train=train)
        mode = "train" if train else "eval"
        if tuple(z.shape) != (3, out_dim) or not torch.isfinite(z).all():
            raise fail(
                f"placeholder rows (zeros / no events) must give finite (n, out_dim) outputs "
                f"in {mode} mode"
            )

    # --- batch independence in eval mode ----------------------------------------------------
    for i in range(_N):
        close(
            run(enc, take_rows(batch, [i]))[0],
            out[i],
            f"row {i} alone differs from row {i} "
            "in the batch in eval mode: outputs must not depend on other rows",
        )
    perm = torch.tensor([3, 0, 4, 1, 2])
    close(
        run(enc, take_rows(batch, perm)),
        out[perm],
        "permuting the batch changes the rows' "
        "outputs in eval mode: outputs must not depend on other rows",
    )
    others = example_batch(spec, _N, seed=1)
    mixed = take_rows(batch, [0])
    if isinstance(mixed, torch.Tensor) and isinstance(others, torch.Tensor):
        mixed = torch.cat([mixed, others])
    elif isinstance(mixed, dict) and isinstance(others, dict):
        mixed = {k: torch.cat([mixed[k], others[k]]) for k in mixed}
    close(
        run(enc, mixed)[0],
        out[0],
        "a row's output changes with the other rows of the batch in eval mode",
    )

    # --- batch size one ------------------------------------------------------------------
    for train in (True, False):
        try:
            one = run(scratch, take_rows(batch, [0]), train=train)
        except Exception as exc:
            mode = "train" if train else "eval"
            raise fail(f"a batch of one fails in {mode} mode: {type(exc).__name__}: {exc}") from exc
        if tuple(one.shape) != (1, out_dim) or not torch.isfinite(one).all():
            raise fail("a batch of one must give a finite (1, out_dim) output")
        if train and one.requires_grad:
            one.sum().backward()
    scratch.zero_grad(set_to_none=True)

    # --- gradients ------------------------------------------------------------------------
    torch.manual_seed(1)
    weights = torch.randn(_N, out_dim)
    loss = (run(scratch, batch, train=True) * weights).sum()
    if any(p.requires_grad for p in scratch.parameters()):
        loss.backward()
    dead = []
    for pname, p in scratch.named_parameters():
        if p.requires_grad:
            if p.grad is None or not torch.isfinite(p.grad).all() or not (p.grad != 0).any():
                dead.append(pname)
        elif p.grad is not None:
            raise fail(f"frozen parameter {pname} received a gradient")
    if dead:
        shown = ", ".join(dead[:5]) + (f" and {len(dead) - 5} more" if len(dead) > 5 else "")
        raise fail(f"no (finite, non-zero) gradient reaches trainable parameter(s) {shown}")
    del scratch

    # --- determinism -------------------------------------------------------------------------
    twin = build(0, params)
    mine, theirs = enc.state_dict(), twin.state_dict()
    if list(mine) != list(theirs) or any(not torch.equal(mine[k], theirs[k]) for k in mine):
        raise fail("two encoders built after torch.manual_seed(0) have different weights")
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        with torch.no_grad():
            outs.append(run(twin, batch, train=True).detach())
    close(outs[0], outs[1], "train-mode outputs differ under the same torch seed", exact=True)

    after = run(enc, batch)
    close(after, out, "eval-mode outputs differ between two calls", exact=True)

    # --- configuration ---------------------------------------------------------------------
    get_config = getattr(enc, "get_config", None)
    if not callable(get_config):
        raise fail("has no get_config() returning its constructor's keyword arguments")
    config = get_config()
    if not isinstance(config, dict):
        raise fail(f"get_config() must return a dict, got {type(config).__name__}")
    try:
        config_json = json.loads(json.dumps(config))
    except (TypeError, ValueError) as exc:
        raise fail(f"get_config() is not JSON-able: {exc}") from exc
    if config_json != config:
        raise fail("get_config() changes in a JSON round trip; return lists and str keys")
    signature = inspect.signature(type(enc).__init__)
    keywords = {
        p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    if set(config) != keywords:
        missing, extra = sorted(keywords - set(config)), sorted(set(config) - keywords)
        raise fail(
            f"get_config() must return exactly the constructor's keyword arguments; "
            f"missing {missing}, unexpected {extra}"
        )
    given = json.loads(json.dumps(params))
    for key, value in given.items():
        if config.get(key) != value:
            raise fail(f"get_config()[{key!r}] is {config.get(key)!r}, but {value!r} was given")

    # --- rebuild from the config and load the state dict --------------------------------------
    rebuilt = build(123, config_json)
    if getattr(rebuilt, "get_config", dict)() != config:
        raise fail("an encoder rebuilt from get_config() has another config")
    try:
        rebuilt.load_state_dict(enc.state_dict())
    except RuntimeError as exc:
        raise fail(
            f"the state dict does not load into an encoder rebuilt from get_config(): {exc}"
        ) from exc
    close(run(rebuilt, batch), out, "the state dict round trip changes the outputs", exact=True)

    # --- sequences: padded positions are ignored ----------------------------------------------
    if spec.kind == "sequence" and isinstance(batch, dict):
        close(
            run(enc, _scramble_padding(batch, spec)),
            out,
            "changing padded positions (mask False) changes the output",
        )
        longer = {k: torch.cat([v, torch.zeros_like(v[:, :3])], dim=1) for k, v in batch.items()}
        close(run(enc, longer), out, "more padded positions at the end change the output")

    enc.eval()
    return enc
