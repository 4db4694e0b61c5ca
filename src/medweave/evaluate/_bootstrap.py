"""Bootstrap confidence intervals and paired model comparisons, resampling patients.

A resample is a row of multinomial counts (how often each patient is drawn), so the
metrics of ``_metrics.py`` evaluate a thousand resamples as one batch of weights; drawing
the counts from ``seed`` alone makes every result reproducible, and two models compared
with the same seed see exactly the same resampled patients.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from medweave.errors import InputError
from medweave.evaluate._metrics import (
    BINARY_METRICS,
    SURVIVAL_METRICS,
    BinaryKernel,
    SurvivalKernel,
    _none,
)

__all__ = ["bootstrap_ci", "metric_table", "paired_bootstrap", "paired_table"]

Metric = str | Callable[..., Any]
"""A metric name (see ``TASK_METRICS``) or a function of the arrays (and context) as keyword
arguments returning a float, or None / NaN where undefined."""

TASK_METRICS: dict[str, tuple[str, ...]] = {"binary": BINARY_METRICS, "survival": SURVIVAL_METRICS}
_ARRAYS = {  # (required, optional) per-patient arrays, resampled
    "binary": (("y", "p"), ()),
    "survival": (("time", "event", "risk"), ("surv",)),
}
_CONTEXT = {  # fixed values, never resampled
    "binary": (),
    "survival": ("times", "train_time", "train_event", "tau"),
}
_CHUNK = 2_000_000  # resample weights held at once (elements of the (B, n) count matrix)


class _Kernel(Protocol):
    n: int

    def __call__(self, w: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]: ...


def bootstrap_ci(
    metric: Metric,
    arrays: Mapping[str, np.ndarray],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    context: Mapping[str, Any] | None = None,
) -> dict[str, float | None]:
    """Estimate on all patients and a percentile bootstrap interval: ``{"estimate",
    "ci_low", "ci_high"}``.

    ``arrays`` hold one row per patient and are resampled together (binary: ``y``, ``p``;
    survival: ``time``, ``event``, ``risk`` and optionally ``surv``); ``context`` holds
    fixed values passed unchanged (survival: ``times``, ``train_time``, ``train_event``,
    ``tau``; the default horizons and truncation time are those of all the patients, the
    same for every resample). Resamples where the metric is undefined (one class, no
    comparable pair) are skipped; with fewer than half valid the bounds are None.
    """
    kernel, name = _kernel(metric, arrays, context)
    estimate = kernel(np.ones((1, kernel.n)), [name])[name][0]
    reps = _replicates([kernel], [name], n=kernel.n, n_boot=n_boot, seed=seed)[0][name]
    return _interval(estimate, reps, n_boot=n_boot, level=level)


def paired_bootstrap(
    metric: Metric,
    arrays: Mapping[str, np.ndarray],
    pred_a: Mapping[str, np.ndarray],
    pred_b: Mapping[str, np.ndarray],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    context: Mapping[str, Any] | None = None,
) -> dict[str, float | None]:
    """Difference ``metric(a) - metric(b)`` with a paired bootstrap interval and p-value.

    ``arrays`` hold the outcomes shared by both models, ``pred_a`` and ``pred_b`` each
    model's predictions (binary: ``{"p": ...}``; survival: ``{"risk": ..., "surv": ...}``).
    Both are evaluated on the same resampled patients. The two-sided p-value is
    ``min(1, 2 min(P*(d <= 0), P*(d >= 0)))`` over the bootstrap differences, with +1
    smoothing, so it is never below ``2 / (valid resamples + 1)``.
    """
    ka, name = _kernel(metric, _merge(arrays, pred_a), context)
    kb, _ = _kernel(metric, _merge(arrays, pred_b), context)
    ones = np.ones((1, ka.n))
    diff = ka(ones, [name])[name][0] - kb(ones, [name])[name][0]
    reps_a, reps_b = _replicates([ka, kb], [name], n=ka.n, n_boot=n_boot, seed=seed)
    return _paired(diff, reps_a[name] - reps_b[name], n_boot=n_boot, level=level)


def metric_table(
    task: str,
    arrays: Mapping[str, np.ndarray],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    context: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float | None]]:
    """Every metric of ``task`` ("binary" or "survival") with its bootstrap interval.

    Arrays and context as in :func:`bootstrap_ci`; every metric uses all ``n_boot``
    resamples, the same ones. On 2,000 patients with 1,000 resamples this takes about 2-3 s
    per task on two cores. Survival cost grows with patients × events (the C-index is a
    matrix product over comparable pairs), so 20,000 patients take minutes, not seconds.
    """
    names = _task_metrics(task)
    kernel = _task_kernel(task, arrays, context)
    estimates = kernel(np.ones((1, kernel.n)), names)
    reps = _replicates([kernel], names, n=kernel.n, n_boot=n_boot, seed=seed)[0]
    return {
        name: _interval(estimates[name][0], reps[name], n_boot=n_boot, level=level)
        for name in names
    }


def paired_table(
    task: str,
    arrays: Mapping[str, np.ndarray],
    pred_a: Mapping[str, np.ndarray],
    pred_b: Mapping[str, np.ndarray],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    context: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float | None]]:
    """:func:`paired_bootstrap` for every metric of ``task`` at once, on shared resamples."""
    names = _task_metrics(task)
    ka = _task_kernel(task, _merge(arrays, pred_a), context)
    kb = _task_kernel(task, _merge(arrays, pred_b), context)
    ones = np.ones((1, ka.n))
    est_a, est_b = ka(ones, names), kb(ones, names)
    reps_a, reps_b = _replicates([ka, kb], names, n=ka.n, n_boot=n_boot, seed=seed)
    return {
        name: _paired(
            est_a[name][0] - est_b[name][0],
            reps_a[name] - reps_b[name],
            n_boot=n_boot,
            level=level,
        )
        for name in names
    }


# ---------------------------------------------------------------- resampling


def resample_weights(n: int, n_boot: int, *, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap resamples of ``n`` patients as blocks of counts, shape ``(B, n)``.

    Each row counts how often each patient is drawn in ``n`` draws with replacement. The
    blocks depend only on ``n``, ``n_boot`` and ``seed``.
    """
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // max(n, 1))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        idx = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _replicates(
    kernels: Sequence[_Kernel], names: Sequence[str], *, n: int, n_boot: int, seed: int
) -> list[dict[str, np.ndarray]]:
    """Each kernel's metrics over the same ``n_boot`` resamples: per kernel, name -> (n_boot,)."""
    if n_boot < 0:
        raise InputError(f"bootstrap: n_boot must be >= 0, got {n_boot}")
    parts: list[dict[str, list[np.ndarray]]] = [{name: [] for name in names} for _ in kernels]
    for w in resample_weights(n, n_boot, seed=seed):
        for kernel, part in zip(kernels, parts, strict=True):
            values = kernel(w, names)
            for name in names:
                part[name].append(values[name])
    return [
        {name: np.concatenate(v) if v else np.empty(0) for name, v in part.items()}
        for part in parts
    ]


