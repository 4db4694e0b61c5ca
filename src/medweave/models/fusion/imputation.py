"""Missing-modality machinery: modality dropout and a learned cross-modal imputer.

:class:`ModalityDropout` hides present modalities at random during training, so that a
fused model learns to work with any subset of them (and does not lean on one modality
that some patients lack). It never hides a patient's last present modality, and it is
the identity in evaluation mode.

:class:`LearnedImputer` predicts a missing modality's embedding from the ones a patient
has. It is optional and sits between the encoders and any fusion::

    visible = dropout(masks)                      # training: hide some present modalities
    result = imputer(embeddings, visible, observed=masks)
    emb, fusion_masks = result.fusion_inputs(use_imputed=use_imputed)
    loss = task_loss(head(fusion(emb, fusion_masks))) + aux_weight * result.loss

The reconstruction loss ``result.loss`` is computed only where the truth is known: on
modalities the patient has (``observed``) that were hidden from the imputer (not in
``visible``). Imputed rows are reported in ``result.imputed`` and are **not** marked as
present: by default (``use_imputed=False``) the fusion receives the true presence masks
and ignores the filled-in rows like any missing row, so the imputer then acts only through
its auxiliary loss (a cross-modal predictive objective on the encoders). With
``use_imputed=True`` imputed rows are passed to the fusion as if observed
(``masks | imputed``), indistinguishable from data. :meth:`Imputation.flagged` is the
honest way to let a fusion use them, and the one ``MultimodalEstimator(impute=True)``
takes: every embedding gains an indicator column (1 = imputed, 0 = observed), so the
fusion (built with ``in_dims`` + 1) sees each row as either an observation or a
prediction it is told is a prediction, never a placeholder posing as data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medweave.errors import InputError
from medweave.models.fusion._common import check_in_dims, check_int, check_rate, mlp

__all__ = ["Imputation", "LearnedImputer", "ModalityDropout"]


class ModalityDropout(nn.Module):
    """In training, hide each present modality of each patient with probability ``p``.

    ``forward(masks, *, generator=None)`` takes and returns ``dict[modality, (n,) bool]``.
    A patient whose present modalities would all be hidden keeps one of them, chosen at
    random; a patient with none stays with none. In evaluation mode, or with ``p == 0``,
    the masks are returned unchanged. Randomness comes from ``generator`` when given, else
    from the global torch generator (``torch.manual_seed`` makes it reproducible).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise InputError(f"modality dropout p={p!r}; expected a number in [0, 1]")
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(
        self, masks: dict[str, torch.Tensor], *, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        if not self.training or self.p == 0 or not masks:
            return dict(masks)
        names = list(masks)
        present = torch.stack([masks[m].to(torch.bool) for m in names], dim=1)
        device = present.device
        rng_device = generator.device if generator is not None else device
        u = torch.rand(present.shape, generator=generator, device=rng_device).to(device)
        pick = torch.rand(present.shape, generator=generator, device=rng_device).to(device)
        kept = present & (u >= self.p)
        lost_all = present.any(dim=1) & ~kept.any(dim=1)
        # restore one present modality, uniformly at random among the present ones
        choice = pick.masked_fill(~present, -1.0).argmax(dim=1)
        restore = lost_all[:, None] & (
            torch.arange(len(names), device=device)[None, :] == choice[:, None]
        )
        kept = kept | restore
        return {m: kept[:, j] for j, m in enumerate(names)}


@dataclass
class Imputation:
    """What :class:`LearnedImputer` returns.

    ``embeddings``: the inputs with every row not in ``masks`` replaced by its prediction;
    ``masks``: the presence masks the imputer was given (unchanged);
    ``imputed``: per modality, the rows that hold a prediction (``~masks``);
    ``loss``: mean squared reconstruction error over rows observed but hidden (0 if none).
    """

    embeddings: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    imputed: dict[str, torch.Tensor]
    loss: torch.Tensor

    def fusion_inputs(
        self, *, use_imputed: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(embeddings, masks)`` for a fusion.

        By default the masks are the true ones, so the fusion ignores imputed rows; with
        ``use_imputed=True`` imputed rows are marked present and treated as observed.
        """
        if not use_imputed:
            return self.embeddings, self.masks
        return self.embeddings, {m: self.masks[m] | self.imputed[m] for m in self.masks}

    def flagged(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(embeddings, masks)`` for a fusion built with ``in_dims`` + 1: each embedding
        with an indicator column appended (1.0 on imputed rows, 0.0 on observed ones) and
        every row marked present, since every row now holds an observation or a labelled
        prediction."""
        emb = {
            m: torch.cat([x, self.imputed[m].to(x.dtype)[:, None]], dim=1)
            for m, x in self.embeddings.items()
        }
        return emb, {m: torch.ones_like(k, dtype=torch.bool) for m, k in self.masks.items()}


class LearnedImputer(nn.Module):
    """Predict each missing modality's embedding from the modalities a patient has.

    Every modality ``m`` is projected, ``c_m = GELU(P_m x_m)`` (width ``hidden``); the
    context is the mean of ``c_m`` over the patient's present modalities (a learned
    "empty" context when there are none), and a decoder per target modality (an MLP with
    ``layers`` linear layers) maps the context to that modality's embedding. With
    ``detach_target=True`` (default) the reconstruction targets are detached, so the loss
    trains the imputer and shapes the *inputs* only as context, without pulling the
    encoders' outputs towards what is easy to predict.
    """

    def __init__(
        self,
        in_dims: dict[str, int],
        *,
        hidden: int = 64,
        layers: int = 2,
        dropout: float = 0.1,
        detach_target: bool = True,
    ) -> None:
        super().__init__()
        check_in_dims(in_dims)
        self.in_dims = dict(in_dims)
        self.modalities = list(in_dims)
        self.hidden = check_int("hidden", hidden)
        self.layers = check_int("layers", layers)
        self.dropout = check_rate("dropout", dropout)
        self.detach_target = bool(detach_target)
        self.encode = nn.ModuleList(
            [nn.Sequential(nn.Linear(d, self.hidden), nn.GELU()) for d in self.in_dims.values()]
        )
        self.empty = nn.Parameter(0.1 * torch.randn(self.hidden))
        self.decode = nn.ModuleList(
            [
                mlp(self.hidden, d, hidden=self.hidden, layers=self.layers, dropout=self.dropout)
                for d in self.in_dims.values()
            ]
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "layers": self.layers,
            "dropout": self.dropout,
            "detach_target": self.detach_target,
        }

    def forward(
        self,
        embeddings: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        *,
        observed: dict[str, torch.Tensor] | None = None,
    ) -> Imputation:
        """Impute rows not in ``masks``; score the prediction where ``observed`` knows better.

        ``masks`` are what the imputer may see (for example after :class:`ModalityDropout`);
        ``observed`` (default: ``masks``) are the modalities the patients really have.
        """
        observed = masks if observed is None else observed
        visible = {m: masks[m].to(torch.bool) for m in self.modalities}
        truth = {m: observed[m].to(torch.bool) for m in self.modalities}
        for m in self.modalities:
            if (visible[m] & ~truth[m]).any():
                raise ValueError(f"imputer: masks[{m!r}] marks rows present that observed does not")
        first = embeddings[self.modalities[0]]
        zero = torch.zeros((), dtype=first.dtype, device=first.device)
        total = torch.zeros(first.shape[0], self.hidden, dtype=first.dtype, device=first.device)
        count = torch.zeros(first.shape[0], 1, dtype=first.dtype, device=first.device)
        for m, enc in zip(self.modalities, self.encode, strict=True):
            x = torch.where(visible[m][:, None], embeddings[m], zero)  # hidden rows never seen
            total = total + torch.where(visible[m][:, None], enc(x), zero)
            count = count + visible[m][:, None].to(first.dtype)
        context = torch.where(count > 0, total / count.clamp_min(1), self.empty.to(first.dtype))

        filled: dict[str, torch.Tensor] = {}
        losses: list[torch.Tensor] = []
        for m, dec in zip(self.modalities, self.decode, strict=True):
            pred = dec(context)
            filled[m] = torch.where(visible[m][:, None], embeddings[m], pred)
            hidden_rows = truth[m] & ~visible[m]
            if hidden_rows.any():
                target = embeddings[m][hidden_rows]
                if self.detach_target:
                    target = target.detach()
                losses.append(torch.mean((pred[hidden_rows] - target) ** 2))
        loss = torch.stack(losses).mean() if losses else context.sum() * 0.0
        return Imputation(
            embeddings=filled,
            masks=visible,
            imputed={m: ~visible[m] for m in self.modalities},
            loss=loss,
        )
