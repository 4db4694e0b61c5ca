"""Task heads and losses: what the fused representation is trained to predict.

A task turns targets into tensors (:meth:`Task.encode_target`), builds the output layer
(:meth:`Task.make_head`), computes the training loss on the head's raw outputs
(:meth:`Task.loss`), turns raw outputs into predictions (:meth:`Task.predict`) and scores
them (:meth:`Task.score`). Its learned state (classes, target scaling, time bins) is a
JSON-able dict (:meth:`Task.get_state` / :meth:`Task.from_state`), so a saved model needs no
pickle.

========================  ===========================  ========================  ==========
name                      head output                  predict                   score
========================  ===========================  ========================  ==========
``binary``                1 logit                      proba (n,), label         AUROC
``multiclass``            K logits                     proba (n, K), label       accuracy
``regression``            1 value (standardised)       value                     R²
``cox``                   1 log hazard ratio           risk (log hazard ratio)   Harrell's C
``discrete_hazard``       n_bins logits (hazards)      risk, survival, times     Harrell's C
========================  ===========================  ========================  ==========
"""

from __future__ import annotations

import abc
import math
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from lifelines.utils import concordance_index
from scipy.special import expit, softmax
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score, r2_score, roc_auc_score
from torch import nn
from torchsurv.loss.cox import neg_partial_log_likelihood

from medweave.errors import InputError
from medweave.models._registry import Registry
from medweave.models.survival import SurvivalTarget, as_survival

__all__ = [
    "TASKS",
    "BinaryTask",
    "CoxTask",
    "DiscreteHazardTask",
    "MulticlassTask",
    "RegressionTask",
    "Task",
    "build_task",
    "c_index",
]


class Task(abc.ABC):
    """Base class of the task heads; subclasses are registered in :data:`TASKS`.

    Constructors take keyword-only options (those returned by :meth:`options`). Call
    :meth:`fit_target` on the training targets before anything else.
    """

    name: ClassVar[str] = ""
    #: the score's name: "auroc", "accuracy", "r2" or "c_index" (higher is better)
    metric: ClassVar[str] = ""
    #: True for tasks whose target is a :class:`SurvivalTarget`
    survival: ClassVar[bool] = False
    #: whether the head has a bias (a Cox model's baseline hazard absorbs it)
    _head_bias: ClassVar[bool] = True

    def __init__(self) -> None:
        self._fitted = False

    # --- to override ---------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The constructor's keyword options (JSON-able)."""
        return {}

    @abc.abstractmethod
    def fit_target(self, y: Any) -> None:
        """Learn what the task needs from the training targets."""

    @abc.abstractmethod
    def encode_target(self, y: Any) -> torch.Tensor:
        """Targets as the tensor :meth:`loss` takes."""

    @property
    @abc.abstractmethod
    def out_dim(self) -> int:
        """Number of raw outputs per patient."""

    @abc.abstractmethod
    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of raw outputs ``out`` against encoded ``target``."""

    @abc.abstractmethod
    def predict(self, out: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions from raw outputs (n, out_dim)."""

    @abc.abstractmethod
    def score(self, pred: dict[str, np.ndarray], y: Any) -> float:
        """The task's metric of ``pred`` (from :meth:`predict`) against raw targets ``y``."""

    def _fitted_state(self) -> dict[str, Any]:
        return {}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        del state

    def _initial_bias(self) -> list[float] | None:
        """Output bias matching the training targets' base rates (None: leave at zero)."""
        return None

    # --- shared ------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError(f"task {self.name!r} is not fitted; call fit_target(y) first")

    def make_head(self, in_dim: int) -> nn.Module:
        """A linear layer from the fused representation to the raw outputs.

        Its bias starts at the training base rates (prevalence, class frequencies, baseline
        hazards) so training starts from the null model rather than from 0.5.
        """
        self._check_fitted()
        bias = self._initial_bias()
        head = nn.Linear(int(in_dim), self.out_dim, bias=self._head_bias)
        if head.bias is not None:
            with torch.no_grad():
                head.bias.zero_()
                if bias is not None:
                    head.bias.copy_(torch.tensor(bias, dtype=head.bias.dtype))
        return head

    def get_state(self) -> dict[str, Any]:
        """JSON-able state: the options and what :meth:`fit_target` learned."""
        return {
            "options": self.options(),
            "fitted": self._fitted_state() if self._fitted else None,
        }

    @classmethod
    def from_state(cls, name: str, state: dict[str, Any]) -> Task:
        """Rebuild the task registered as ``name`` from :meth:`get_state`'s output."""
        task_cls = TASKS.get(name)
        if not isinstance(state, dict) or set(state) - {"options", "fitted"}:
            raise InputError(
                f"task {name!r}: state must be a dict with keys 'options' and 'fitted', "
                f"got {state!r:.200}"
            )
        try:
            task = task_cls(**(state.get("options") or {}))
        except TypeError as exc:
            raise InputError(f"task {name!r}: bad options in saved state: {exc}") from None
        fitted = state.get("fitted")
        if fitted is not None:
            task._set_fitted_state(dict(fitted))
            task._fitted = True
        return task

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


