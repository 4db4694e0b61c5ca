"""A stacked model (super learner) of other models' predictions.

Each member model's prediction enters as one feature on a scale where a sum makes sense —
the logit of its probability (binary) or its log-risk divided by its spread (survival) —
and the stack fits **non-negative** weights on them: a penalised logistic regression
(binary) or a penalised Cox model stratified by fold (survival), by L-BFGS-B with the
weights bounded below by zero. Non-negative weights keep it a weighted vote of the members
(van der Laan, Polley & Hubbard 2007, "Super learner"): a member that is a near copy of
another shares its weight instead of cancelling it, and none is used backwards. The ridge
penalty is chosen by leave-one-group-out cross-validation over the groups of the level-one
data (the folds whose out-of-fold predictions they are).

Survival scores of different fold models differ by a constant (a Cox model's origin is
arbitrary), so the Cox likelihood is stratified by ``groups``: risk sets are formed within
a fold, where the constant cancels.

:class:`StackedModel` is the bundle: weights + the member bundles it combines (by path,
beside it in the run's ``models/`` folder), loaded with :func:`load_model`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from medweave._atomic import atomic_file
from medweave.errors import InputError
from medweave.models._bundle import read_bundle_meta

__all__ = ["STACK_FORMAT", "StackCombiner", "StackedModel", "level_one", "load_model"]

STACK_FORMAT = "medweave-stack/1"
#: Ridge penalties tried for the weights (per unit of mean loss); 0 is the plain
#: non-negative fit, the largest shrinks the weights towards an even, small vote.
PENALTIES = (0.0, 1e-3, 1e-2, 1e-1)
_EPS = 1e-6


def level_one(pred: np.ndarray, task: str, scale: float = 1.0) -> np.ndarray:
    """A member's prediction as a stacking feature: logit of the probability (binary), or
    the log-risk divided by ``scale`` (survival)."""
    pred = np.asarray(pred, dtype=np.float64)
    if task == "binary":
        p = np.clip(pred, _EPS, 1 - _EPS)
        return np.asarray(np.log(p) - np.log1p(-p))
    return pred / scale


def _logistic(
    params: np.ndarray, z: np.ndarray, y: np.ndarray, lam: float
) -> tuple[float, np.ndarray]:
    b, w = params[0], params[1:]
    eta = b + z @ w
    # mean log-loss, stably: log(1 + e^eta) - y * eta
    loss = np.logaddexp(0.0, eta) - y * eta
    resid = 1.0 / (1.0 + np.exp(-eta)) - y
    n = len(y)
    value = float(loss.mean() + 0.5 * lam * w @ w)
    grad = np.concatenate([[resid.mean()], z.T @ resid / n + lam * w])
    return value, grad


def _cox_parts(
    eta: np.ndarray, time: np.ndarray, event: np.ndarray, z: np.ndarray
) -> tuple[float, np.ndarray, int]:
    """Negative partial log-likelihood (Breslow ties) of one stratum and its gradient."""
    order = np.argsort(-time, kind="stable")
    t, e, zz, h = time[order], event[order], z[order], eta[order]
    shift = h.max()
    w = np.exp(h - shift)
    cw = np.cumsum(w)
    cz = np.cumsum(w[:, None] * zz, axis=0)
    # the risk set of a time holds every patient with time >= it: the last of its ties
    last = np.searchsorted(-t, -t, side="right") - 1
    denom, num = cw[last], cz[last]
    ev = e.astype(bool)
    value = -float(np.sum(h[ev] - shift - np.log(denom[ev])))
    grad = -(zz[ev] - num[ev] / denom[ev, None]).sum(axis=0)
    return value, grad, int(ev.sum())


def _cox(
    params: np.ndarray,
    z: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    groups: np.ndarray,
    lam: float,
) -> tuple[float, np.ndarray]:
    eta = z @ params
    value, grad, events = 0.0, np.zeros_like(params), 0
    for g in np.unique(groups):
        s = groups == g
        v, gr, k = _cox_parts(eta[s], time[s], event[s], z[s])
        value, grad, events = value + v, grad + gr, events + k
    events = max(events, 1)
    return value / events + 0.5 * lam * params @ params, grad / events + lam * params


@dataclass
class StackCombiner:
    """Non-negative, ridge-penalised weights over the members' level-one features."""

    task: str
    penalties: Sequence[float] = PENALTIES
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    intercept: float = 0.0
    penalty: float = 0.0
    cv_loss: dict[float, float] = field(default_factory=dict)

    def _objective(
        self, z: np.ndarray, target: dict[str, np.ndarray], groups: np.ndarray, lam: float
    ) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
        if self.task == "binary":
            return lambda p: _logistic(p, z, target["y"], lam)
        return lambda p: _cox(p, z, target["time"], target["event"], groups, lam)

    def _solve(
        self, z: np.ndarray, target: dict[str, np.ndarray], groups: np.ndarray, lam: float
    ) -> np.ndarray:
        m = z.shape[1]
        binary = self.task == "binary"
        # start from an even vote; the intercept (binary) is free, the weights >= 0
        start = np.full(m + binary, 1.0 / m)
        bounds = [(None, None)] * binary + [(0.0, None)] * m
        if binary:
            start[0] = 0.0
        res = minimize(
            self._objective(z, target, groups, lam),
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 500},
        )
        params = np.asarray(res.x, dtype=np.float64)
        if not np.all(np.isfinite(params)):  # never expected; an even vote is always safe
            params = start
        return params

    def _loss(
        self, params: np.ndarray, z: np.ndarray, target: dict[str, np.ndarray], g: np.ndarray
    ) -> float:
        """Held-out loss without the penalty: mean log-loss, or partial deviance per event."""
        value, _ = self._objective(z, target, g, 0.0)(params)
        return float(value)

    def fit(
        self, z: np.ndarray, target: dict[str, np.ndarray], groups: np.ndarray
    ) -> StackCombiner:
        """Fit on level-one features ``z`` (patients × members) with the outcome in
        ``target`` (``y``, or ``time`` and ``event``); ``groups`` are the folds the rows'
        predictions came from (inner cross-validation over them, and Cox strata)."""
        z = np.asarray(z, dtype=np.float64)
        levels = np.unique(groups)
        self.cv_loss = {}
        if len(levels) >= 2 and len(self.penalties) > 1:
            for lam in self.penalties:
                losses = []
                for g in levels:
                    tr, te = groups != g, groups == g
                    params = self._solve(z[tr], _rows(target, tr), groups[tr], lam)
                    losses.append(self._loss(params, z[te], _rows(target, te), groups[te]))
                self.cv_loss[float(lam)] = float(np.mean(losses))
            self.penalty = min(self.cv_loss, key=lambda k: (self.cv_loss[k], -k))
        else:
            self.penalty = float(self.penalties[len(self.penalties) // 2])
        params = self._solve(z, target, groups, self.penalty)
        if self.task == "binary":
            self.intercept, self.weights = float(params[0]), params[1:]
        else:
            self.intercept, self.weights = 0.0, params
        return self

    def decision(self, z: np.ndarray) -> np.ndarray:
        """The stack's logit (binary) or log-risk (survival)."""
        return np.asarray(self.intercept + np.asarray(z, dtype=np.float64) @ self.weights)


def _rows(target: dict[str, np.ndarray], sel: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[sel] for k, v in target.items()}


class StackedModel:
    """The bundle of a fitted stack: the members' bundles and their weights.

    ``members`` are (name, bundle folder, weight, scale); predicting loads each member with
    a non-zero weight and combines its level-one feature."""

    def __init__(
        self,
        task: str,
        members: list[dict[str, Any]],
        intercept: float,
        penalty: float,
    ) -> None:
        self.task = task
        self.members = members
        self.intercept = intercept
        self.penalty = penalty
        self._loaded: dict[str, Any] = {}  # member bundles, opened once per stack

    def _member(self, path: str) -> Any:
        if path not in self._loaded:
            self._loaded[path] = load_model(path)
        return self._loaded[path]

    def _decision(self, cohort: Any) -> np.ndarray:
        total = np.full(cohort.n, self.intercept, dtype=np.float64)
        for m in self.members:
            if m["weight"] <= 0:
                continue
            model = self._member(m["path"])
            if self.task == "binary":
                proba = np.asarray(model.predict_proba(cohort), dtype=np.float64)
                pred = proba[:, -1] if proba.ndim == 2 else proba
            else:
                pred = np.asarray(model.predict_risk(cohort), dtype=np.float64)
            total += m["weight"] * level_one(pred, self.task, m["scale"])
        return total

    def predict_proba(self, cohort: Any) -> np.ndarray:
        if self.task != "binary":
            raise InputError(
                "stack: a survival stack predicts risks (predict_risk), not probabilities"
            )
        p = 1.0 / (1.0 + np.exp(-self._decision(cohort)))
        return np.column_stack([1 - p, p])

    def predict_risk(self, cohort: Any) -> np.ndarray:
        if self.task == "binary":
            return self.predict_proba(cohort)[:, 1]
        return self._decision(cohort)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        root = Path(path)
        if (root / "bundle.json").exists() and not overwrite:
            raise InputError(f"{root}: a bundle is already there; pass overwrite=True")
        root.mkdir(parents=True, exist_ok=True)
        members = [
            {**m, "path": os.path.relpath(Path(m["path"]).resolve(), root.resolve())}
            for m in self.members
        ]
        meta = {
            "format": STACK_FORMAT,
            "task": self.task,
            "intercept": self.intercept,
            "penalty": self.penalty,
            "members": members,
        }
        with atomic_file(root / "bundle.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
        return root

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StackedModel:
        root = Path(path)
        meta = read_bundle_meta(root, fmt=STACK_FORMAT, what="stack")
        members = []
        for m in meta["members"]:
            member_path = (root / m["path"]).resolve()
            if m["weight"] > 0 and not (member_path / "bundle.json").is_file():
                raise InputError(
                    f"{root / 'bundle.json'}: member {m['name']!r} has no bundle at "
                    f"{member_path}; keep the stack beside the models it combines"
                )
            members.append({**m, "path": str(member_path)})
        return cls(meta["task"], members, float(meta["intercept"]), float(meta["penalty"]))


def load_model(path: str | os.PathLike[str]) -> Any:
    """Any bundle a run writes (neural, a classical peer, a stack), by its format."""
    from medweave.models._linear import COXNET_FORMAT, ELASTICNET_FORMAT
    from medweave.models.baselines import (
        COXPH_FORMAT,
        LIGHTGBM_FORMAT,
        CoxNetBaseline,
        CoxPHBaseline,
        ElasticNetBaseline,
        LightGBMBaseline,
    )
    from medweave.models.estimator import BUNDLE_FORMAT, MultimodalEstimator

    meta_path = Path(path) / "bundle.json"
    if not meta_path.is_file():
        raise InputError(f"{path}: not a medweave model bundle (no bundle.json)")
    fmt = json.loads(meta_path.read_text()).get("format")
    loaders: dict[str, Any] = {
        BUNDLE_FORMAT: MultimodalEstimator,
        LIGHTGBM_FORMAT: LightGBMBaseline,
        COXPH_FORMAT: CoxPHBaseline,
        ELASTICNET_FORMAT: ElasticNetBaseline,
        COXNET_FORMAT: CoxNetBaseline,
        STACK_FORMAT: StackedModel,
    }
    if fmt not in loaders:
        raise InputError(
            f"{meta_path}: format {fmt!r} is not a medweave model "
            f"(expected one of {', '.join(sorted(loaders))})"
        )
    return loaders[fmt].load(path)
