"""The report's plots as inline SVG strings (matplotlib, no pyplot and no global state)."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import matplotlib as mpl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["Series", "calibration_svg", "km_svg", "pr_svg", "roc_svg", "td_auc_svg"]

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DASHES = ("-", "--", "-.", ":")
_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text, drawn with the reader's system fonts
    "font.family": "sans-serif",
    "font.size": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
}
Corner = Literal["best", "lower right", "lower left"]


@dataclass
class Series:
    """One line of a plot: its legend label and points (None where undefined)."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    low: Sequence[float | None] | None = None
    high: Sequence[float | None] | None = None


def roc_svg(series: Sequence[Series]) -> str:
    """ROC curves with the chance diagonal."""
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], color="#888888", lw=0.8, ls=":", label="chance")
    for i, s in enumerate(series):
        ax.plot(s.x, _num(s.y), lw=1.4, color=_colour(i), ls=_dash(i), label=_label(s.label))
    _finish(ax, "False-positive rate (1 − specificity)", "True-positive rate (sensitivity)")
    return _svg(fig, "ROC curves")


def pr_svg(series: Sequence[Series], *, prevalence: float) -> str:
    """Precision-recall curves with the no-skill line at the outcome prevalence."""
    fig, ax = _figure()
    ax.plot([0, 1], [prevalence, prevalence], color="#888888", lw=0.8, ls=":", label="no skill")
    for i, s in enumerate(series):
        ax.plot(s.x, _num(s.y), lw=1.4, color=_colour(i), ls=_dash(i), label=_label(s.label))
    _finish(
        ax, "Recall (sensitivity)", "Precision (positive predictive value)", legend="lower left"
    )
    return _svg(fig, "Precision-recall curves")


def calibration_svg(series: Sequence[Series]) -> str:
    """Observed event rate against mean predicted risk per bin, with the ideal diagonal."""
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], color="#888888", lw=0.8, ls=":", label="ideal")
    for i, s in enumerate(series):
        ax.plot(
            s.x,
            _num(s.y),
            lw=1.2,
            marker="o",
            ms=3,
            color=_colour(i),
            ls=_dash(i),
            label=_label(s.label),
        )
    _finish(ax, "Predicted risk", "Observed event rate")
    return _svg(fig, "Calibration curves")


def td_auc_svg(series: Sequence[Series]) -> str:
    """Time-dependent AUC at each horizon, with the chance level."""
    fig, ax = _figure()
    xs = [x for s in series for x in s.x]
    if xs:
        ax.plot([min(xs), max(xs)], [0.5, 0.5], color="#888888", lw=0.8, ls=":", label="chance")
    for i, s in enumerate(series):
        ax.plot(
            s.x,
            _num(s.y),
            lw=1.4,
            marker="o",
            ms=3,
            color=_colour(i),
            ls=_dash(i),
            label=_label(s.label),
        )
    _finish(ax, "Time since index date", "Time-dependent AUC", legend="best", unit_box=False)
    ax.set_ylim(min(0.45, ax.get_ylim()[0]), max(0.8, min(1.0, ax.get_ylim()[1] + 0.05)))
    return _svg(fig, "Time-dependent AUC")


def km_svg(series: Sequence[Series], *, title: str) -> str:
    """Kaplan-Meier step curves with their confidence bands."""
    fig, ax = _figure()
    for i, s in enumerate(series):
        ax.step(
            s.x,
            _num(s.y),
            where="post",
            lw=1.4,
            color=_colour(i),
            ls=_dash(i),
            label=_label(s.label),
        )
        if s.low is not None and s.high is not None:
            ax.fill_between(
                s.x, _num(s.low), _num(s.high), step="post", alpha=0.15, color=_colour(i), lw=0
            )
    _finish(ax, "Time since index date", "Survival probability", legend="best", unit_box=False)
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    return _svg(fig, title)


def _figure() -> tuple[Figure, Axes]:
    with _style_context():
        fig = Figure(figsize=(4.6, 3.9))  # fixed margins: constrained layout is slow
        fig.subplots_adjust(left=0.15, right=0.97, bottom=0.13, top=0.97)
        ax = fig.add_subplot()
    return fig, ax


@contextlib.contextmanager
def _style_context(**extra: str) -> Iterator[None]:
    # cast: matplotlib types rc_context's keys as a Literal of every rcParam name
    with mpl.rc_context(cast(Any, {**_RC, **{k.replace("_", "."): v for k, v in extra.items()}})):
        yield


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _dash(i: int) -> str:
    return DASHES[(i // len(PALETTE)) % len(DASHES)]


def _num(values: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def _label(text: str) -> str:
    """A legend label shown literally: no mathtext, and not hidden by a leading underscore."""
    text = text.replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _finish(
    ax: Axes, xlabel: str, ylabel: str, *, legend: Corner = "lower right", unit_box: bool = True
) -> None:
    with _style_context():
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if unit_box:
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_aspect("equal")
        ax.legend(loc=legend, fontsize=7.5, framealpha=0.85, edgecolor="#dddddd")


_PROLOGUE = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_XMLNS = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')


def _svg(fig: Figure, title: str) -> str:
    """The figure as an ``<svg>`` element to inline in HTML (no XML prologue, no metadata)."""
    buf = io.StringIO()
    # Salting with the title (unique on the page) keeps the clip-path ids unique and the
    # output deterministic.
    with _style_context(svg_hashsalt=title):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = _METADATA.sub("", _PROLOGUE.sub("", buf.getvalue(), count=1))
    # An HTML parser puts inline <svg> (and xlink:href) in their namespaces by itself.
    text = _XMLNS.sub("", text, count=2)
    escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
    return text.replace("<svg ", f'<svg role="img" aria-label="{escaped}" ', 1).strip()
