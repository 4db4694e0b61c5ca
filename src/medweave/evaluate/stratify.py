"""Patient stratification: clusters of an embedding, risk groups, and what tells them apart.

* :func:`cluster_patients` — k-means on a standardised embedding, k chosen by silhouette.
* :func:`risk_groups` — quantile groups of predicted risk ("low" … "high").
* :func:`stratify` — for any grouping: size and events per group, Kaplan–Meier curves with
  95% intervals, a log-rank test across groups, and per-group profiles (the features that
  differ most from the rest, and how often each modality is present). Its
  :meth:`Grouping.to_dict` is the ``GROUPING`` object of ``results.json``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from medweave.errors import InputError
from medweave.models.survival import as_survival

__all__ = [
    "Clustering",
    "FeatureDifference",
    "GroupSummary",
    "Grouping",
    "KMCurve",
    "LogRank",
    "Profile",
    "cluster_patients",
    "risk_groups",
    "stratify",
]

#: k-means restarts per k; fixed so that results depend on the seed only
N_INIT = 10
#: silhouette scores are computed on a seeded sample of this many patients above it (O(n²))
SILHOUETTE_SAMPLE = 5000
#: most points kept per Kaplan–Meier curve in ``results.json``
KM_MAX_POINTS = 200
_RISK3 = ("low", "intermediate", "high")


# ----------------------------------------------------------------------------- clustering
@dataclass(frozen=True, eq=False)
class Clustering:
    """The outcome of :func:`cluster_patients`.

    ``labels`` are "C1" … "Ck" (C1 the largest cluster), ``silhouette`` maps every k tried
    to its silhouette score (None where undefined).
    """

    labels: pd.Categorical[str]
    k: int
    silhouette: dict[int, float | None]


def cluster_patients(
    embedding: np.ndarray,
    *,
    k: int | None = None,
    k_range: tuple[int, int] = (2, 6),
    seed: int = 0,
) -> Clustering:
    """Cluster patients by k-means on their standardised embedding (one row per patient).

    With ``k=None`` every k in ``k_range`` (inclusive, capped at n − 1) is fitted and the one
    with the highest silhouette score wins (the smaller k on a tie). The same ``seed`` gives
    the same labels.
    """
    x = np.asarray(embedding, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(
            f"cluster_patients: embedding must be 2-D (patients × dimensions), got shape "
            f"{x.shape}; reshape a single score with .reshape(-1, 1)"
        )
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise InputError(
            f"cluster_patients: embedding has {int(bad.sum())} NaN or infinite values in "
            f"{rows.size} rows (first: row {int(rows[0])}); impute or drop those patients first"
        )
    n = x.shape[0]
    if k is not None:
        if k < 2:
            raise InputError(f"cluster_patients: k must be at least 2, got {k}")
        if n < k:
            raise InputError(f"cluster_patients: {n} patients are fewer than k={k} clusters")
        candidates = [k]
    else:
        lo, hi = k_range
        if lo < 2 or hi < lo:
            raise InputError(
                f"cluster_patients: k_range must be (low, high) with 2 <= low <= high, "
                f"got {k_range}"
            )
        candidates = list(range(lo, min(hi, n - 1) + 1))
        if not candidates:
            raise InputError(
                f"cluster_patients: {n} patients are too few to choose k in {k_range}; "
                f"silhouette needs at least k + 1 = {lo + 1} patients"
            )
    z = StandardScaler().fit_transform(x)
    fits: dict[int, np.ndarray] = {}
    scores: dict[int, float | None] = {}
    for kk in candidates:
        codes = KMeans(n_clusters=kk, n_init=N_INIT, random_state=seed).fit_predict(z)
        fits[kk] = codes
        scores[kk] = _silhouette(z, codes, k=kk, seed=seed)
    if k is None:
        scored = [kk for kk in candidates if scores[kk] is not None]
        if not scored:
            raise InputError(
                f"cluster_patients: no k in {k_range} gives distinct clusters; the embedding "
                f"has {np.unique(z, axis=0).shape[0]} distinct rows"
            )
        k = max(scored, key=lambda kk: (scores[kk], -kk))
    return Clustering(labels=_name_clusters(fits[k]), k=k, silhouette=scores)


def _silhouette(z: np.ndarray, codes: np.ndarray, *, k: int, seed: int) -> float | None:
    # Duplicate rows can leave k-means with fewer than k clusters: that k is not a candidate.
    n_found = np.unique(codes).size
    if n_found < k or not 2 <= n_found <= z.shape[0] - 1:
        return None
    sample = SILHOUETTE_SAMPLE if z.shape[0] > SILHOUETTE_SAMPLE else None
    return float(silhouette_score(z, codes, sample_size=sample, random_state=seed))


def _name_clusters(codes: np.ndarray) -> pd.Categorical[str]:
    """Rename k-means codes "C1" … "Ck" by decreasing size (ties: first patient seen)."""
    ids, first, counts = np.unique(codes, return_index=True, return_counts=True)
    order = sorted(range(ids.size), key=lambda i: (-counts[i], first[i]))
    names = [f"C{r + 1}" for r in range(ids.size)]
    mapping = {ids[i]: names[r] for r, i in enumerate(order)}
    return pd.Categorical([mapping[c] for c in codes], categories=names)


# ----------------------------------------------------------------------------- risk groups
def risk_groups(risk: np.ndarray, *, n_groups: int = 3) -> pd.Categorical[str]:
    """Quantile groups of predicted risk, ordered from lowest to highest risk.

    Three groups are "low", "intermediate" and "high"; any other number "Q1" … "Qn". Groups
    are as equal in size as ties allow: patients with the same risk share a group.
    """
    r = np.asarray(risk, dtype=np.float64)
    if r.ndim != 1:
        raise InputError(f"risk_groups: risk must be one value per patient, got shape {r.shape}")
    if not np.isfinite(r).all():
        raise InputError(
            f"risk_groups: risk has {int((~np.isfinite(r)).sum())} NaN or infinite values; "
            "every patient needs a predicted risk"
        )
    if n_groups < 2:
        raise InputError(f"risk_groups: n_groups must be at least 2, got {n_groups}")
    if r.size < n_groups:
        raise InputError(f"risk_groups: {r.size} patients are fewer than {n_groups} groups")
    names = list(_RISK3) if n_groups == 3 else [f"Q{i + 1}" for i in range(n_groups)]
    # Average ranks keep ties together; rank/n in (0, 1] maps onto the quantile groups.
    rank = pd.Series(r).rank(method="average").to_numpy()
    codes = np.clip(np.ceil(rank * n_groups / r.size).astype(int) - 1, 0, n_groups - 1)
    return pd.Categorical.from_codes(codes, categories=pd.Index(names), ordered=True)


# ----------------------------------------------------------------------------- the grouping
@dataclass(frozen=True)
class GroupSummary:
    """Size and outcome of one group; ``median_time`` is None when not reached or no time."""

    label: str
    n: int
    n_events: int
    event_rate: float
    median_time: float | None


@dataclass(frozen=True)
class KMCurve:
    """A Kaplan–Meier curve (a right-continuous step function) with its 95% interval."""

    label: str
    time: list[float]
    survival: list[float]
    ci_low: list[float | None]
    ci_high: list[float | None]


@dataclass(frozen=True)
class LogRank:
    """The log-rank test of equal survival across all groups."""

    statistic: float | None
    p_value: float | None
    df: int


@dataclass(frozen=True)
class FeatureDifference:
    """One feature's standardised mean difference, group vs the rest (pooled SD)."""

    feature: str
    modality: str
    smd: float
    mean_in: float | None
    mean_out: float | None