def _interval(
    estimate: float, reps: np.ndarray, *, n_boot: int, level: float
) -> dict[str, float | None]:
    low, high = _percentiles(reps, n_boot=n_boot, level=level)
    return {"estimate": _none(estimate), "ci_low": low, "ci_high": high}


def _paired(diff: float, reps: np.ndarray, *, n_boot: int, level: float) -> dict[str, float | None]:
    low, high = _percentiles(reps, n_boot=n_boot, level=level)
    valid = reps[np.isfinite(reps)]
    p_value: float | None = None
    if low is not None and _none(diff) is not None:
        b = len(valid)
        below = (1 + np.count_nonzero(valid <= 0)) / (b + 1)
        above = (1 + np.count_nonzero(valid >= 0)) / (b + 1)
        p_value = float(min(1.0, 2.0 * min(below, above)))
    return {"difference": _none(diff), "ci_low": low, "ci_high": high, "p_value": p_value}


def _percentiles(
    reps: np.ndarray, *, n_boot: int, level: float
) -> tuple[float | None, float | None]:
    if not 0.0 < level < 1.0:
        raise InputError(f"bootstrap: level must be between 0 and 1, got {level}")
    valid = reps[np.isfinite(reps)]
    if n_boot == 0 or len(valid) < n_boot / 2:
        return None, None
    alpha = 1.0 - level
    low, high = np.quantile(valid, [alpha / 2, 1.0 - alpha / 2])
    return float(low), float(high)


