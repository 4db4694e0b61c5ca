"""The grid's stacked model: a super learner of every other model's out-of-fold predictions.

Scored honestly, by the same folds as its members: the stack that predicts fold ``k`` is
fitted on the other folds' out-of-fold predictions and outcomes only (its penalty chosen by
leave-one-fold-out cross-validation among those folds), then applied to the fold-``k``
members' predictions of fold ``k``. Fold ``k``'s outcomes never reach the weights used on it.
As in the usual super learner, the members' out-of-fold predictions of the other folds come
from fits that did see fold ``k``'s patients; a fully nested version would refit every
member ``k`` more times.

The final stack is fitted on every patient's out-of-fold predictions and combines the
members' final models (``models/<member>/``) with those weights (``models/stack/``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medweave.experiment._jobs import ModelSpec
from medweave.experiment._results import Outcomes
from medweave.models.stack import StackCombiner, StackedModel, level_one

__all__ = ["STACK", "fit_stack"]

log = logging.getLogger("medweave.run")

STACK = "stack"


def _scale(pred: np.ndarray, group: np.ndarray) -> float:
    """A survival member's spread: the standard deviation of its scores around each fold's
    mean (fold models differ by a constant, which is not spread)."""
    centred = pred.copy()
    for g in np.unique(group):
        centred[group == g] -= pred[group == g].mean()
    sd = float(centred.std())
    return sd if sd > 1e-12 else 1.0


def fit_stack(
    *,
    task: str,
    outcomes: Outcomes,
    results: dict[str, list[dict[str, np.ndarray]]],
    modalities: list[str],
    n: int,
    bundle_of: Callable[[str], Path],
    out: Path | None,
) -> tuple[ModelSpec, list[dict[str, np.ndarray]], dict[str, Any]] | None:
    """The stack's spec, its per-fold results (in the form of a grid job's results) and its
    description for ``results.json``; the final bundle goes to ``out``. None when fewer
    than two models have predictions to combine."""
    t0 = time.perf_counter()
    oof: dict[str, np.ndarray] = {}
    names = [name for name, folds in results.items() if folds]
    if not names:
        return None
    folds = results[names[0]]
    group = np.full(n, -1, dtype=np.int64)
    for k, f in enumerate(folds):
        group[f["test"]] = k
    for name in names:
        pred = np.full(n, np.nan)
        for f in results[name]:
            pred[f["test"]] = f["pred"]
        if not np.all(np.isfinite(pred[group >= 0])):
            log.warning("stack: %s has non-finite predictions and is left out", name)
            continue
        oof[name] = pred
    members = list(oof)
    if len(members) < 2:
        return None
    scale = {
        m: 1.0 if task == "binary" else _scale(oof[m][group >= 0], group[group >= 0])
        for m in members
    }

    def features(which: Callable[[str], np.ndarray]) -> np.ndarray:
        return np.column_stack([level_one(which(m), task, scale[m]) for m in members])

    z = features(lambda m: oof[m])
    target = outcomes.arrays()
    fold_results, fold_weights = [], []
    for k, f in enumerate(folds):
        train = (group >= 0) & (group != k)
        comb = StackCombiner(task).fit(
            z[train], {key: v[train] for key, v in target.items()}, group[train]
        )
        decision = comb.decision(z[f["test"]])
        res: dict[str, np.ndarray] = {
            "train": f["train"],
            "test": f["test"],
            "pred": 1 / (1 + np.exp(-decision)) if task == "binary" else decision,
        }
        if task == "survival":
            # the fold-k members' scores of fold k's training patients, for the Breslow
            # baseline of the fold
            res["train_pred"] = comb.decision(
                features(lambda m, k=k: results[m][k]["train_pred"])  # type: ignore[misc]
            )
        fold_results.append(res)
        fold_weights.append({"fold": k, "penalty": comb.penalty, "weights": _named(members, comb)})
    seen = group >= 0
    final = StackCombiner(task).fit(
        z[seen], {key: v[seen] for key, v in target.items()}, group[seen]
    )
    seconds = (time.perf_counter() - t0) / (len(folds) + 1)
    for res in fold_results:
        res["seconds"] = np.array(seconds)
    info: dict[str, Any] = {
        "members": members,
        "weights": _named(members, final),
        "intercept": final.intercept,
        "penalty": final.penalty,
        "folds": fold_weights,
        "bundle": False,
    }
    if out is not None:
        missing = [
            m
            for m in members
            if final.weights[members.index(m)] > 0 and not (bundle_of(m) / "bundle.json").is_file()
        ]
        if missing:
            log.warning("stack: no final bundle for %s; the stack's bundle is not written", missing)
        else:
            StackedModel(
                task,
                [
                    {"name": m, "path": str(bundle_of(m)), "weight": float(w), "scale": scale[m]}
                    for m, w in zip(members, final.weights, strict=True)
                ],
                final.intercept,
                final.penalty,
            ).save(out, overwrite=True)
            info["bundle"] = True
    log.info("stack: weights %s (penalty %g)", info["weights"], final.penalty)
    spec = ModelSpec(STACK, STACK, tuple(modalities))
    return spec, fold_results, info


def _named(members: list[str], comb: StackCombiner) -> dict[str, float]:
    return {m: round(float(w), 6) for m, w in zip(members, comb.weights, strict=True)}