#: name -> task class
TASKS: Registry[type[Task]] = Registry("task")


def build_task(name: str, **options: Any) -> Task:
    """Instantiate the task registered as ``name`` with keyword ``options``."""
    return TASKS.get(name)(**options)


def _register(name: str, *, description: str) -> Any:
    def wrap(cls: type[Task]) -> type[Task]:
        cls.name = name
        return TASKS.register(name, description=description)(cls)

    return wrap


# --- helpers --------------------------------------------------------------------------------
def _flat(out: np.ndarray | torch.Tensor, *, what: str) -> Any:
    """(n,) or (n, 1) raw outputs as (n,)."""
    if out.ndim == 2 and out.shape[1] == 1:
        return out[:, 0]
    if out.ndim != 1:
        raise InputError(
            f"{what}: expected outputs of shape (n,) or (n, 1), got {tuple(out.shape)}"
        )
    return out


def _labels(y: Any, *, what: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(f"{what}: target must be one value per patient, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{what}: no targets")
    missing = _isnan(arr)
    if missing.any():
        raise InputError(
            f"{what}: target has {int(missing.sum())} missing values (first at position "
            f"{int(np.flatnonzero(missing)[0])}); drop those patients or fill the outcome"
        )
    return arr


def _isnan(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and math.isnan(v)) for v in arr])
    return np.zeros(arr.shape, dtype=bool)


def _jsonable_scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _class_index(y: np.ndarray, classes: list[Any], *, what: str) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    idx = np.empty(len(y), dtype=np.int64)
    for i, v in enumerate(y.tolist()):
        j = lookup.get(v)
        if j is None:
            raise InputError(
                f"{what}: label {v!r} (position {i}) was not among the training classes {classes}"
            )
        idx[i] = j
    return idx


def _learn_classes(y: Any, *, what: str) -> tuple[list[Any], np.ndarray]:
    arr = _labels(y, what=what)
    try:
        classes = sorted({_jsonable_scalar(v) for v in arr.tolist()})
    except TypeError:
        raise InputError(f"{what}: labels of mixed types cannot be ordered: {arr[:5]}") from None
    counts = np.bincount(_class_index(arr, classes, what=what), minlength=len(classes))
    return classes, counts


def c_index(risk: np.ndarray, y: Any) -> float:
    """Harrell's C: the share of comparable pairs whose higher ``risk`` fails first.

    Ties in risk count one half (lifelines' ``concordance_index``).
    """
    target = as_survival(y)
    r = np.asarray(risk, dtype=np.float64).ravel()
    if r.shape[0] != len(target):
        raise InputError(f"c-index: {r.shape[0]} risks for {len(target)} patients")
    if not np.isfinite(r).all():
        raise InputError("c-index: risks contain NaN or infinite values")
    try:
        return float(concordance_index(target.time, -r, target.event))
    except ZeroDivisionError:
        raise InputError(
            "c-index: no comparable pairs (no event is followed by a later time)"
        ) from None