# ---------------------------------------------------------------- kernels from names


def _kernel(
    metric: Metric, arrays: Mapping[str, np.ndarray], context: Mapping[str, Any] | None
) -> tuple[_Kernel, str]:
    if callable(metric):
        return _CallableKernel(metric, arrays, context or {}), _CallableKernel.name
    task = next((t for t, names in TASK_METRICS.items() if metric in names), None)
    if task is None:
        known = [m for names in TASK_METRICS.values() for m in names]
        raise InputError(f"bootstrap: unknown metric {metric!r}{_did_you_mean(metric, known)}")
    return _task_kernel(task, arrays, context), metric


def _task_kernel(
    task: str, arrays: Mapping[str, np.ndarray], context: Mapping[str, Any] | None
) -> BinaryKernel | SurvivalKernel:
    _task_metrics(task)
    required, optional = _ARRAYS[task]
    ctx = dict(context or {})
    _check_keys(
        arrays, required=required, allowed=required + optional, what=f"{task} arrays", task=task
    )
    _check_keys(ctx, required=(), allowed=_CONTEXT[task], what=f"{task} context", task=task)
    if task == "binary":
        return BinaryKernel(arrays["y"], arrays["p"])
    return SurvivalKernel(
        arrays["time"], arrays["event"], arrays["risk"], surv=arrays.get("surv"), **ctx
    )


def _task_metrics(task: str) -> tuple[str, ...]:
    if task not in TASK_METRICS:
        raise InputError(
            f"evaluate: unknown task {task!r}{_did_you_mean(task, list(TASK_METRICS))}; "
            f"expected one of {sorted(TASK_METRICS)}"
        )
    return TASK_METRICS[task]


def _check_keys(
    given: Mapping[str, Any],
    *,
    required: Sequence[str],
    allowed: Sequence[str],
    what: str,
    task: str,
) -> None:
    for key in given:
        if key not in allowed:
            if what.endswith("arrays") and key in _CONTEXT[task]:
                hint = " (it is fixed, not resampled: pass it in context=)"
            else:
                hint = _did_you_mean(key, list(allowed))
            raise InputError(
                f"evaluate: unknown key {key!r} in {what}{hint}; expected {list(allowed)}"
            )
    missing = [k for k in required if k not in given]
    if missing:
        raise InputError(f"evaluate: {what} lack {missing}; a {task} task needs {list(required)}")


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _merge(
    arrays: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    both = sorted(set(arrays) & set(pred))
    if both:
        raise InputError(
            f"paired bootstrap: {both} given both in arrays and in a model's predictions; "
            "arrays hold the shared outcomes, pred_a/pred_b each model's predictions"
        )
    return {**arrays, **pred}


class _CallableKernel:
    """A user metric evaluated on each resample, given its rows of every array."""

    name = "metric"

    def __init__(
        self,
        fn: Callable[..., Any],
        arrays: Mapping[str, np.ndarray],
        context: Mapping[str, Any],
    ) -> None:
        self.fn, self.context = fn, dict(context)
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        lengths = {k: len(v) for k, v in self.arrays.items()}
        if not lengths or len(set(lengths.values())) != 1:
            raise InputError(
                f"bootstrap: arrays must be one row per patient, all of the same length; "
                f"got lengths {lengths}"
            )
        self.n = next(iter(lengths.values()))

    def __call__(self, w: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        patients = np.arange(self.n)
        out = np.empty(len(w))
        for b, counts in enumerate(w):
            rows = np.repeat(patients, counts.astype(np.intp))
            value = self.fn(**{k: v[rows] for k, v in self.arrays.items()}, **self.context)
            out[b] = np.nan if value is None else float(value)
        return {self.name: out}
