"""The multimodal estimator: encoders per modality, a fusion, a task head; Lightning underneath.

scikit-learn's contract: the constructor stores parameters, ``fit(cohort, y)`` does the
work, learned state ends in ``_``. Training uses the union of patients: a patient lacking
a modality keeps its row and a False mask, and modality dropout hides present modalities
at random during training so the model learns to work with what each patient has.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medweave import __version__
from medweave._atomic import atomic_dir
from medweave.cohort import Cohort
from medweave.errors import InputError
from medweave.models._auto import AUTO, RAW, check_capacity, profile, resolve
from medweave.models._bundle import jsonable, read_bundle_meta, spec_from_json, spec_to_json
from medweave.models._genesets import gene_sets_by_modality, map_gene_sets
from medweave.models._prep import (
    ModalityPrep,
    ModelInput,
    PreparedBatch,
    fit_preps,
    n_rows,
    prepare,
    take_rows,
)
from medweave.models._store import EncoderStore, digest, store_key
from medweave.models.encoders import Encoder, InputSpec, build_encoder
from medweave.models.fusion import Fusion, build_fusion
from medweave.models.fusion.imputation import LearnedImputer, ModalityDropout
from medweave.models.interactions import FOLDS as GLM_FOLDS
from medweave.models.interactions import (
    MAIN_PENALTIES,
    PAIR_PENALTIES,
    CrossModalGLM,
    fit_glm,
)
from medweave.models.survival import as_survival
from medweave.models.tasks import TASKS, Task

__all__ = ["BUNDLE_FORMAT", "MultimodalEstimator", "staged_modalities"]

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "medweave-bundle/1"
SURVIVAL_TASKS = ("cox", "discrete_hazard")
#: Modality kinds without a fixed feature vector: no pair terms in ``interactions`` (an
#: image takes part through its frozen encoder's embedding, a sequence not at all).
_NO_VECTOR = ("image", "sequence")
DEFAULT_ENCODERS = {
    "tabular": "mlp",
    "exposure": "mlp",
    "omics": "omics_mlp",
    "image": "image_cnn",
    "embedding": "passthrough",
    "sequence": "gru",
}


class _Net(nn.Module):
    """Encoders -> fusion -> head, with modality dropout in training.

    With ``aux_heads``, each modality also has its own task head on its embedding; their
    losses (on the patients who have the modality) make every encoder learn its modality's
    signal from the first epoch, instead of leaving a slow encoder (images) behind while
    faster ones drive the fused loss down.

    An ``imputer`` predicts missing (or dropped-out) modalities' embeddings, which reach the
    fusion flagged (:meth:`~medweave.models.fusion.imputation.Imputation.flagged`).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        fusion: Fusion,
        head: nn.Module,
        *,
        modality_dropout: float,
        aux_heads: dict[str, nn.Module] | None = None,
        imputer: LearnedImputer | None = None,
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.head = head
        self.dropout = ModalityDropout(modality_dropout)
        self.aux_heads = nn.ModuleDict(aux_heads or {})
        self.imputer = imputer

    def encode(
        self, inputs: dict[str, ModelInput], known: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Every modality's embedding; those in ``known`` (computed once for several
        networks that share the encoder) are taken as they are."""
        known = known or {}
        return {m: known[m] if m in known else enc(inputs[m]) for m, enc in self.encoders.items()}

    def fuse(self, emb: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fuse_and_impute(emb, masks)[0]

    def fuse_and_impute(
        self, emb: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fused representation, and the imputer's reconstruction loss (None without
        an imputer): scored on the modalities present but hidden by modality dropout."""
        visible = self.dropout(masks) if self.training else masks
        if self.imputer is None:
            return self.fusion(emb, visible), None
        imputation = self.imputer(emb, visible, observed=masks)
        # An imputation estimates the missing embedding and learns from the reconstruction
        # loss only; the task loss does not bend it into a feature of its own.
        imputation.embeddings = {
            m: torch.where(imputation.imputed[m][:, None], x.detach(), x)
            for m, x in imputation.embeddings.items()
        }
        return self.fusion(*imputation.flagged()), imputation.loss

    def embed(
        self,
        inputs: dict[str, ModelInput],
        masks: dict[str, torch.Tensor],
        known: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return self.fuse(self.encode(inputs, known), masks)

    def forward(
        self,
        inputs: dict[str, ModelInput],
        masks: dict[str, torch.Tensor],
        known: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return self.head(self.embed(inputs, masks, known))


def staged_modalities(
    kinds: Mapping[str, str], *, pretrain: bool | list[str] | None = None
) -> list[str]:
    """Which of a model's modalities (name -> block kind) ``pretrain`` trains alone first:
    the image modalities by default (None), all (True), none (False), or those named. A
    grid's estimators of one fold share these stage-1 encoders through the store."""
    if pretrain is None:
        return [m for m, kind in kinds.items() if kind == "image"]
    if isinstance(pretrain, bool):
        return list(kinds) if pretrain else []
    return [m for m in kinds if m in pretrain]


class _Rows(Dataset):
    def __init__(self, batch: PreparedBatch, target: torch.Tensor, rows: np.ndarray) -> None:
        self.batch, self.target, self.rows = batch, target, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(
        self, i: int
    ) -> tuple[dict[str, ModelInput], dict[str, torch.Tensor], torch.Tensor]:
        return self._take(int(self.rows[i]))

    def __getitems__(
        self, idx: list[int]
    ) -> tuple[dict[str, ModelInput], dict[str, torch.Tensor], torch.Tensor]:
        """A whole batch, already collated — torch's fetcher calls this instead of
        ``__getitem__`` per row: the same rows in the same order, one gather per tensor
        instead of a dict per patient and a collation (a fifth of a small network's
        training time); sequence padding is cut to the batch's longest by ``take_rows``."""
        return self._take(torch.as_tensor(self.rows[np.asarray(idx, dtype=np.int64)]))

    def _take(
        self, r: int | torch.Tensor
    ) -> tuple[dict[str, ModelInput], dict[str, torch.Tensor], torch.Tensor]:
        """Inputs, masks and targets of batch row(s) ``r``."""
        return (
            {m: take_rows(x, r) for m, x in self.batch.inputs.items()},
            {m: k[r] for m, k in self.batch.masks.items()},
            self.target[r],
        )


class _Lit(L.LightningModule):
    def __init__(
        self,
        net: _Net,
        task: Task,
        *,
        lr: float,
        weight_decay: float,
        aux_weight: float,
        impute_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.net, self.task, self.lr, self.weight_decay = net, task, lr, weight_decay
        self.aux_weight, self.impute_weight = aux_weight, impute_weight

    def _step(self, batch: Any) -> torch.Tensor:
        inputs, masks, target = batch
        return self.task.loss(self.net(inputs, masks), target)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, masks, target = batch
        emb = self.net.encode(inputs)
        fused, impute_loss = self.net.fuse_and_impute(emb, masks)
        loss = self.task.loss(self.net.head(fused), target)
        self.log("train_loss", loss, batch_size=len(target), on_epoch=True, on_step=False)
        if impute_loss is not None and self.impute_weight > 0:
            loss = loss + self.impute_weight * impute_loss
        aux = [
            self.task.loss(head(emb[m][masks[m]]), target[masks[m]])
            for m, head in self.net.aux_heads.items()
            if int(masks[m].sum()) >= 2
        ]
        if aux and self.aux_weight > 0:
            loss = loss + self.aux_weight * torch.stack(aux).mean()
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss = self._step(batch)
        if self.net.imputer is not None and self.impute_weight > 0:
            loss = loss + self.impute_weight * self._impute_loss(batch, batch_idx)
        self.log("val_loss", loss, batch_size=len(batch[2]), prog_bar=False, sync_dist=True)

    def _impute_loss(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The imputer's reconstruction loss on validation patients, present modalities hidden
        as in training (the same rows every epoch), so early stopping also waits for it."""
        inputs, masks, _ = batch
        assert self.net.imputer is not None
        hide = ModalityDropout(self.net.dropout.p).train()
        visible = hide(masks, generator=torch.Generator().manual_seed(batch_idx))
        return self.net.imputer(self.net.encode(inputs), visible, observed=masks).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class MultimodalEstimator(BaseEstimator):
    """Encode each modality, fuse, predict: classification, regression or survival.

    Settings whose default is ``"auto"`` (optimisation, early stopping's split, batch
    size, widths, principal components, gene screening, ensemble, the GLM, image
    augmentation) are chosen at :meth:`fit` from the training cohort — its patients,
    events and modalities — by the rules of :mod:`medweave.models._auto`; a value passed
    is used as given. The fitted estimator records each choice and its reason in
    ``settings_`` (name -> ``{"value", "reason"}``, plus ``events_per_1k_parameters``)
    and what the cohort's size makes doubtful in ``settings_warnings_`` (also logged);
    both travel in the bundle.

    Parameters
    ----------
    preset
        ``"auto"`` (the default): the rules above; ``"none"`` (or None): every ``"auto"``
        takes the estimator's plain constants (lr 2e-3, batch 128, patience 10, 80 epochs,
        no principal components, one network, no GLM, …:
        :data:`medweave.models._auto.RAW`).
    omics_screen
        Omics modality -> genes kept by their univariate association with the outcome on
        the training patients (Cox score test, or correlation with the label) instead of
        by variance, before ``pca``; None: by variance (``omics_top_genes``).
    task
        ``binary``, ``multiclass``, ``regression``, ``cox`` or ``discrete_hazard``.
    modalities
        Which of the cohort's modalities to use (all by default).
    fusion
        A registered fusion strategy (``medweave list``).
    encoders
        Modality -> encoder name; by default chosen from the modality's kind.
    modality_dropout
        Probability of hiding each present modality of a training patient (never the last).
    aux_weight
        Weight of the per-modality auxiliary losses (each encoder with its own head, on
        the patients who have the modality); 0 turns them off.
    impute
        A :class:`~medweave.models.fusion.imputation.LearnedImputer` between encoders and
        fusion predicts the embedding of each modality a patient lacks (or that dropout
        hides) from the ones the patient has. The fusion gets every embedding with an
        indicator column (1 = imputed, 0 = observed) and every mask True: it uses the
        imputations, knowing them for predictions, never mistaking them for data. The
        imputer learns on present modalities hidden by modality dropout (so it must be
        > 0); early stopping follows task loss + weighted reconstruction loss on the
        validation patients. Ignored with a single modality.
    impute_weight
        Weight of the imputer's reconstruction loss (mean squared error of the hidden
        embeddings, detached: the imputer follows the encoders, not vice versa).
    pretrain
        Modalities whose encoders are trained alone first and then frozen (see
        :meth:`fit`): a list of names, True for all, False for none; by default (None) the
        image modalities, whose encoders learn slowest and cost most.
    pca
        Principal components kept per feature modality, fitted on the training patients
        (an int for every modality with more features, or modality -> int); None keeps
        the features.
    pca_keep
        Features passed through beside the principal components instead of mixed into
        them — demographics such as ``age_at_index`` and ``sex_male``, whose effect would
        otherwise be spread thin over every component: feature names (for every modality
        with ``pca`` that has them) or modality -> feature names.
    feature_imputation
        Missing values of tabular and exposure features (a lab never ordered): ``median``
        fills the training median and adds a missing-value indicator per feature;
        ``iterative`` fills each with its conditional expectation given the patient's
        other features (chained Bayesian ridge regressions fitted on the training
        patients, :mod:`medweave.preprocess.impute`), so a latent state that shows in
        several features — severity in white cells and CRP — reads the same whichever of
        them was measured. Applied before ``pca``.
    max_epochs, min_epochs, patience
        Training stops after ``patience`` epochs without a lower validation loss, but not
        before ``min_epochs`` (a network whose loss stays flat at first — a CNN on weak
        labels — is not stopped before it starts learning), nor after ``max_epochs``; the
        best epoch's weights are kept.
    image_size, image_intensity
        Images are resampled to ``image_size``: ``"auto"`` (the default) follows the
        files — (64, 64) for 2-D images, for 3-D volumes per axis the median extent, 8 to
        64 voxels and at most 32 along the thinnest axis (the slices), e.g. (32, 64, 64)
        for CT series (:mod:`medweave.models._prep_image`); or a size of as many values as
        the images have spatial axes, e.g. (32, 32) or (16, 64, 64) — a size of the wrong
        dimensionality is an error before training. Intensities are z-scored per image
        (``zscore``), scaled to [0, 1] (``minmax``), or windowed to [0, 1]: ``window`` uses
        the DICOM file's own WindowCenter/WindowWidth, a (low, high) pair a fixed window
        in modality units (CT: Hounsfield units, e.g. (-1000, 400)).
    gene_sets
        Gene sets that structure the first layer of each omics modality's ``omics_mlp``
        encoder: set name -> gene ids (the omics features' names, e.g. Ensembl ids), or
        the path of a GMT file (MSigDB's format). After the fold's top-variance gene
        selection, genes not kept leave their sets and sets left empty are dropped (with
        a warning). Not combinable with ``pca`` on the same modality.
    pretrain_lr
        Learning rate of the stage-1 (pretrained) encoders; by default ``lr``.
    ensemble
        Number of networks trained (seeds ``seed``, ``seed + 1``, …, each with its own
        initialisation, batch order and validation split) whose outputs — logits,
        log-risks — are averaged: a deep ensemble, which evens out the luck of one
        initialisation and one early-stopping split. The members share the stage-1
        (``pretrain``) encoders, which are trained once; a model of one pretrained
        modality alone is a single network.
    interactions
        Average the networks with a penalised GLM with pairwise cross-modal interactions of
        this rank (see :mod:`medweave.models.interactions`): main effects of the feature
        modalities' prepared inputs and of the frozen image embeddings, and a
        rank-``interactions`` bilinear term between every two feature modalities (tabular,
        omics, exposure), penalties chosen by 5-fold cross-validation, fitted to
        convergence. The prediction averages the GLM's logit or log-risk with the
        networks', 1:1. None (the default): the networks alone. Not for ``multiclass``.
    sequence_max_len, sequence_min_count
        Sequence modalities: the most recent events kept per patient, and the training
        patients a code must be seen in to have its own embedding (others share one).
    encoder_store
        A folder where stage-1 encoders are kept (safetensors), keyed by everything that
        determines them (modality, encoder, preprocessing, training rows, target, seed and
        training settings). Estimators of a grid that share a fold and a modality train
        that encoder once; the result is identical to training it again. The GLM of
        ``interactions`` is kept there too, keyed by its inputs, target and settings: the
        fusion strategies of a fold share it.
    accelerator, devices, strategy
        Passed to Lightning's Trainer (e.g. ``strategy="ddp"`` over several GPUs or nodes).
    val_fraction
        Share of the training patients held out for early stopping; 0: none, and the
        networks train ``max_epochs`` epochs (the ``auto`` choice with fewer than 60
        events).
    """

    def __init__(
        self,
        *,
        task: str = "binary",
        modalities: list[str] | None = None,
        fusion: str = "attention",
        encoders: dict[str, str] | None = None,
        encoder_params: dict[str, dict[str, Any]] | str | None = "auto",
        fusion_params: dict[str, Any] | None = None,
        task_params: dict[str, Any] | None = None,
        embed_dim: int | str = "auto",
        fused_dim: int | str = "auto",
        modality_dropout: float = 0.15,
        aux_weight: float = 0.0,
        impute: bool = False,
        impute_weight: float = 1.0,
        pretrain: bool | list[str] | None = None,
        encoder_store: str | None = None,
        max_epochs: int | str = "auto",
        min_epochs: int | str = "auto",
        batch_size: int | str = "auto",
        lr: float | str = "auto",
        pretrain_lr: float | str | None = "auto",
        ensemble: int | str = "auto",
        interactions: int | str | None = "auto",
        weight_decay: float = 1e-2,
        val_fraction: float | str = "auto",
        patience: int | str = "auto",
        omics_top_genes: int | str = "auto",
        omics_screen: dict[str, int] | str | None = "auto",
        gene_sets: dict[str, list[str]] | str | os.PathLike[str] | None = None,
        pca: int | dict[str, int] | str | None = "auto",
        pca_keep: list[str] | dict[str, list[str]] | str | None = "auto",
        feature_imputation: str = "median",
        image_size: tuple[int, ...] | str = "auto",
        image_intensity: str | tuple[float, float] = "zscore",
        sequence_max_len: int = 256,
        sequence_min_count: int = 5,
        seed: int = 0,
        accelerator: str = "cpu",
        devices: int | str = 1,
        strategy: str = "auto",
        verbose: bool = False,
        preset: str | None = "auto",
    ) -> None:
        self.task = task
        self.modalities = modalities
        self.fusion = fusion
        self.encoders = encoders
        self.encoder_params = encoder_params
        self.fusion_params = fusion_params
        self.task_params = task_params
        self.embed_dim = embed_dim
        self.fused_dim = fused_dim
        self.modality_dropout = modality_dropout
        self.aux_weight = aux_weight
        self.impute = impute
        self.impute_weight = impute_weight
        self.pretrain = pretrain
        self.encoder_store = encoder_store
        self.max_epochs = max_epochs
        self.min_epochs = min_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.pretrain_lr = pretrain_lr
        self.ensemble = ensemble
        self.interactions = interactions
        self.weight_decay = weight_decay
        self.val_fraction = val_fraction
        self.patience = patience
        self.omics_top_genes = omics_top_genes
        self.omics_screen = omics_screen
        self.gene_sets = gene_sets
        self.pca = pca
        self.pca_keep = pca_keep
        self.feature_imputation = feature_imputation
        self.image_size = image_size
        self.image_intensity = image_intensity
        self.sequence_max_len = sequence_max_len
        self.sequence_min_count = sequence_min_count
        self.seed = seed
        self.accelerator = accelerator
        self.devices = devices
        self.strategy = strategy
        self.verbose = verbose
        self.preset = preset

    # --- targets -------------------------------------------------------------------------
    def _target(self, cohort: Cohort, y: Any) -> np.ndarray | Any:
        if self.task in SURVIVAL_TASKS:
            if y is None:
                missing = {"time", "event"} - set(cohort.patients.columns)
                if missing:
                    raise InputError(
                        f"task {self.task!r} needs survival columns time and event in the cohort "
                        f"(missing {sorted(missing)}), or pass y"
                    )
                y = cohort.patients[["time", "event"]]
            return as_survival(y)
        if y is None:
            if "outcome" not in cohort.patients.columns:
                raise InputError(
                    f"task {self.task!r}: pass y or give the cohort an 'outcome' column"
                )
            y = cohort.patients["outcome"]
        elif isinstance(y, str):
            if y not in cohort.patients.columns:
                raise InputError(f"y: the cohort has no column {y!r}")
            y = cohort.patients[y]
        y = np.asarray(y)
        if len(y) != cohort.n:
            raise InputError(f"y has {len(y)} values for {cohort.n} patients")
        return y

    # --- fitting ---------------------------------------------------------------------------
    def fit(self, cohort: Cohort, y: Any = None) -> MultimodalEstimator:
        """Fit preprocessing, encoders, fusion and head on ``cohort`` (a validation split
        of it drives early stopping).

        Training is staged for the modalities in ``pretrain`` (by default the images): each
        such encoder is first trained alone, with its own head, on the patients who have
        the modality, then frozen; the rest of the network is then trained jointly on its
        embeddings. A slow encoder so learns its modality's signal instead of being left
        behind when the fused loss stops improving, and a grid of models over the same
        fold trains it once (``encoder_store``).
        """
        L.seed_everything(self.seed, workers=True, verbose=False)
        target_raw = self._target(cohort, y)
        modalities = list(self.modalities or cohort.modalities)
        self._resolve(cohort, modalities, target_raw)
        rows = np.arange(cohort.n)
        strat = target_raw if self.task in ("binary", "multiclass") else None
        train, val = self._split(rows, self.seed, strat)
        task = TASKS.get(self.task)(**(self.task_params or {}))
        task.fit_target(_take(target_raw, train))
        target = task.encode_target(target_raw)
        components = self._components(cohort, modalities)
        gene_sets = gene_sets_by_modality(self.gene_sets, cohort, modalities, pca=components)
        if self.impute and len(modalities) > 1 and not self.modality_dropout > 0:
            raise InputError(
                "impute=True learns on present modalities hidden by modality dropout; "
                f"set modality_dropout > 0 (e.g. 0.15), got {self.modality_dropout!r}"
            )
        ensemble, interactions = self._s("ensemble"), self._s("interactions")
        if not (isinstance(ensemble, int) and ensemble >= 1):
            raise InputError(f"ensemble={ensemble!r}; expected a whole number >= 1")
        if interactions is not None and not (isinstance(interactions, int) and interactions >= 1):
            raise InputError(
                f"interactions={interactions!r}; expected a rank >= 1 (e.g. 1), or None"
            )
        if interactions is not None and self.task == "multiclass":
            raise InputError(
                "interactions: a multiclass model has no single logit to add them to; "
                "set interactions to None"
            )
        if not float(self.impute_weight) >= 0:
            raise InputError(f"impute_weight={self.impute_weight!r}; expected a number >= 0")
        screen = self._s("omics_screen")  # checked by resolve
        self.preps_ = fit_preps(
            cohort,
            modalities,
            train,
            omics_top_genes=self._s("omics_top_genes"),
            image_size=self._image_size(),
            image_intensity=self.image_intensity,
            components=components,
            keep=self._pca_keep(cohort, components),
            sequence_max_len=self.sequence_max_len,
            sequence_min_count=self.sequence_min_count,
            imputation=self.feature_imputation,
            screen=screen,
            target=target.numpy() if screen else None,
        )
        batch = prepare(cohort, self.preps_)
        self.task_ = task
        self.net_ = self._build_net(gene_sets)
        self.modalities_ = modalities
        staged = self._pretrained_modalities(modalities, list(cohort.modalities))
        self.shared_encoders_ = staged if len(modalities) > 1 else []
        self._check_capacity(staged if len(modalities) > 1 else [])
        emb: dict[str, torch.Tensor] = {}
        if not staged:
            self.n_epochs_ = self._train(self.net_, batch, target, train, val)
        elif len(modalities) == 1:
            self.n_epochs_ = self._pretrain(modalities[0], batch, target, train, val, whole=True)
        else:
            epochs = [self._pretrain(m, batch, target, train, val) for m in staged]
            with torch.no_grad():
                emb = {m: _embed(self.net_.encoders[m], batch.inputs[m]) for m in staged}
            stage2 = self._fit_fusion(self.net_, emb, batch, target, train, val)
            self.n_epochs_ = max(epochs) + stage2
        self.members_ = [self.net_]
        if len(modalities) > 1 or not staged:
            for k in range(1, ensemble):
                self.members_.append(self._fit_member(k, batch, emb, target, strat))
        for net in self.members_:
            net.eval()
        self.glm_ = self._fit_glm(batch, emb, target, strat)
        return self

    # --- settings (the ``auto`` preset) --------------------------------------------------
    def _s(self, name: str) -> Any:
        """The value of setting ``name`` in this fit: as given, or as :meth:`_resolve`
        chose it (:mod:`medweave.models._auto`)."""
        resolved = getattr(self, "resolved_", None)
        if resolved is not None and name in resolved:
            return resolved[name]
        value = getattr(self, name)
        return RAW[name] if value == AUTO else value

    def _resolve(self, cohort: Cohort, modalities: list[str], target: Any) -> None:
        """Choose every ``"auto"`` setting from the training cohort (``settings_``: the
        chosen values and why; ``settings_warnings_``: what the cohort's size makes
        doubtful)."""
        prof = profile(cohort, modalities, self.task, target)
        omics = tuple(m for m in modalities if cohort.modalities[m].kind == "omics")
        res = resolve(
            self.get_params(),
            prof,
            task=self.task,
            cohort=cohort,
            gene_set_modalities=omics if self.gene_sets is not None else (),
            encoders=self.encoders,
        )
        self.resolved_: dict[str, Any] = res.values
        self.settings_: dict[str, dict[str, Any]] = res.settings
        self.settings_warnings_: list[str] = res.warnings
        self.cohort_profile_: dict[str, Any] = prof.to_json()
        self._auto = (res, prof)
        if res.settings:
            log.info(
                "auto settings from %d patients, %d %s: %s",
                prof.patients,
                prof.events,
                prof.what_events,
                ", ".join(f"{k}={v['value']}" for k, v in res.settings.items()),
            )

    def _check_capacity(self, frozen: list[str]) -> None:
        """Events per 1,000 trainable parameters of one network (stage-1 encoders, trained
        apart on their own patients, left out), recorded in ``settings_`` and warned about
        when few."""
        res, prof = self._auto
        skip = tuple(f"encoders.{m}." for m in frozen)
        trainable = sum(
            p.numel() for n, p in self.net_.named_parameters() if not n.startswith(skip)
        )
        check_capacity(res, prof, int(trainable))
        self.settings_warnings_ = res.warnings

    def _split(
        self, rows: np.ndarray, seed: int, strat: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Training and early-stopping rows: ``val_fraction`` of ``rows``, stratified by
        class where every class can be; none with ``val_fraction`` 0."""
        fraction = float(self._s("val_fraction"))
        if not 0 <= fraction < 1:
            raise InputError(f"val_fraction={fraction!r}; expected a number in [0, 1)")
        if fraction == 0 or len(rows) < 4:
            return rows, rows[:0]
        try:
            return cast(
                tuple[np.ndarray, np.ndarray],
                tuple(
                    train_test_split(rows, test_size=fraction, random_state=seed, stratify=strat)
                ),
            )
        except ValueError:  # a class too small to stratify on
            return cast(
                tuple[np.ndarray, np.ndarray],
                tuple(train_test_split(rows, test_size=fraction, random_state=seed)),
            )

    def _fit_glm(
        self,
        batch: PreparedBatch,
        emb: dict[str, torch.Tensor],
        target: torch.Tensor,
        strat: np.ndarray | None,
    ) -> CrossModalGLM | None:
        """The penalised GLM averaged with the networks (``interactions``), on the prepared
        features and ``emb``, the frozen stage-1 embeddings."""
        self.glm_cv_: dict[str, float] = {}
        if self._s("interactions") is None:
            return None
        vectors = self._glm_modalities()
        if not vectors:
            return None
        inputs = self._glm_inputs(batch.inputs, vectors, emb)
        masks = {m: batch.masks[m] for m in vectors}
        pairs = [m for m in vectors if self.preps_[m].kind not in _NO_VECTOR]
        rank = int(self._s("interactions"))
        # Every fusion strategy of a fold has the same GLM: with a store, it is fitted once.
        store = self._store()
        # (The folds' strata are the classes, which the encoded target already holds.)
        key = digest(
            "glm/1",
            [self.task, self.task_.get_state(), rank, self.seed, vectors, pairs],
            [MAIN_PENALTIES, PAIR_PENALTIES, GLM_FOLDS],
            *(inputs[m] for m in vectors),
            *(masks[m] for m in vectors),
            target,
        )
        if store is not None and (state := store.get(key)) is not None:
            meta = store.metadata(key)
            g = CrossModalGLM.from_state(json.loads(meta["config"]), state)
            self.glm_cv_ = json.loads(meta["cv"])
        else:
            try:
                g, self.glm_cv_ = fit_glm(
                    self.task_.loss,
                    inputs,
                    masks,
                    target,
                    out_dim=self.task_.out_dim,
                    pairs=pairs,
                    rank=rank,
                    seed=self.seed,
                    strata=strat,
                )
            except (ValueError, RuntimeError) as exc:  # e.g. a class too small for its folds
                self._warn(f"the interactions GLM could not be fitted ({exc}); networks only")
                return None
            if store is not None:
                config = json.dumps(g.get_config())
                store.put(
                    key, g.state_dict(), metadata={"config": config, "cv": json.dumps(self.glm_cv_)}
                )
        log.info(
            "GLM beside the networks: main effects of %s (penalty %g), pairs among %s (%s); "
            "cross-validated loss %.4f",
            ", ".join(vectors),
            g.main_penalty,
            ", ".join(pairs) if len(pairs) > 1 else "none",
            "none kept" if g.pair_penalty is None else f"rank {g.rank}, penalty {g.pair_penalty:g}",
            min(self.glm_cv_.values()),
        )
        return g

    def _store(self) -> EncoderStore | None:
        return EncoderStore(self.encoder_store) if self.encoder_store else None

    def _glm_modalities(self) -> list[str]:
        """Modalities with a vector input for the GLM: the feature modalities, and the
        image modalities whose frozen stage-1 encoder every member shares."""
        return [
            m
            for m in self.modalities_
            if self.preps_[m].kind not in _NO_VECTOR
            or (self.preps_[m].kind == "image" and m in self.shared_encoders_)
        ]

    @staticmethod
    def _glm_inputs(
        inputs: dict[str, ModelInput], vectors: list[str], shared: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The GLM's vector inputs: prepared features, or the embeddings of the shared,
        frozen stage-1 encoders (``shared``, :meth:`_shared_embeddings`)."""
        return {m: shared[m] if m in shared else cast(torch.Tensor, inputs[m]) for m in vectors}

    @torch.no_grad()
    def _shared_embeddings(self, inputs: dict[str, ModelInput]) -> dict[str, torch.Tensor]:
        """The frozen stage-1 encoders' embeddings, computed once for every ensemble member
        and the GLM (an image encoder is the costliest part of a prediction)."""
        return {m: _embed(self.net_.encoders[m], inputs[m]) for m in self.shared_encoders_}

    def _fit_member(
        self,
        k: int,
        batch: PreparedBatch,
        emb: dict[str, torch.Tensor],
        target: torch.Tensor,
        strat: np.ndarray | None,
    ) -> _Net:
        """Ensemble member ``k``: its own seed, initialisation and validation split; the
        stage-1 encoders of the first network."""
        seed = self.seed + k
        train, val = self._split(np.arange(len(target)), seed, strat)
        torch.manual_seed(seed)
        net = _assemble(
            _encoders_from_configs(self.encoder_configs_),
            self.task_,
            fusion=self.fusion_name_,
            fusion_kwargs=self.fusion_config_,
            imputer_config=self.imputer_config_,
            modality_dropout=self.modality_dropout,
            aux_weight=self.aux_weight,
        )
        for m in self.shared_encoders_:
            net.encoders[m] = self.net_.encoders[m]
        if self.shared_encoders_:
            self._fit_fusion(net, emb, batch, target, train, val, seed=seed)
        else:
            self._train(net, batch, target, train, val, seed=seed)
        return net

    def _train(
        self,
        net: _Net,
        batch: PreparedBatch,
        target: torch.Tensor,
        train: np.ndarray,
        val: np.ndarray,
        *,
        lr: float | None = None,
        seed: int | None = None,
    ) -> int:
        """Train ``net`` on rows ``train`` with early stopping on ``val``; restore the best
        epoch's weights. Returns the number of epochs run.

        A training that ends with non-finite weights (a diverging loss) is not the end of
        the fit: the network is re-initialised and trained again at a tenth of the rate
        with gradients clipped, with a warning in ``settings_warnings_``."""
        rate = float(lr or self._s("lr"))
        epochs = self._train_once(net, batch, target, train, val, lr=rate, seed=seed)
        if _finite(net):
            return epochs
        self._warn(
            f"training diverged (non-finite weights) at lr {rate:g}; trained again from a "
            f"fresh start at lr {rate / 10:g} with gradients clipped at norm 1"
        )
        with torch.no_grad():
            torch.manual_seed((self.seed if seed is None else seed) + 7919)
            for module in net.modules():
                reset = getattr(module, "reset_parameters", None)
                if module is not net and callable(reset):
                    reset()
        epochs = self._train_once(net, batch, target, train, val, lr=rate / 10, seed=seed, clip=1.0)
        if not _finite(net):
            raise InputError(
                f"training diverged twice (lr {rate:g}, then {rate / 10:g} with clipping); "
                "check the inputs for extreme values, or set a smaller lr"
            )
        return epochs

    def _train_once(
        self,
        net: _Net,
        batch: PreparedBatch,
        target: torch.Tensor,
        train: np.ndarray,
        val: np.ndarray,
        *,
        lr: float,
        seed: int | None = None,
        clip: float | None = None,
    ) -> int:
        seed = self.seed if seed is None else seed
        L.seed_everything(seed, workers=True, verbose=False)
        if len(val) < 2:  # too few to validate on: monitor the training rows instead
            val = train
        max_epochs = int(self._s("max_epochs"))
        lit = _Lit(
            net,
            self.task_,
            lr=lr,
            weight_decay=self.weight_decay,
            aux_weight=self.aux_weight,
            impute_weight=float(self.impute_weight),
        )
        train_dl = DataLoader(
            _Rows(batch, target, train),
            batch_size=int(self._s("batch_size")),
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
            collate_fn=_collated,
        )
        val_dl = DataLoader(
            _Rows(batch, target, val), batch_size=max(len(val), 1), collate_fn=_collated
        )
        patience = int(self._s("patience"))
        with tempfile.TemporaryDirectory(prefix="medweave-ckpt-") as ckpt_dir:
            checkpoint = L.pytorch.callbacks.ModelCheckpoint(
                dirpath=ckpt_dir, monitor="val_loss", mode="min", save_top_k=1
            )
            with _lightning_quiet(verbose=self.verbose):
                trainer = L.Trainer(
                    max_epochs=max_epochs,
                    min_epochs=min(int(self._s("min_epochs")), max_epochs),
                    accelerator=self.accelerator,
                    devices=self.devices,
                    strategy=self.strategy,
                    deterministic=True,
                    callbacks=[
                        L.pytorch.callbacks.EarlyStopping("val_loss", patience=patience),
                        checkpoint,
                    ],
                    logger=False,
                    enable_progress_bar=self.verbose,
                    enable_model_summary=False,
                    num_sanity_val_steps=0,
                    gradient_clip_val=clip,
                )
            with warnings.catch_warnings(), _lightning_quiet(verbose=self.verbose):
                warnings.filterwarnings("ignore", ".*does not have many workers.*")
                warnings.filterwarnings("ignore", ".*number of training batches.*")
                warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
                trainer.fit(lit, train_dl, val_dl)
            best = checkpoint.best_model_path
            if best and os.path.exists(best):
                state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
                lit.load_state_dict(state)
        return int(trainer.current_epoch)

    def _warn(self, message: str) -> None:
        """A warning about this fit: logged, and kept in ``settings_warnings_``."""
        log.warning("%s", message)
        self.settings_warnings_ = [*getattr(self, "settings_warnings_", []), message]

    def _pretrain(
        self,
        modality: str,
        batch: PreparedBatch,
        target: torch.Tensor,
        train: np.ndarray,
        val: np.ndarray,
        *,
        whole: bool = False,
    ) -> int:
        """Stage 1: train ``modality``'s encoder alone (with a head of its own) on the
        patients who have the modality, then freeze it. With ``whole``, that single-modality
        network (encoder, fusion, head) is the model."""
        mask = batch.masks[modality].numpy()
        train, val = train[mask[train]], val[mask[val]]
        if len(train) < 10:
            raise InputError(
                f"modality {modality!r}: only {len(train)} training patients have it; "
                "at least 10 are needed to train its encoder (drop it from modalities)"
            )
        single = self._stage1_net(modality)
        sub = PreparedBatch({modality: batch.inputs[modality]}, {modality: batch.masks[modality]})
        store = self._store()
        key = store_key(self._key_view(), modality, self.preps_[modality], target, train, val)
        if store is not None and (state := store.get(key)) is not None:
            single.load_state_dict(state)
            epochs = int(store.epochs(key))
        else:
            epochs = self._train(single, sub, target, train, val, lr=self._s("pretrain_lr"))
            if store is not None:
                store.put(key, single.state_dict(), epochs=epochs)
        if whole:
            self.net_ = single
            self.fusion_name_, self.fusion_config_ = "concat", single.fusion.get_config()
        else:
            frozen = single.encoders[modality].requires_grad_(requires_grad=False)
            self.net_.encoders[modality] = frozen
        return epochs

    def _key_view(self) -> Any:
        """This estimator as :func:`~medweave.models._store.store_key` reads it, with the
        settings this fit uses (the ``auto`` ones as chosen), so a stage-1 encoder is
        shared exactly between fits that would train it the same."""
        names = (
            "embed_dim", "fused_dim", "max_epochs", "min_epochs", "batch_size", "patience",
            "lr", "pretrain_lr",
        )  # fmt: skip
        return SimpleNamespace(
            task=self.task,
            task_params=self.task_params,
            weight_decay=self.weight_decay,
            seed=self.seed,
            encoder_configs_=self.encoder_configs_,
            **{k: self._s(k) for k in names},
        )

    def _stage1_net(self, modality: str) -> _Net:
        """A fresh single-modality network (encoder, concat projection, head), initialised
        from the seed and the modality alone, so every estimator of a grid that trains this
        encoder on the same fold starts from the same weights."""
        torch.manual_seed(self.seed * 1_000_003 + zlib.crc32(modality.encode()))
        encoder = _encoders_from_configs({modality: self.encoder_configs_[modality]})[modality]
        fusion = build_fusion("concat", {modality: encoder.out_dim}, out_dim=self._s("fused_dim"))
        head = self.task_.make_head(fusion.out_dim)
        return _Net({modality: encoder}, fusion, head, modality_dropout=0.0)

    def _image_size(self) -> Any:
        """``image_size`` as the preprocessing takes it (a list from YAML or JSON as a
        tuple); :func:`medweave.models._prep_image.resolve_image_size` checks it."""
        size: Any = self.image_size
        return tuple(size) if isinstance(size, list) else size

    @torch.no_grad()
    def _components(self, cohort: Cohort, modalities: list[str]) -> dict[str, int]:
        """Principal components per modality (``pca``): an int applies to every feature
        modality with more features than that."""
        pca = self._s("pca")
        if pca is None:
            return {}
        if isinstance(pca, dict):  # shared by a study's models: others' entries unused
            unknown = sorted(set(pca) - set(cohort.modalities))
            if unknown:
                raise InputError(
                    f"pca: {unknown} not among the cohort's modalities {list(cohort.modalities)}"
                )
            return {m: int(k) for m, k in pca.items() if m in modalities}
        return {
            m: int(pca)
            for m in modalities
            if cohort.modalities[m].kind != "image"
            and len(cohort.modalities[m].feature_names) > int(pca)
        }

    def _pca_keep(self, cohort: Cohort, components: dict[str, int]) -> dict[str, list[str]]:
        """The ``pca_keep`` features of each modality reduced to principal components."""
        pca_keep = self._s("pca_keep")
        if not pca_keep:
            return {}
        if isinstance(pca_keep, dict):
            unknown = sorted(set(pca_keep) - set(cohort.modalities))
            if unknown:
                raise InputError(
                    f"pca_keep: {unknown} not among the cohort's modalities "
                    f"{list(cohort.modalities)}"
                )
            return {m: list(pca_keep.get(m, [])) for m in components}
        names = list(pca_keep)  # shared by a study's models: may name unused features
        known = {f for b in cohort.modalities.values() for f in b.feature_names}
        if missing := [f for f in names if f not in known]:
            raise InputError(
                f"pca_keep: no modality of the cohort has feature {missing[0]!r}; "
                "remove it from pca_keep"
            )
        return {
            m: [f for f in names if f in cohort.modalities[m].feature_names] for m in components
        }

    def _pretrained_modalities(self, modalities: list[str], available: list[str]) -> list[str]:
        """The modalities whose encoders are trained alone first (see ``pretrain``)."""
        if self.pretrain is not None and not isinstance(self.pretrain, bool):  # names
            unknown = sorted(set(self.pretrain) - set(available))
            if unknown:  # names of other modalities are fine: a study's models share the list
                raise InputError(
                    f"pretrain: {unknown} not among the cohort's modalities {available}"
                )
        return staged_modalities(
            {m: self.preps_[m].kind for m in modalities}, pretrain=self.pretrain
        )

    def _fit_fusion(
        self,
        net: _Net,
        emb: dict[str, torch.Tensor],
        batch: PreparedBatch,
        target: torch.Tensor,
        train: np.ndarray,
        val: np.ndarray,
        *,
        seed: int | None = None,
    ) -> int:
        """Stage 2: train ``net``'s other encoders, fusion and head on ``emb``, the frozen
        encoders' embeddings of every patient (computed once, not on every batch)."""
        inputs = {m: emb.get(m, x) for m, x in batch.inputs.items()}
        encoders = {m: nn.Identity() if m in emb else e for m, e in net.encoders.items()}
        stage = _Net(
            encoders,
            net.fusion,
            net.head,
            modality_dropout=self.modality_dropout,
            aux_heads=dict(net.aux_heads.items()),
            imputer=net.imputer,
        )
        return self._train(stage, PreparedBatch(inputs, batch.masks), target, train, val, seed=seed)

    def _build_net(self, gene_sets: dict[str, dict[str, list[str]]]) -> _Net:
        encoders: dict[str, Encoder] = {}
        self.encoder_configs_: dict[str, dict[str, Any]] = {}
        chosen = dict(self.encoders or {})
        for m, prep in self.preps_.items():
            name = chosen.get(m) or DEFAULT_ENCODERS[prep.kind]
            params = {
                "out_dim": self._s("embed_dim"),
                **(self._s("encoder_params") or {}).get(m, {}),
            }
            groups: dict[str, list[int]] = {}
            if m in gene_sets:
                if name != "omics_mlp":
                    raise InputError(
                        f"gene_sets: modality {m!r} uses encoder {name!r}; gene sets need "
                        f"'omics_mlp' (drop {m!r} from encoders or gene_sets=None)"
                    )
                kept = prep.arrays["genes"]
                groups = map_gene_sets(
                    gene_sets[m], modality=m, feature_names=prep.feature_names, kept=kept
                )
                params["gene_sets"] = True
            spec = InputSpec(
                kind=_input_kind(prep.kind),
                shape=prep.input_shape(),
                feature_groups=groups,
                vocab_size=prep.vocab_size,
            )
            encoders[m] = build_encoder(name, spec, **params)
            self.encoder_configs_[m] = {
                "name": name,
                "config": encoders[m].get_config(),
                "spec": spec_to_json(spec),
            }
        net = _assemble(
            encoders,
            self.task_,
            fusion=self.fusion,
            fusion_kwargs={"out_dim": self._s("fused_dim"), **(self._s("fusion_params") or {})},
            imputer_config={} if self.impute and len(encoders) > 1 else None,
            modality_dropout=self.modality_dropout,
            aux_weight=self.aux_weight,
        )
        self.fusion_name_, self.fusion_config_ = self.fusion, net.fusion.get_config()
        self.imputer_config_ = net.imputer.get_config() if net.imputer is not None else None
        return net

    # --- predicting ------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise InputError("this estimator is not fitted yet; call fit(cohort) first")

    @torch.no_grad()
    def _outputs(self, cohort: Cohort, *, part: str = "model") -> np.ndarray:
        """Raw outputs: of the whole model (``model``), of the ``networks`` alone or of the
        ``glm`` alone; ``embed``: the members' fused representations side by side."""
        self._check_fitted()
        g = getattr(self, "glm_", None)
        if part == "glm" and g is None:
            raise InputError("this model has no GLM (fit it with interactions=1)")
        batch = prepare(cohort, self.preps_)
        outs = []
        for inputs, masks in _chunks(batch, cohort.n):
            known = self._shared_embeddings(inputs)
            if part == "embed":
                nets = self.members_
                out = torch.cat([net.eval().embed(inputs, masks, known) for net in nets], 1)
            elif part == "glm" and g is not None:
                out = g(self._glm_inputs(inputs, list(g.main), known), masks)
            else:
                out = self._member_outputs(inputs, masks, known)
                if g is not None and part == "model":  # the two families, 1:1
                    out = (out + g(self._glm_inputs(inputs, list(g.main), known), masks)) / 2
            outs.append(out.cpu().numpy())
        return np.concatenate(outs, axis=0)

    def _member_outputs(
        self,
        inputs: dict[str, ModelInput],
        masks: dict[str, torch.Tensor],
        known: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """The ensemble members' outputs (logits, log-risks) averaged."""
        outs = [net.eval()(inputs, masks, known) for net in self.members_]
        return torch.stack(outs).mean(dim=0)

    def predict_output(self, cohort: Cohort, *, part: str = "model") -> dict[str, np.ndarray]:
        """Everything the task predicts (probabilities, labels, risks, survival curves).

        ``part``: the whole model, or (with ``interactions``) its ``networks`` or its
        ``glm`` alone — what each of the two families would predict by itself.
        """
        if part not in ("model", "networks", "glm"):
            raise InputError(f"part={part!r}; expected 'model', 'networks' or 'glm'")
        out = self._outputs(cohort, part=part)  # checks that the estimator is fitted
        return self.task_.predict(out)

    def predict_proba(self, cohort: Cohort) -> np.ndarray:
        pred = self.predict_output(cohort)
        if "proba" not in pred:
            raise InputError(f"task {self.task!r} has no probabilities; use predict_risk")
        return pred["proba"]

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        pred = self.predict_output(cohort)
        if "risk" not in pred:
            raise InputError(f"task {self.task!r} has no risk; use predict_proba or predict")
        return pred["risk"]

    def predict(self, cohort: Cohort) -> np.ndarray:
        pred = self.predict_output(cohort)
        for key in ("label", "value", "risk"):
            if key in pred:
                return pred[key]
        raise AssertionError(f"task {self.task!r} predicted none of label/value/risk")

    def transform(self, cohort: Cohort) -> np.ndarray:
        """The fused patient representation (n, fused_dim × ensemble members), e.g. for
        stratification."""
        return self._outputs(cohort, part="embed")

    def score(self, cohort: Cohort, y: Any = None) -> float:
        """AUROC (binary), accuracy (multiclass), R² (regression) or Harrell's C (survival)."""
        return float(self.task_.score(self.predict_output(cohort), self._target(cohort, y)))

    # --- bundles -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a bundle: ``model.safetensors`` (weights, preprocessing arrays) + ``bundle.json``.

        No pickle: loading a bundle from someone else cannot run code.
        """
        from safetensors.torch import save_file

        self._check_fitted()
        tensors = {
            f"model.{k}": v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()
        }
        shared = tuple(f"encoders.{m}." for m in self.shared_encoders_)
        for i, net in enumerate(self.members_[1:], start=1):  # shared encoders saved once
            tensors.update(
                {
                    f"member{i}.{k}": v.detach().cpu().contiguous()
                    for k, v in net.state_dict().items()
                    if not k.startswith(shared)
                }
            )
        for prep in self.preps_.values():
            tensors.update({k: torch.from_numpy(v) for k, v in prep.tensors().items()})
        g = getattr(self, "glm_", None)
        if g is not None:
            tensors.update({f"glm.{k}": v.contiguous() for k, v in g.state_dict().items()})
        meta = {
            "format": BUNDLE_FORMAT,
            "medweave_version": __version__,
            "params": jsonable(self.get_params()),
            "task": {"name": self.task, "state": self.task_.get_state()},
            "modalities": self.modalities_,
            "encoders": self.encoder_configs_,
            "fusion": {"name": self.fusion_name_, "config": self.fusion_config_},
            "imputer": getattr(self, "imputer_config_", None),
            "preprocessing": [p.to_json() for p in self.preps_.values()],
            "n_epochs": self.n_epochs_,
            "ensemble": {"members": len(self.members_), "shared_encoders": self.shared_encoders_},
            "glm": None if g is None else g.get_config(),
            "settings": jsonable(getattr(self, "resolved_", {})),
            "auto": {
                "preset": self.preset,
                "cohort": getattr(self, "cohort_profile_", None),
                "settings": jsonable(getattr(self, "settings_", {})),
                "warnings": list(getattr(self, "settings_warnings_", [])),
            },
        }
        out = Path(path)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            save_file(tensors, str(tmp / "model.safetensors"))
            (tmp / "bundle.json").write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MultimodalEstimator:
        """Rebuild an estimator from a bundle written by :meth:`save`."""
        from safetensors.torch import load_file

        root = Path(path)
        meta = read_bundle_meta(root, fmt=BUNDLE_FORMAT, what="model")
        tensors = load_file(str(root / "model.safetensors"))
        params = dict(meta["params"])
        if isinstance(params.get("image_size"), list):
            params["image_size"] = tuple(params["image_size"])
        est = cls(**params)
        est.task_ = Task.from_state(meta["task"]["name"], meta["task"]["state"])
        arrays = {k: v.numpy() for k, v in tensors.items() if k.startswith("prep.")}
        est.preps_ = {}
        for p in meta["preprocessing"]:
            prep = ModalityPrep.from_json(p, arrays)
            for k in ("keep", "indicator", "log"):
                if k in prep.arrays:
                    prep.arrays[k] = prep.arrays[k].astype(bool)
            if "genes" in prep.arrays:
                prep.arrays["genes"] = prep.arrays["genes"].astype(np.int64)
            est.preps_[prep.name] = prep
        ensemble = meta.get("ensemble", {"members": 1, "shared_encoders": []})
        est.shared_encoders_ = list(ensemble["shared_encoders"])
        shared = tuple(f"encoders.{m}." for m in est.shared_encoders_)
        first = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        est.members_ = []
        for i in range(int(ensemble["members"])):
            net = _assemble(
                _encoders_from_configs(meta["encoders"]),
                est.task_,
                fusion=meta["fusion"]["name"],
                fusion_kwargs=meta["fusion"]["config"],
                imputer_config=meta.get("imputer"),
                modality_dropout=float(params.get("modality_dropout", 0.0)),
                aux_weight=float(params.get("aux_weight", 0.0)),
            )
            state = first
            if i > 0:
                pre = f"member{i}."
                own = {k.removeprefix(pre): v for k, v in tensors.items() if k.startswith(pre)}
                state = {**{k: v for k, v in first.items() if k.startswith(shared)}, **own}
            net.load_state_dict(state)
            for m in est.shared_encoders_ if i > 0 else ():
                net.encoders[m] = est.members_[0].encoders[m]
            est.members_.append(net.eval())
        est.net_ = est.members_[0]
        est.glm_ = None
        if meta.get("glm"):
            glm = {k.removeprefix("glm."): v for k, v in tensors.items() if k.startswith("glm.")}
            est.glm_ = CrossModalGLM.from_state(meta["glm"], glm)
        est.encoder_configs_ = meta["encoders"]
        est.fusion_name_ = meta["fusion"]["name"]
        est.fusion_config_ = meta["fusion"]["config"]
        est.imputer_config_ = meta.get("imputer")
        est.modalities_ = list(meta["modalities"])
        est.n_epochs_ = int(meta.get("n_epochs", 0))
        auto = meta.get("auto") or {}
        if meta.get("settings"):  # bundles from before the preset hold the values in params
            est.resolved_ = dict(meta["settings"])
        est.settings_ = dict(auto.get("settings") or {})
        est.settings_warnings_ = list(auto.get("warnings") or [])
        est.cohort_profile_ = auto.get("cohort") or {}
        return est


def _encoders_from_configs(configs: dict[str, dict[str, Any]]) -> dict[str, Encoder]:
    """Untrained encoders from their JSON form (``encoder_configs_``, a bundle's)."""
    return {
        m: build_encoder(e["name"], spec_from_json(e["spec"]), **e["config"])
        for m, e in configs.items()
    }


def _assemble(
    encoders: dict[str, Encoder],
    task: Task,
    *,
    fusion: str,
    fusion_kwargs: dict[str, Any],
    imputer_config: dict[str, Any] | None,
    modality_dropout: float,
    aux_weight: float,
) -> _Net:
    """The fusion, head, auxiliary heads and imputer (with ``imputer_config``) around
    ``encoders``: the one place fitting, ensemble members and bundles build a network, in
    a fixed order, so that a seed gives the same initial weights."""
    imputes = imputer_config is not None
    fused = build_fusion(
        fusion,
        {m: e.out_dim + int(imputes) for m, e in encoders.items()},  # + the "imputed" flag
        **fusion_kwargs,
    )
    head = task.make_head(fused.out_dim)
    aux = _aux_heads(task, encoders, weight=aux_weight)
    imputer = None
    if imputer_config is not None:
        imputer = LearnedImputer({m: e.out_dim for m, e in encoders.items()}, **imputer_config)
    return _Net(
        encoders,
        fused,
        head,
        modality_dropout=modality_dropout,
        aux_heads=aux,
        imputer=imputer,
    )


@contextlib.contextmanager
def _lightning_quiet(*, verbose: bool) -> Iterator[None]:
    """Silence Lightning's per-fit banners ("GPU available", "max_epochs reached") unless
    ``verbose``; a grid fits hundreds of models."""
    if verbose:
        yield
        return
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _collated(batch: Any) -> Any:
    """The DataLoaders' ``collate_fn``: :meth:`_Rows.__getitems__` has collated the batch."""
    return batch


def _chunks(
    batch: PreparedBatch, n: int, size: int = 1024
) -> Iterator[tuple[dict[str, ModelInput], dict[str, torch.Tensor]]]:
    """``batch``'s inputs and masks in chunks of ``size`` patients (images can be large)."""
    for start in range(0, n, size):
        sl = slice(start, start + size)
        yield (
            {m: take_rows(x, sl) for m, x in batch.inputs.items()},
            {m: k[sl] for m, k in batch.masks.items()},
        )


def _embed(encoder: nn.Module, x: ModelInput, *, chunk: int = 512) -> torch.Tensor:
    """``encoder`` over ``x`` in evaluation mode, in chunks (images can be large)."""
    encoder.eval()
    parts = [encoder(take_rows(x, slice(i, i + chunk))) for i in range(0, n_rows(x), chunk)]
    return torch.cat(parts).detach()


def _aux_heads(task: Task, encoders: dict[str, Encoder], *, weight: float) -> dict[str, nn.Module]:
    """One task head per modality (on its embedding) when ``weight`` > 0."""
    if weight <= 0:
        return {}
    return {m: task.make_head(e.out_dim) for m, e in encoders.items()}


def _finite(net: nn.Module) -> bool:
    """Whether every weight of ``net`` is a finite number."""
    return all(bool(torch.isfinite(p).all()) for p in net.parameters())


def _input_kind(kind: str) -> Any:
    return kind if kind in ("tabular", "omics", "exposure", "image", "sequence") else "embedding"


def _take(y: Any, rows: np.ndarray) -> Any:
    if hasattr(y, "time") and hasattr(y, "event"):
        return type(y)(time=np.asarray(y.time)[rows], event=np.asarray(y.event)[rows])
    return np.asarray(y)[rows]