# --- classification and regression ------------------------------------------------------
@_register("binary", description="binary classification: one logit, BCE loss, AUROC")
class BinaryTask(Task):
    """Two classes; the positive one is the larger of the two sorted labels (1, True, "yes").

    ``pos_weight`` multiplies the positive class's loss (as in ``BCEWithLogitsLoss``).
    """

    metric = "auroc"

    def __init__(self, *, pos_weight: float | None = None) -> None:
        super().__init__()
        if pos_weight is not None and not pos_weight > 0:
            raise InputError(f"binary task: pos_weight must be > 0, got {pos_weight}")
        self.pos_weight = None if pos_weight is None else float(pos_weight)
        self.classes: list[Any] = []
        self.prevalence = 0.5

    def options(self) -> dict[str, Any]:
        return {"pos_weight": self.pos_weight}

    def fit_target(self, y: Any) -> None:
        classes, counts = _learn_classes(y, what="binary task")
        if len(classes) != 2:
            raise InputError(
                f"binary task: the training target has {len(classes)} classes {classes[:10]}; "
                "binary needs exactly two (use 'multiclass' for more)"
            )
        self.classes = classes
        self.prevalence = float(counts[1] / counts.sum())
        self._fitted = True

    def encode_target(self, y: Any) -> torch.Tensor:
        self._check_fitted()
        idx = _class_index(_labels(y, what="binary task"), self.classes, what="binary task")
        return torch.as_tensor(idx, dtype=torch.float32)

    @property
    def out_dim(self) -> int:
        return 1

    def _initial_bias(self) -> list[float]:
        p = min(max(self.prevalence, 1e-4), 1 - 1e-4)
        return [math.log(p / (1 - p))]

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logit = _flat(out, what="binary task")
        weight = None
        if self.pos_weight is not None:
            weight = torch.tensor(self.pos_weight, dtype=logit.dtype, device=logit.device)
        return F.binary_cross_entropy_with_logits(
            logit, target.reshape(-1).to(logit.dtype), pos_weight=weight
        )

    def predict(self, out: np.ndarray) -> dict[str, np.ndarray]:
        self._check_fitted()
        proba = expit(np.asarray(_flat(np.asarray(out, dtype=np.float64), what="binary task")))
        label = np.asarray(self.classes, dtype=object)[(proba >= 0.5).astype(np.int64)]
        return {"proba": proba, "label": _tidy(label)}

    def score(self, pred: dict[str, np.ndarray], y: Any) -> float:
        self._check_fitted()
        idx = _class_index(_labels(y, what="binary task"), self.classes, what="binary task")
        if len(np.unique(idx)) < 2:
            raise InputError("binary task: AUROC needs both classes among the scored patients")
        return float(roc_auc_score(idx, pred["proba"]))

    def _fitted_state(self) -> dict[str, Any]:
        return {"classes": self.classes, "prevalence": self.prevalence}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.classes = list(state["classes"])
        self.prevalence = float(state["prevalence"])


