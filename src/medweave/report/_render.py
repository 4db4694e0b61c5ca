"""Turn a results dict into the one-page report: the numbers in words, tables and plots."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import jinja2
from markupsafe import Markup

from medweave import __version__
from medweave._atomic import atomic_file
from medweave.errors import InputError
from medweave.report import _plots
from medweave.report._schema import SCHEMA_VERSION, validate_results

__all__ = ["render"]

Direction = Literal["higher", "lower", "one", "zero"]


@dataclass(frozen=True)
class Metric:
    """How a metric is named on the page and which value is best."""

    label: str
    best: Direction


METRICS: dict[str, Metric] = {
    "auroc": Metric("AUROC", "higher"),
    "auprc": Metric("AUPRC", "higher"),
    "brier": Metric("Brier score", "lower"),
    "calibration_slope": Metric("Calibration slope", "one"),
    "calibration_intercept": Metric("Calibration intercept", "zero"),
    "c_harrell": Metric("Harrell's C", "higher"),
    "c_uno": Metric("Uno's C", "higher"),
    "td_auc": Metric("Mean td-AUC", "higher"),
    "ibs": Metric("Integrated Brier score", "lower"),
}
MAIN_METRIC = {"binary": "auroc", "survival": "c_harrell"}
N_PLOTTED = 6
DASH = "—"


def render(results: dict[str, Any], out: Path) -> Path:
    """Write ``out/report.html`` from a results dict (schema 1.0) and return its path.

    The page is self-contained: inline CSS and SVG, no scripts, nothing fetched. It is
    written to a temporary file in ``out`` and renamed, so a reader never sees half a page.
    ``results`` is validated first (:func:`medweave.report.validate_results`).
    """
    out = Path(out)
    if out.suffix.lower() in {".html", ".htm"}:
        raise InputError(f"render: out={out} looks like a file; pass the folder for report.html")
    if out.exists() and not out.is_dir():
        raise InputError(f"render: out={out} is a file, expected a folder for report.html")
    validate_results(results)
    html = _environment().get_template("report.html.j2").render(**_context(results))
    path = out / "report.html"
    with atomic_file(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; a report is meant to be shared
    return path


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("medweave.report", "templates"),
        autoescape=True,  # the template is .html.j2, which select_autoescape would miss
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_num
    env.filters["count"] = fmt_count
    env.filters["pct"] = fmt_pct
    env.filters["p"] = fmt_p
    env.filters["seconds"] = fmt_seconds
    return env


# -- formatting ---------------------------------------------------------------------------


def fmt_num(value: float | None, digits: int = 3) -> str:
    """A float with fixed decimals, or a dash where undefined."""
    return DASH if value is None else f"{value:.{digits}f}".replace("-", "−")


def fmt_signed(value: float | None, digits: int = 3) -> str:
    return DASH if value is None else f"{value:+.{digits}f}".replace("-", "−")


def fmt_count(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def fmt_pct(value: float | None, digits: int = 0) -> str:
    return DASH if value is None else f"{100 * value:.{digits}f}%"


def fmt_p(value: float | None) -> str:
    if value is None:
        return DASH
    if value < 0.001:
        return "<0.001"
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def fmt_interval(m: dict[str, float | None] | None, digits: int = 3) -> str:
    """``0.812 (0.790–0.833)``; the estimate alone when the interval is undefined."""
    if m is None or m["estimate"] is None:
        return DASH
    if m["ci_low"] is None or m["ci_high"] is None:
        return fmt_num(m["estimate"], digits)
    low, high = fmt_num(m["ci_low"], digits), fmt_num(m["ci_high"], digits)
    return f"{fmt_num(m['estimate'], digits)} ({low}–{high})"


def _interval_parts(m: dict[str, float | None] | None) -> dict[str, str | None]:
    """The two halves of :func:`fmt_interval`, for a table cell that styles them apart."""
    text = fmt_interval(m)
    estimate, _, ci = text.partition(" (")
    return {"estimate": estimate, "ci": ci[:-1] if ci else None}


def fmt_seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _metric_label(name: str) -> str:
    return METRICS[name].label if name in METRICS else name


def _badness(name: str, value: float) -> float | None:
    """Lower is better; None for a metric without a known direction."""
    if name not in METRICS:
        return None
    return {
        "higher": -value,
        "lower": value,
        "one": abs(value - 1),
        "zero": abs(value),
    }[METRICS[name].best]


def _date(text: str) -> str:
    when = datetime.fromisoformat(text)
    shown = when.strftime("%d %b %Y") + ("" if len(text) <= 10 else when.strftime(", %H:%M"))
    return f"{shown} {when.tzname()}" if when.tzinfo is not None and len(text) > 10 else shown


# -- the page's content -------------------------------------------------------------------


def _context(results: dict[str, Any]) -> dict[str, Any]:
    task = results["task"]
    models = results["models"]
    main = _main_metric(task, models)
    ranked = sorted(models, key=lambda m: _sort_key(m, main))
    by_name = {m["name"]: m for m in models}
    metrics = _metric_columns(models)
    cohort = results["cohort"]
    return {
        "r": results,
        "task": task,
        "events_word": "events" if task == "survival" else "patients with the outcome",
        "created": _date(results["study"]["created"]),
        "validation": _validation(results["study"]),
        "neural": _neural(_used_settings(results["study"].get("estimator") or {}, ranked)),
        "chosen": _chosen(ranked),
        "main": main,
        "main_label": _metric_label(main),
        "finding": _finding(results, ranked, by_name, main),
        "few_data": _few_data(results, ranked, main),
        "flow": _flow(cohort),
        "missingness": _missingness(cohort),
        "columns": [{"name": m, "label": _metric_label(m)} for m in metrics],
        "table": _model_table(ranked, metrics, results["ceiling"]),
        "plots": _curve_plots(results, ranked),
        "n_plotted": min(N_PLOTTED, len(ranked)),
        "stack": _stack(models),
        "comparisons": _comparisons(results["comparisons"], by_name),
        "strata": _strata(results["stratification"]),
        "subgroups": _subgroups(ranked, results["best_single"], by_name, main),
        "timing": _timing(results["timing"], ranked),
        "renderer_version": __version__,
        "schema_version": SCHEMA_VERSION,
    }


def _main_metric(task: str, models: list[dict[str, Any]]) -> str:
    preferred = MAIN_METRIC[task]
    if any(preferred in m["metrics"] for m in models):
        return preferred
    return next((name for m in models for name in m["metrics"]), preferred)


def _estimate(model: dict[str, Any], metric: str) -> float | None:
    value = model["metrics"].get(metric)
    return None if value is None else value["estimate"]


def _sort_key(model: dict[str, Any], metric: str) -> tuple[int, float]:
    value = _estimate(model, metric)
    bad = None if value is None else _badness(metric, value)
    if bad is None:
        return (1, 0.0) if value is None else (0, -value)
    return (0, bad)


def _metric_columns(models: list[dict[str, Any]]) -> list[str]:
    present = {name for m in models for name in m["metrics"]}
    known = [name for name in METRICS if name in present]
    return known + sorted(present - set(known))


def _validation(study: dict[str, Any]) -> str:
    v = study["validation"]
    if v["kind"] == "kfold":
        text = f"{v['folds']}-fold cross-validation (seed {v['seed']})"
    elif v["split_column"]:
        text = f"fixed train/test split from column “{v['split_column']}”"
    else:
        text = f"fixed train/test split (seed {v['seed']})"
    return f"{text}; {fmt_count(study['n_bootstrap'])} bootstrap resamples for intervals"


def _best_with_settings(ranked: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best model whose estimator recorded the settings it chose (a neural model)."""
    return next((m for m in ranked if m.get("settings")), None)