@dataclass(frozen=True)
class Profile:
    """What sets a group apart: its most different features and its modality coverage."""

    label: str
    top_features: list[FeatureDifference]
    modality_presence: dict[str, float]


@dataclass(frozen=True)
class Grouping:
    """A stratification of patients; :meth:`to_dict` is ``results.json``'s GROUPING."""

    method: str
    k: int
    silhouette: dict[int, float | None] | None
    groups: list[GroupSummary]
    km: list[KMCurve] | None = None
    logrank: LogRank | None = None
    profiles: list[Profile] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (field names are the GROUPING keys); NaN and infinities
        become None, silhouette keys become strings."""
        out: dict[str, Any] = _plain(asdict(self))
        if self.silhouette is not None:
            out["silhouette"] = {str(k): _num(v) for k, v in self.silhouette.items()}
        return out


def stratify(
    labels: Sequence[Any] | np.ndarray | pd.Categorical | pd.Series,
    *,
    time: np.ndarray | None = None,
    event: np.ndarray | None = None,
    outcome: np.ndarray | None = None,
    features: pd.DataFrame | None = None,
    feature_modality: Mapping[str, str] | None = None,
    presence: pd.DataFrame | None = None,
    method: str,
    silhouette: Mapping[int, float | None] | None = None,
    top_n: int = 5,
) -> Grouping:
    """Describe a grouping of patients: outcome per group, survival curves, and profiles.

    Parameters
    ----------
    labels
        One group label per patient. A categorical keeps its category order (as
        :func:`risk_groups` and :func:`cluster_patients` return); other labels are sorted
        naturally ("C2" before "C10"). Empty groups are left out.
    time, event
        Survival outcome (days, and True when the event was seen): events, median survival,
        Kaplan–Meier curves and the log-rank test.
    outcome
        Binary outcome (0/1) instead of ``time``/``event``: events and event rate only.
        Either way a group's ``event_rate`` is the crude fraction of its patients with an
        event (censoring ignored; the Kaplan–Meier curves account for it).
    features
        One row per patient, in the order of ``labels`` (the index is ignored); numeric or
        boolean columns, NaN allowed. Each group's ``top_n`` features by absolute
        standardised mean difference against the other patients make its profile.
    feature_modality
        Modality of each feature; unlisted features take the prefix before the first ":" or
        "." of their name ("unknown" if there is none).
    presence
        One boolean column per modality, True where the patient has it.
    method, silhouette
        Recorded as they are: how the groups were made, and the silhouette score per k.
    """
    lab = _labels(labels)
    n = len(lab)
    names = [c for c in lab.categories if (lab == c).any()]
    masks = [np.asarray(lab == c) for c in names]
    if time is not None or event is not None:
        if outcome is not None:
            raise InputError(
                "stratify: pass either time and event (survival) or outcome (binary), not both"
            )
        if time is None or event is None:
            raise InputError("stratify: a survival outcome needs both time and event")
        target = as_survival((time, event), require_event=False)
        t, events = target.time, target.event
    elif outcome is not None:
        t, events = None, _binary(outcome)
    else:
        raise InputError(
            "stratify: no outcome; pass time and event (survival) or outcome (binary, 0/1)"
        )
    _same_length(n, {"time/event" if t is not None else "outcome": events, "features": features})
    _same_length(n, {"presence": presence})
    if top_n < 0:
        raise InputError(f"stratify: top_n must be >= 0, got {top_n}")

    groups: list[GroupSummary] = []
    km: list[KMCurve] | None = None if t is None else []
    for name, m in zip(names, masks, strict=True):
        n_ev = int(events[m].sum())
        median: float | None = None
        if t is not None and km is not None:
            fitter = KaplanMeierFitter().fit(t[m], events[m], label=name)
            median = _num(fitter.median_survival_time_)
            km.append(_km_curve(fitter, name))
        groups.append(GroupSummary(name, int(m.sum()), n_ev, n_ev / int(m.sum()), median))

    logrank = None
    if t is not None and len(names) >= 2:
        res = multivariate_logrank_test(t, np.asarray(lab.astype(str)), events)
        logrank = LogRank(_num(res.test_statistic), _num(res.p_value), len(names) - 1)

    profiles = None
    if features is not None or presence is not None:
        profiles = _profiles(names, masks, features, feature_modality or {}, presence, top_n)
    return Grouping(
        method=method,
        k=len(names),
        silhouette=None if silhouette is None else {int(k): v for k, v in silhouette.items()},
        groups=groups,
        km=km,
        logrank=logrank,
        profiles=profiles,
    )


def _labels(labels: Any) -> pd.Categorical[str]:
    if isinstance(labels, pd.Series):
        labels = labels.array if isinstance(labels.dtype, pd.CategoricalDtype) else labels.values
    if isinstance(labels, pd.Categorical):
        if labels.isna().any():
            raise InputError(f"stratify: {int(labels.isna().sum())} labels are missing")
        text = [str(v) for v in np.asarray(labels, dtype=object)]
        return pd.Categorical(text, categories=[str(c) for c in labels.categories])
    arr = np.asarray(labels, dtype=object)
    if arr.ndim != 1:
        raise InputError(f"stratify: labels must be one per patient, got shape {arr.shape}")
    missing = pd.isna(arr)
    if missing.any():
        raise InputError(
            f"stratify: {int(missing.sum())} labels are missing (first: patient "
            f"{int(np.flatnonzero(missing)[0])}); every patient needs a group"
        )
    text = [str(v) for v in arr]
    return pd.Categorical(text, categories=sorted(set(text), key=_natural))


def _natural(s: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", s) if p]


def _binary(outcome: Any) -> np.ndarray:
    y = np.asarray(outcome)
    if y.ndim != 1:
        raise InputError(f"stratify: outcome must be one value per patient, got shape {y.shape}")
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"stratify: a binary outcome must be 0/1 or bool, got dtype {y.dtype}"
        ) from None
    if not np.isin(yf, (0.0, 1.0)).all():
        bad = np.unique(yf[~np.isin(yf, (0.0, 1.0))])[:5]
        raise InputError(f"stratify: a binary outcome must be 0/1 or bool, found {bad.tolist()}")
    return yf.astype(bool)


def _same_length(n: int, arrays: Mapping[str, Any]) -> None:
    for what, a in arrays.items():
        if a is not None and len(a) != n:
            raise InputError(f"stratify: {what} has {len(a)} rows but there are {n} labels")


def _km_curve(fitter: KaplanMeierFitter, label: str) -> KMCurve:
    """The curve at its change points (plus start and end), thinned to KM_MAX_POINTS."""
    sf = fitter.survival_function_.iloc[:, 0].to_numpy(dtype=np.float64)
    ci = fitter.confidence_interval_survival_function_.to_numpy(dtype=np.float64)
    times = fitter.survival_function_.index.to_numpy(dtype=np.float64)
    values = np.column_stack([sf, ci])
    same = np.isclose(values[1:], values[:-1], equal_nan=True).all(axis=1)
    keep = np.flatnonzero(np.r_[True, ~same])
    if keep[-1] != times.size - 1:
        keep = np.r_[keep, times.size - 1]  # the end of follow-up, where the curve stops
    if keep.size > KM_MAX_POINTS:
        # Retained points keep their exact values, so the thinned curve is still a step
        # function that agrees with the full one at every kept time.
        pick = np.unique(np.round(np.linspace(0, keep.size - 1, KM_MAX_POINTS)).astype(int))
        keep = keep[pick]
    return KMCurve(
        label=label,
        time=[float(v) for v in times[keep]],
        survival=[float(v) for v in sf[keep]],
        ci_low=[_num(v) for v in ci[keep, 0]],
        ci_high=[_num(v) for v in ci[keep, 1]],
    )


def _profiles(
    names: list[str],
    masks: list[np.ndarray],
    features: pd.DataFrame | None,
    feature_modality: Mapping[str, str],
    presence: pd.DataFrame | None,
    top_n: int,
) -> list[Profile]:
    x, cols = (np.empty((len(masks[0]), 0)), []) if features is None else _numeric(features)
    modality = [feature_modality.get(c) or _prefix(c) for c in cols]
    pres = None if presence is None else _presence(presence)
    out = []
    for name, m in zip(names, masks, strict=True):
        mean_in, var_in = _nan_moments(x[m])
        mean_out, var_out = _nan_moments(x[~m])
        with np.errstate(divide="ignore", invalid="ignore"):
            smd = (mean_in - mean_out) / np.sqrt((var_in + var_out) / 2)
        smd[~np.isfinite(smd)] = np.nan
        ranked = [j for j in np.argsort(-np.abs(smd), kind="stable") if np.isfinite(smd[j])]
        top = [
            FeatureDifference(
                cols[j], modality[j], float(smd[j]), _num(mean_in[j]), _num(mean_out[j])
            )
            for j in ranked[:top_n]
        ]
        share = {} if pres is None else {c: float(pres[c][m].mean()) for c in pres}
        out.append(Profile(name, top, share))
    return out


def _numeric(features: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    bad = [
        str(c)
        for c in features.columns
        if not (
            pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c])
        )
    ]
    if bad:
        raise InputError(
            f"stratify: features {bad[:5]} are not numeric; encode them (e.g. one-hot) or "
            "drop them before profiling"
        )
    return features.to_numpy(dtype=np.float64, na_value=np.nan), [str(c) for c in features.columns]


def _prefix(name: str) -> str:
    head = re.split(r"[:.]", name, maxsplit=1)
    return head[0] if len(head) == 2 and head[0] else "unknown"


def _presence(presence: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {}
    for c in presence.columns:
        col = presence[c]
        if col.isna().any() or not col.isin([0, 1, True, False]).all():
            raise InputError(
                f"stratify: presence column {c!r} must be true/false for every patient"
            )
        out[str(c)] = col.to_numpy().astype(bool)
    return out


def _nan_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and sample variances ignoring NaN (NaN where too few values)."""
    ok = ~np.isnan(x)
    count = ok.sum(axis=0)
    filled = np.where(ok, x, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = filled.sum(axis=0) / count
        dev = np.where(ok, x - mean, 0.0)
        var = (dev**2).sum(axis=0) / (count - 1)
    mean[count == 0] = np.nan
    var[count < 2] = np.nan
    return mean, var


def _plain(v: Any) -> Any:
    """``v`` with numpy scalars as Python numbers and non-finite floats as None."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return _num(v)
    return v


def _num(v: Any) -> float | None:
    """A finite float, or None."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None