@_register("multiclass", description="K classes: K logits, cross-entropy, accuracy")
class MulticlassTask(Task):
    """K classes learned from the training target (sorted); ``label_smoothing`` as in
    ``torch.nn.functional.cross_entropy``."""

    metric = "accuracy"

    def __init__(self, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise InputError(
                f"multiclass task: label_smoothing must be in [0, 1), got {label_smoothing}"
            )
        self.label_smoothing = float(label_smoothing)
        self.classes: list[Any] = []
        self.frequencies: list[float] = []

    def options(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing}

    def fit_target(self, y: Any) -> None:
        classes, counts = _learn_classes(y, what="multiclass task")
        if len(classes) < 2:
            raise InputError(
                f"multiclass task: the training target has one class {classes}; need two or more"
            )
        self.classes = classes
        self.frequencies = (counts / counts.sum()).tolist()
        self._fitted = True

    def encode_target(self, y: Any) -> torch.Tensor:
        self._check_fitted()
        arr = _labels(y, what="multiclass task")
        return torch.as_tensor(_class_index(arr, self.classes, what="multiclass task"))

    @property
    def out_dim(self) -> int:
        self._check_fitted()
        return len(self.classes)

    def _initial_bias(self) -> list[float]:
        return [math.log(max(f, 1e-4)) for f in self.frequencies]

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, target.reshape(-1).long(), label_smoothing=self.label_smoothing)

    def predict(self, out: np.ndarray) -> dict[str, np.ndarray]:
        self._check_fitted()
        logits = np.asarray(out, dtype=np.float64)
        if logits.ndim != 2 or logits.shape[1] != len(self.classes):
            raise InputError(
                f"multiclass task: expected outputs (n, {len(self.classes)}), got {logits.shape}"
            )
        proba = softmax(logits, axis=1)
        label = np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)]
        return {"proba": proba, "label": _tidy(label)}

    def score(self, pred: dict[str, np.ndarray], y: Any) -> float:
        self._check_fitted()
        idx = _class_index(_labels(y, what="multiclass task"), self.classes, what="multiclass")
        pred_idx = _class_index(np.asarray(pred["label"]), self.classes, what="multiclass")
        return float(accuracy_score(idx, pred_idx))

    def _fitted_state(self) -> dict[str, Any]:
        return {"classes": self.classes, "frequencies": self.frequencies}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.classes = list(state["classes"])
        self.frequencies = [float(f) for f in state["frequencies"]]


def _tidy(labels: np.ndarray) -> np.ndarray:
    """Object labels back to a plain dtype where they are all numbers or all strings."""
    try:
        return np.asarray(labels.tolist())
    except (ValueError, TypeError):  # pragma: no cover - mixed types kept as objects
        return labels