def _used_settings(study: dict[str, Any], ranked: list[dict[str, Any]]) -> dict[str, Any]:
    """The neural models' settings: the study's, over what the best one chose itself."""
    model = _best_with_settings(ranked)
    chosen = {k: v["value"] for k, v in (model or {}).get("settings", {}).items()}
    return {**chosen, **study}


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items()) or DASH
    if isinstance(value, list | tuple):
        return ", ".join(_value(v) for v in value) or DASH
    if isinstance(value, float):
        return f"{value:g}"
    return DASH if value is None else str(value)


def _chosen(ranked: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The settings the best neural model chose for this cohort, with the reasons, and
    the warnings its fits gave."""
    model = _best_with_settings(ranked)
    if model is None:
        return None
    rows = [
        {"name": name, "value": _value(s.get("value")), "reason": s.get("reason", "")}
        for name, s in model["settings"].items()
    ]
    return {"model": model["name"], "rows": rows, "warnings": model.get("warnings") or []}


def _neural(settings: dict[str, Any]) -> str:
    """How the neural models were built, in a sentence (empty: the defaults)."""
    parts = []
    if int(settings.get("ensemble") or 1) > 1:
        parts.append(f"each neural model averages {settings['ensemble']} networks")
    if settings.get("interactions"):
        parts.append(
            "their output is averaged 1:1 with that of a penalised regression on the same "
            "inputs with rank-"
            f"{settings['interactions']} pairwise interactions between modalities"
        )
    params = settings.get("encoder_params") or {}
    for m, p in params.items():
        augment = p.get("augment") if isinstance(p, dict) else None
        if augment:
            images = (
                "images randomly flipped and rotated by multiples of 90°"
                if augment == "dihedral"
                else "randomly flipped images"
            )
            tta = (
                ", and embeds each image as the mean over those transforms" if p.get("tta") else ""
            )
            parts.append(f"the {m} encoder trains on {images}{tta}")
    if not parts:
        return ""
    return "; ".join([*parts, "a model of images alone is a single network"])


def _stack(models: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stack's final weights in words: the members it uses, largest first, and how
    many it leaves out."""
    model = next((m for m in models if m["kind"] == "stack" and m.get("stack")), None)
    if model is None:
        return None
    info = model["stack"]
    used = sorted(((n, w) for n, w in info["weights"].items() if w > 0), key=lambda t: -t[1])
    total = sum(w for _, w in used) or 1.0
    return {
        "used": [{"name": n, "share": fmt_num(w / total, 2)} for n, w in used],
        "unused": [n for n, w in info["weights"].items() if w <= 0],
        "penalty": info["penalty"],
    }


def _describe_model(model: dict[str, Any]) -> str:
    mods = model["modalities"]
    what = ", ".join(mods) if len(mods) <= 3 else f"all {len(mods)} modalities"
    fusion = f", {model['fusion']} fusion" if model["fusion"] else ""
    if model["kind"] == "stack":
        fusion = ", a weighted vote of the other models"
    return f"{what}{fusion}"


#: Below these, the report says the data are few: events (or patients with the outcome)
#: and the width of the best model's interval; events per candidate feature is then given
#: as context (penalised, reduced and stacked models need not meet a regression's ten).
FEW_EVENTS = 200
WIDE_INTERVAL = 0.10


def _few_data(results: dict[str, Any], ranked: list[dict[str, Any]], main: str) -> str:
    """A warning in words when the cohort holds few events for what is estimated (empty
    when it does not)."""
    cohort = results["cohort"]
    events = int(cohort["n_events"])
    features = sum((cohort.get("features") or {}).values())
    best = ranked[0]["metrics"].get(main) if ranked else None
    width = (
        best["ci_high"] - best["ci_low"]
        if best and best.get("ci_high") is not None and best.get("ci_low") is not None
        else None
    )
    what = "events" if results["task"] == "survival" else "patients with the outcome"
    reasons = []
    if events < FEW_EVENTS:
        reasons.append(f"{fmt_count(events)} {what}")
    if width is not None and width > WIDE_INTERVAL:
        reasons.append(f"an interval {fmt_num(width, 2)} wide around the best model's score")
    if not reasons:
        return ""
    if features:
        reasons.append(
            f"{events / features:.2g} {what} per candidate feature ({fmt_count(features)})"
        )
    return (
        f"Few data for what is estimated: {'; '.join(reasons)}. Scores can move by more "
        "than their differences from fold to fold and draw to draw; read the intervals, not "
        "the ranking, and prefer the simpler model where intervals overlap."
    )


def _finding(
    results: dict[str, Any],
    ranked: list[dict[str, Any]],
    by_name: dict[str, dict[str, Any]],
    main: str,
) -> str:
    """The key finding in one sentence."""
    best = ranked[0]
    label = _metric_label(main)
    head = (
        f"The best model, {best['name']} ({_describe_model(best)}), reached {label} "
        f"{_in_words(best['metrics'].get(main))}"
    )
    single = by_name.get(results["best_single"] or "")
    if single is None:
        return head + "; no single-modality model was evaluated for comparison."
    if single is best:
        return head + "; it is itself a single-modality model, so no modality combination beat it."
    versus = (
        f"the best single modality, {single['name']} ({label} {fmt_num(_estimate(single, main))})"
    )
    comp = next(
        (
            c
            for c in results["comparisons"]
            if c["model"] == best["name"]
            and c["reference"] == single["name"]
            and c["metric"] == main
        ),
        None,
    )
    if comp is None:
        return f"{head}, against {versus}; no paired comparison of the two is in the results."
    ci = f"CI {fmt_num(comp['ci_low'])} to {fmt_num(comp['ci_high'])}"
    return (
        f"{head}; compared with {versus}, the paired difference was "
        f"{fmt_signed(comp['difference'])} ({ci}; p {_p_words(comp['p_value'])})."
    )


def _in_words(m: dict[str, float | None] | None) -> str:
    if m is None or m["estimate"] is None:
        return "an undefined value"
    if m["ci_low"] is None or m["ci_high"] is None:
        return fmt_num(m["estimate"])
    return f"{fmt_num(m['estimate'])} (CI {fmt_num(m['ci_low'])}–{fmt_num(m['ci_high'])})"


def _p_words(p: float | None) -> str:
    text = fmt_p(p)
    return text.replace("<", "< ") if text.startswith("<") else f"= {text}"


def _flow(cohort: dict[str, Any]) -> dict[str, Any]:
    flow = cohort["flow"]
    n = flow["cohort_patients"]
    excluded = sorted(flow["excluded"].items(), key=lambda kv: -kv[1])
    return {
        "input": flow["input_patients"],
        "excluded_total": sum(v for _, v in excluded),
        "excluded": excluded,
        "cohort": n,
        "events": cohort["n_events"],
        "modalities": [
            {"name": k, "n": v, "share": v / n if n else None}
            for k, v in flow["modalities_present"].items()
        ],
        "sources": [
            {
                "name": name,
                "read": src["rows_read"],
                "used": src["rows_used"],
                "excluded": sorted(src["excluded"].items(), key=lambda kv: -kv[1]),
                "patients": src["patients"] if name in flow["modalities_present"] else None,
                "missing": sorted(src["patients_missing"].items(), key=lambda kv: -kv[1]),
            }
            for name, src in cohort.get("sources", {}).items()
        ],
    }


def _missingness(cohort: dict[str, Any]) -> dict[str, Any]:
    miss = cohort["missingness"]
    patterns = sorted(miss["patterns"], key=lambda p: -p["n"])
    total = sum(p["n"] for p in patterns)
    largest = max((p["n"] for p in patterns), default=0)
    totals = [
        sum(p["n"] for p in patterns if p["present"][j]) for j in range(len(miss["modalities"]))
    ]
    return {
        "modalities": miss["modalities"],
        "rows": [
            {
                "present": p["present"],
                "n": p["n"],
                "share": p["n"] / total if total else None,
                "bar": round(100 * p["n"] / largest) if largest else 0,
            }
            for p in patterns
        ],
        "totals": totals,
        "total": total,
    }


def _best_rows(rows: list[dict[str, Any]], metric: str) -> set[int]:
    """Indices of the rows holding the best value of ``metric`` (ties at 3 decimals)."""
    scored: list[tuple[int, float]] = []
    for i, row in enumerate(rows):
        value = (row.get(metric) or {}).get("estimate")
        bad = None if value is None else _badness(metric, round(value, 3))
        if bad is not None:
            scored.append((i, bad))
    if not scored:
        return set()
    best = min(s for _, s in scored)
    return {i for i, s in scored if s == best}


def _model_table(
    ranked: list[dict[str, Any]], metrics: list[str], ceiling: dict[str, Any] | None
) -> dict[str, Any]:
    rows = [m["metrics"] for m in ranked]
    best = {metric: _best_rows(rows, metric) for metric in metrics}
    body = [
        {
            "name": m["name"],
            "kind": m["kind"],
            "modalities": ", ".join(m["modalities"]),
            "fusion": m["fusion"] or DASH,
            "cells": [
                {**_interval_parts(m["metrics"].get(metric)), "best": i in best[metric]}
                for metric in metrics
            ],
        }
        for i, m in enumerate(ranked)
    ]
    ceilings = []
    if ceiling is not None:
        for key, label in (("observed", "observed data"), ("oracle", "oracle")):
            values = ceiling[key]
            ceilings.append(
                {"name": f"Ceiling ({label})", "cells": [fmt_num(values.get(m)) for m in metrics]}
            )
    return {"rows": body, "ceilings": ceilings}


def _curve_plots(results: dict[str, Any], ranked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The plots of the top models: ROC, PR and calibration, or time-dependent AUC."""
    top = ranked[:N_PLOTTED]
    plots = []
    if results["task"] == "binary":
        curves = [(m["name"], m["curves"]) for m in top if "roc" in m["curves"]]
        roc = [_plots.Series(n, c["roc"]["x"], c["roc"]["y"]) for n, c in curves]
        pr = [_plots.Series(n, c["pr"]["x"], c["pr"]["y"]) for n, c in curves]
        cal = [
            _plots.Series(n, c["calibration"]["predicted"], c["calibration"]["observed"])
            for n, c in curves
        ]
        cohort = results["cohort"]
        prevalence = cohort["n_events"] / cohort["n_patients"] if cohort["n_patients"] else 0.0
        plots += [
            {"title": "ROC", "svg": Markup(_plots.roc_svg(roc))},
            {"title": "Precision–recall", "svg": Markup(_plots.pr_svg(pr, prevalence=prevalence))},
            {"title": "Calibration", "svg": Markup(_plots.calibration_svg(cal))},
        ]
    else:
        series = [
            _plots.Series(m["name"], m["curves"]["td_auc"]["times"], m["curves"]["td_auc"]["auc"])
            for m in top
            if "td_auc" in m["curves"]
        ]
        plots.append({"title": "Time-dependent AUC", "svg": Markup(_plots.td_auc_svg(series))})
    return plots


def _comparisons(
    comparisons: list[dict[str, Any]], by_name: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    for c in comparisons:
        low, high = c["ci_low"], c["ci_high"]
        excludes_zero = low is not None and high is not None and (low > 0 or high < 0)
        rows.append(
            {
                "model": c["model"],
                "reference": c["reference"],
                "metric": _metric_label(c["metric"]),
                "difference": fmt_signed(c["difference"]),
                "ci": f"{fmt_signed(low)} to {fmt_signed(high)}",
                "p": fmt_p(c["p_value"]),
                "excludes_zero": excludes_zero,
            }
        )
    return rows


def _strata(strat: dict[str, Any] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if strat is None:  # a study without a neural model
        return out
    for key, title in (("clusters", "Clusters"), ("risk_groups", "Risk groups")):
        grouping = strat[key]
        if grouping is None:
            continue
        km = grouping["km"]
        svg = None
        if km:
            series = [
                _plots.Series(c["label"], c["time"], c["survival"], c["ci_low"], c["ci_high"])
                for c in km
            ]
            svg = Markup(_plots.km_svg(series, title=f"Kaplan-Meier curves: {title.lower()}"))
        silhouette = grouping["silhouette"]
        test = grouping["logrank"]
        out.append(
            {
                "key": key,
                "title": title,
                "g": grouping,
                "silhouette": (
                    None
                    if not silhouette
                    else sorted(silhouette.items(), key=lambda kv: int(kv[0]))
                ),
                "km_svg": svg,
                "logrank": None
                if test is None
                else f"Log-rank test: χ² = {fmt_num(test['statistic'], 1)}, df = {test['df']}, "
                f"p {_p_words(test['p_value'])}",
                "profiles": _profiles(grouping["profiles"]),
            }
        )
    return out


def _profiles(profiles: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if profiles is None:
        return None
    out = []
    for p in profiles:
        features = []
        for f in p["top_features"]:
            smd = f["smd"]
            arrow = DASH if smd is None or smd == 0 else ("↑ higher" if smd > 0 else "↓ lower")
            features.append({**f, "direction": arrow})
        presence = [
            {"name": k, "share": v, "bar": 0 if v is None else round(100 * v)}
            for k, v in p["modality_presence"].items()
        ]
        out.append({"label": p["label"], "features": features, "presence": presence})
    return out


def _subgroups(
    ranked: list[dict[str, Any]],
    best_single: str | None,
    by_name: dict[str, dict[str, Any]],
    main: str,
) -> dict[str, Any]:
    shown = [ranked[0]]
    if best_single in by_name and by_name[best_single] is not ranked[0]:
        shown.append(by_name[best_single])
    keyed = [{(s["variable"], s["level"]): s for s in m["subgroups"]} for m in shown]
    order: list[tuple[str, str]] = []
    for table in keyed:
        order += [k for k in table if k not in order]
    rows = []
    for key in order:
        first = next(t[key] for t in keyed if key in t)
        rows.append(
            {
                "variable": key[0],
                "level": key[1],
                "n": first["n"],
                "n_events": first["n_events"],
                "cells": [
                    fmt_interval(t[key]["metrics"].get(main)) if key in t else DASH for t in keyed
                ],
            }
        )
    return {"models": [m["name"] for m in shown], "rows": rows}


def _timing(timing: dict[str, Any], ranked: list[dict[str, Any]]) -> dict[str, Any]:
    total = timing["total_seconds"]
    # Each model's fits are in the second table; here only the run's wall-clock steps.
    steps = [
        {"name": k, "seconds": v, "share": v / total if total else None}
        for k, v in timing["steps"].items()
        if not k.startswith("fit ")
    ]
    fits = [
        {
            "name": m["name"],
            "total": sum(f["fit_seconds"] for f in m["folds"]),
            "mean": sum(f["fit_seconds"] for f in m["folds"]) / len(m["folds"]),
            "folds": len(m["folds"]),
        }
        for m in ranked
        if m["folds"]
    ]
    return {"total": total, "steps": steps, "fits": fits}