@_register("regression", description="continuous target: one value, MSE on the scaled target, R²")
class RegressionTask(Task):
    """A continuous target, standardised with the training mean and standard deviation
    (the head predicts the standardised value; :meth:`predict` undoes the scaling)."""

    metric = "r2"

    def __init__(self) -> None:
        super().__init__()
        self.mean = 0.0
        self.std = 1.0

    def fit_target(self, y: Any) -> None:
        arr = _numeric(y)
        self.mean = float(arr.mean())
        std = float(arr.std())
        self.std = std if std > 0 else 1.0
        self._fitted = True

    def encode_target(self, y: Any) -> torch.Tensor:
        self._check_fitted()
        return torch.as_tensor((_numeric(y) - self.mean) / self.std, dtype=torch.float32)

    @property
    def out_dim(self) -> int:
        return 1

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = _flat(out, what="regression task")
        return F.mse_loss(value, target.reshape(-1).to(value.dtype))

    def predict(self, out: np.ndarray) -> dict[str, np.ndarray]:
        self._check_fitted()
        value = np.asarray(_flat(np.asarray(out, dtype=np.float64), what="regression task"))
        return {"value": value * self.std + self.mean}

    def score(self, pred: dict[str, np.ndarray], y: Any) -> float:
        return float(r2_score(_numeric(y), pred["value"]))

    def _fitted_state(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.mean, self.std = float(state["mean"]), float(state["std"])


def _numeric(y: Any) -> np.ndarray:
    arr = _labels(y, what="regression task")
    try:
        out = arr.astype(np.float64)
    except (ValueError, TypeError):
        raise InputError(f"regression task: target must be numeric, got {arr[:3]}") from None
    if not np.isfinite(out).all():
        raise InputError("regression task: target has infinite values")
    return out


# --- survival --------------------------------------------------------------------------------
class _SurvivalTask(Task):
    """Targets are :class:`SurvivalTarget`; encoded as (n, 2) float [time, event]."""

    metric = "c_index"
    survival = True

    def encode_target(self, y: Any) -> torch.Tensor:
        self._check_fitted()
        s = as_survival(y, require_event=False)
        return torch.as_tensor(np.stack([s.time, s.event.astype(np.float64)], axis=1)).float()

    def score(self, pred: dict[str, np.ndarray], y: Any) -> float:
        return c_index(pred["risk"], y)


def _split_target(target: torch.Tensor, *, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if target.ndim != 2 or target.shape[1] != 2:
        raise InputError(f"{what}: target must be (n, 2) [time, event], got {tuple(target.shape)}")
    return target[:, 0], target[:, 1] > 0.5


@_register(
    "cox", description="Cox proportional hazards: one log hazard ratio, Efron partial likelihood"
)
class CoxTask(_SurvivalTask):
    """Cox model: the head outputs the log hazard ratio; the loss is the negative Efron
    partial log likelihood (torchsurv) of the batch divided by its number of events.

    The partial likelihood compares patients within a batch, so batches should hold
    several events. A batch without events, or of one patient, has no comparable pair:
    its loss is 0 (still connected to the graph, gradient 0). The head has no bias: it
    would cancel out of the partial likelihood.
    """

    _head_bias = False

    def fit_target(self, y: Any) -> None:
        as_survival(y)
        self._fitted = True

    @property
    def out_dim(self) -> int:
        return 1

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_hz = _flat(out, what="cox task")
        time, event = _split_target(target, what="cox task")
        n_events = int(event.sum())
        if n_events == 0 or log_hz.shape[0] < 2:
            return (log_hz * 0.0).sum()
        if torch.isnan(log_hz).any():
            return log_hz.sum()  # NaN, as the other losses give for a diverged model
        # torchsurv sorts by time without keeping censored patients after events tied with
        # them, so a patient censored at t could drop out of the risk set at t. Rank the
        # times so that, at equal times, events come first: tied events keep equal keys
        # (Efron), and a censored patient at t stays in the risk set of events at t.
        _, dense = torch.unique(time.detach(), return_inverse=True)
        key = (2 * dense + (~event).long()).to(torch.float32)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Ties in `time` detected")
            nll = neg_partial_log_likelihood(
                log_hz, event, key, ties_method="efron", reduction="sum"
            )
        return (nll / n_events).to(log_hz.dtype)

    def predict(self, out: np.ndarray) -> dict[str, np.ndarray]:
        risk = np.asarray(_flat(np.asarray(out, dtype=np.float64), what="cox task"))
        return {"risk": risk}


@_register(
    "discrete_hazard",
    description="discrete-time hazards over time bins from training event-time quantiles",
)
class DiscreteHazardTask(_SurvivalTask):
    """Discrete-time survival: one hazard per time bin, ``h_k = sigmoid(out_k)``.

    Bins end at the training event times' quantiles ``1/n_bins, 2/n_bins, ..., 1``
    (duplicates merged, so there may be fewer than ``n_bins``): bin 0 is ``[0, t_0]``, bin
    k is ``(t_{k-1}, t_k]``. Likelihood of a patient whose time falls in bin k:

    * event: ``h_k · Π_{j<k} (1 - h_j)``;
    * censored: ``Π_{j≤k} (1 - h_j)`` — a patient censored within bin k counts as having
      survived bin k (censoring at the end of the bin).

    Times after the last bin count in the last bin. The loss is the mean negative log
    likelihood per patient. :meth:`predict` gives ``survival`` S(t_k) = Π_{j≤k}(1 - h_j),
    ``times`` (the bin ends t_k), ``hazard`` and ``risk`` = log(-log S), the log cumulative
    hazard at the end of the bin holding ``horizon`` (days; default: the last bin) — a log
    scale like a Cox model's log hazard ratio, so the two heads' risks are read alike.
    """

    def __init__(self, *, n_bins: int = 20, horizon: float | None = None) -> None:
        super().__init__()
        if int(n_bins) != n_bins or n_bins < 1:
            raise InputError(
                f"discrete_hazard task: n_bins must be a whole number >= 1, got {n_bins}"
            )
        if horizon is not None and not horizon > 0:
            raise InputError(f"discrete_hazard task: horizon must be > 0 days, got {horizon}")
        self.n_bins = int(n_bins)
        self.horizon = None if horizon is None else float(horizon)
        self.edges = np.zeros(0)
        self.baseline_hazard: list[float] = []

    def options(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins, "horizon": self.horizon}

    def fit_target(self, y: Any) -> None:
        s = as_survival(y)
        levels = np.arange(1, self.n_bins + 1) / self.n_bins
        self.edges = np.unique(np.quantile(s.time[s.event], levels))
        self.baseline_hazard = self._km_hazard(s).tolist()
        self._fitted = True

    def bin_of(self, time: np.ndarray | float) -> np.ndarray:
        """The bin index of each time (times after the last bin end in the last bin)."""
        self._check_fitted()
        return self._bin(time)

    def _bin(self, time: np.ndarray | float) -> np.ndarray:
        k = np.searchsorted(self.edges, np.asarray(time, dtype=np.float64), side="left")
        return np.minimum(k, len(self.edges) - 1)

    def _km_hazard(self, s: SurvivalTarget) -> np.ndarray:
        k = self._bin(s.time)
        at_risk = np.bincount(k, minlength=len(self.edges))[::-1].cumsum()[::-1]
        events = np.bincount(k[s.event], minlength=len(self.edges))
        return np.asarray(events / np.maximum(at_risk, 1), dtype=np.float64)

    @property
    def out_dim(self) -> int:
        self._check_fitted()
        return len(self.edges)

    def _initial_bias(self) -> list[float]:
        h = np.clip(np.asarray(self.baseline_hazard), 1e-4, 1 - 1e-4)
        return np.log(h / (1 - h)).tolist()

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        if out.ndim != 2 or out.shape[1] != len(self.edges):
            raise InputError(
                f"discrete_hazard task: expected outputs (n, {len(self.edges)}), "
                f"got {tuple(out.shape)}"
            )
        time, event = _split_target(target, what="discrete_hazard task")
        edges = torch.as_tensor(self.edges, dtype=time.dtype, device=time.device)
        k = torch.searchsorted(edges, time.contiguous()).clamp(max=len(self.edges) - 1)
        j = torch.arange(out.shape[1], device=out.device)
        seen = j.unsqueeze(0) <= k.unsqueeze(1)  # bins the patient was at risk in
        failed = (j.unsqueeze(0) == k.unsqueeze(1)) & event.unsqueeze(1)
        # -log h_j where the event happened, -log(1 - h_j) for each bin survived
        terms = F.binary_cross_entropy_with_logits(out, failed.to(out.dtype), reduction="none")
        return (terms * seen.to(out.dtype)).sum(dim=1).mean()

    def predict(self, out: np.ndarray) -> dict[str, np.ndarray]:
        self._check_fitted()
        logits = np.asarray(out, dtype=np.float64)
        if logits.ndim != 2 or logits.shape[1] != len(self.edges):
            raise InputError(
                f"discrete_hazard task: expected outputs (n, {len(self.edges)}), got {logits.shape}"
            )
        hazard = expit(logits)
        survival = np.cumprod(1.0 - hazard, axis=1)
        at = len(self.edges) - 1 if self.horizon is None else int(self.bin_of(self.horizon))
        # -log(1 - sigmoid(x)) = softplus(x): the cumulative hazard without rounding S to 1.
        cumulative = np.logaddexp(0.0, logits[:, : at + 1]).sum(axis=1)
        return {
            "risk": np.log(cumulative),
            "survival": survival,
            "hazard": hazard,
            "times": self.edges.copy(),
        }

    def _fitted_state(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "baseline_hazard": self.baseline_hazard}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.edges = np.asarray(state["edges"], dtype=np.float64)
        self.baseline_hazard = [float(h) for h in state["baseline_hazard"]]
