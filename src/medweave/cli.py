"""The ``medweave`` command line: a thin typer app, each command calls one public function.

Exit codes: 0 success, 2 bad input (arguments, config, files), 1 unexpected failure.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from medweave import __version__
from medweave._atomic import check_output_dir
from medweave.cohort import Cohort
from medweave.cohort import build as build_cohort_from_yaml
from medweave.errors import InputError
from medweave.sources import available as available_sources
from medweave.synth import SynthSummary, synthesize
from medweave.synth.fhir import export_fhir

app = typer.Typer(
    name="medweave",
    help="Multimodal biomedical data integration: read, align, fuse, predict, explain, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        print(f"medweave {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Multimodal biomedical data integration."""


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the cohort into.")],
    patients: Annotated[int, typer.Option("--patients", help="Number of patients.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
    missing: Annotated[
        float,
        typer.Option("--missing", help="Share of patients lacking at least one modality, [0, 1)."),
    ] = 0.3,
    mechanism: Annotated[
        str,
        typer.Option("--mechanism", help="Missingness mechanism: mcar, mar or mnar."),
    ] = "mnar",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a non-empty --out folder.")
    ] = False,
    fhir: Annotated[
        bool, typer.Option("--fhir", help="Also export the EHR as FHIR R4 NDJSON in DIR/fhir.")
    ] = False,
    volumes: Annotated[
        bool,
        typer.Option("--volumes", help="Imaging as 3-D NIfTI chest volumes (DIR/volumes)."),
    ] = False,
    scenario: Annotated[
        str | None,
        typer.Option(
            "--scenario",
            help='Generator knobs as JSON, e.g. \'{"shapes": {"ehr": "threshold"}}\'.',
        ),
    ] = None,
) -> None:
    """Write a synthetic multimodal cohort (OMOP, DICOM, h5ad, exposures) with known truth."""
    knobs = None
    if scenario is not None:
        from medweave.synth import Scenario

        try:
            raw = json.loads(scenario)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"--scenario: not JSON ({exc.msg}); e.g. '{{\"interaction\": false}}'"
            ) from None
        if not isinstance(raw, dict):
            raise InputError(
                "--scenario: expected a JSON object of knobs, e.g. '{\"n_genes\": 200}'"
            )
        knobs = Scenario.from_mapping(raw)
    with console.status(f"Generating {patients} patients..."):
        summary = synthesize(
            out,
            n_patients=patients,
            seed=seed,
            missing=missing,
            mechanism=mechanism,
            overwrite=overwrite,
            scenario=knobs,
        )
        if fhir:
            export_fhir(out)
        if volumes:
            from medweave.synth.volumes import write_volumes

            write_volumes(out, seed=seed)
    print_summary(summary)
    if fhir:
        console.print(f"FHIR R4 export: {out / 'fhir'}")
    if volumes:
        console.print(f"3-D volumes (imaging reads them): {out / 'volumes'}")


@app.command()
def build(
    config: Annotated[Path, typer.Argument(help="cohort.yaml to build from.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the cohort into.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a non-empty --out folder.")
    ] = False,
) -> None:
    """Build a patient-level cohort from the sources in cohort.yaml, with its audit."""
    check_output_dir(out, overwrite=overwrite)
    with console.status(f"Building the cohort from {config}..."):
        cohort = build_cohort_from_yaml(config)
        cohort.save(out, overwrite=overwrite)
    print_flow(cohort)
    console.print(f"Cohort written to {out} (audit: {out / 'audit.json'})")


@app.command()
def run(
    study: Annotated[Path, typer.Argument(help="study.yaml: cohort, task, models, validation.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (results, report, models).")],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run in --out.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a non-empty --out folder.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Run a study: every model under cross-validation, evaluated, stratified, reported."""
    from medweave.experiment import run_study

    result = run_study(study, out, resume=resume, overwrite=overwrite, quiet=quiet)
    print_results(result.results, quiet=quiet)
    console.print(f"Report: {result.report}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the cohort and the run.")] = Path(
        "medweave-demo"
    ),
    patients: Annotated[int, typer.Option("--patients", help="Synthetic patients.")] = 2000,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Synthesise a cohort with known truth and run the default study on it."""
    from medweave.experiment._demo import run_demo

    if not quiet:
        console.print(f"Synthesising {patients} patients into {out / 'cohort'} (if not there)...")
    result = run_demo(out, patients=patients, quiet=quiet)
    print_results(result.results, quiet=False)
    console.print(f"Report: {result.report}")


def print_results(results: dict[str, Any], *, quiet: bool) -> None:
    """The comparison table: each model's main metric with its interval, and the ceiling."""
    main = "auroc" if results["task"] == "binary" else "c_harrell"
    diffs = {c["model"]: c for c in results["comparisons"]}
    table = Table(
        title=f"{results['study']['name']}: {main}",
        title_justify="left",
        caption="vs best: difference from the best single modality; p: paired bootstrap",
        caption_justify="left",
    )
    for col in ("model", "modalities", main, "95% CI", "vs best", "p"):
        left = col in ("model", "modalities")
        table.add_column(
            col,
            justify="left" if left else "right",
            no_wrap=col != "modalities",
            overflow="fold",
        )

    def fmt(x: float | None) -> str:
        return "—" if x is None else f"{x:.3f}"

    ranked = sorted(
        results["models"],
        key=lambda m: -(m["metrics"][main]["estimate"] or float("-inf")),
    )
    every = {mod for m in results["models"] for mod in m["modalities"]}

    def modalities(mods: list[str]) -> str:
        return f"all {len(mods)}" if len(mods) > 1 and set(mods) == every else ", ".join(mods)

    for m in ranked:
        est = m["metrics"][main]
        d = diffs.get(m["name"])
        table.add_row(
            m["name"],
            modalities(m["modalities"]),
            fmt(est["estimate"]),
            f"{fmt(est['ci_low'])}–{fmt(est['ci_high'])}",
            f"{d['difference']:+.3f}" if d and d["difference"] is not None else "",
            f"{d['p_value']:.3f}" if d and d["p_value"] is not None else "",
        )
    for name, scores in (results.get("ceiling") or {}).items():
        if scores.get(main) is not None:
            table.add_row(f"ceiling ({name})", "", fmt(scores[main]), "", "", "")
    console.print(table)


@app.command(name="list")
def list_components(
    checks: Annotated[
        bool, typer.Option("--checks", help="List each reader's value checks instead.")
    ] = False,
) -> None:
    """List what a config may name: sources, encoders, fusion strategies and tasks."""
    from medweave.models.encoders import ENCODERS
    from medweave.models.fusion import FUSIONS
    from medweave.models.tasks import TASKS

    if checks:
        import medweave.cohort._build  # noqa: F401  (the index table's checks)
        from medweave.sources._checks import declared_rules

        available_sources()  # imports (and so registers) every reader
        for reader, rules in declared_rules().items():
            for rule in rules:
                how = "" if rule.severity == "error" else " (judgement call: excluded, warned)"
                print(f"{reader:16s} {rule.field:18s} {rule.expect}{how}")
        return

    groups = {
        "source": available_sources(),
        "encoder": ENCODERS.describe(),
        "fusion": FUSIONS.describe(),
        "task": TASKS.describe(),
    }
    for kind, entries in groups.items():
        for name, description in entries.items():
            print(f"{kind:8s} {name:18s} {description}")


def print_flow(cohort: Cohort) -> None:
    """The cohort-flow table: rows read, used and excluded per source; patients per modality."""
    flow = cohort.audit.flow
    console.print(
        f"[bold]Cohort flow[/bold]: {flow.get('input_patients', cohort.n)} input patients -> "
        f"{cohort.n} in the cohort"
    )
    for reason, count in flow.get("excluded", {}).items():
        console.print(f"  excluded: {count} ({reason})")
    table = Table(title="Sources", title_justify="left")
    for col in ("source", "rows read", "rows used", "rows excluded", "patients with data"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for name, src in cohort.audit.sources.items():
        present = f"{src.patients}/{cohort.n}" if name in cohort.modalities else "-"
        excluded = sum(src.excluded.values())
        table.add_row(name, f"{src.rows_read:,}", f"{src.rows_used:,}", f"{excluded:,}", present)
    console.print(table)
    for name, src in cohort.audit.sources.items():
        lines = []
        if src.excluded:
            rows = ", ".join(f"{v:,} {k}" for k, v in sorted(src.excluded.items()))
            lines.append(f"rows excluded: {rows}")
        if src.patients_missing:
            who = ", ".join(f"{v:,} {k}" for k, v in sorted(src.patients_missing.items()))
            lines.append(f"patients without it: {who}")
        block = cohort.modalities.get(name)
        lines += _reading_notes(block.meta) if block is not None else []
        for line in lines:
            console.print(f"  {name}: {line}", highlight=False)


def _reading_notes(meta: dict[str, Any]) -> list[str]:
    """What a reader decided that the user should know (from the block's meta)."""
    notes = []
    if "scale" in meta:
        how = (
            f"detected: {meta.get('scale_evidence')}" if meta.get("scale_detected") else "declared"
        )
        notes.append(f"expression scale {meta['scale']} ({how})")
    if meta.get("locations_normalised"):
        notes.append(f"{meta['locations_normalised']:,} location codes zero-padded")
    return notes


def print_summary(summary: SynthSummary) -> None:
    """The cohort summary: patients, outcomes, modalities present, rows and ceilings."""
    n = summary.n_patients
    console.print(
        f"[bold]Synthetic cohort[/bold] {summary.out}  "
        f"({n} patients, seed {summary.seed}, {summary.missing:.0%} incomplete, "
        f"{summary.mechanism})"
    )
    console.print(
        f"Outcome (death within 2 years): {summary.outcome_rate:.1%}   "
        f"deaths during follow-up: {summary.event_rate:.1%}   "
        f"median follow-up: {summary.median_followup_days:.0f} days"
    )
    mod = Table(title="Modalities present", title_justify="left")
    mod.add_column("modality")
    mod.add_column("patients", justify="right")
    mod.add_column("share", justify="right")
    for name, count in summary.present.items():
        mod.add_row(name, str(count), f"{count / n:.0%}")
    console.print(mod)
    rows = Table(title="Records", title_justify="left")
    rows.add_column("table / files")
    rows.add_column("rows", justify="right")
    for name, count in summary.rows.items():
        rows.add_row(name, f"{count:,}")
    console.print(rows)
    ceil = Table(title="Ceilings (truth/ceiling.json)", title_justify="left")
    ceil.add_column("ceiling")
    ceil.add_column("AUROC", justify="right")
    ceil.add_column("C-index", justify="right")
    for name, scores in summary.ceiling.items():
        ceil.add_row(name, f"{scores['auroc']:.3f}", f"{scores['c_index']:.3f}")
    console.print(ceil)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and map errors to exit codes (2 bad input, 1 unexpected).

    Typer itself exits 2 on usage errors (unknown option, wrong type).
    """
    try:
        app(args=argv, prog_name="medweave")
    except InputError as exc:
        print(f"medweave: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        if os.environ.get("MEDWEAVE_DEBUG"):
            traceback.print_exc()
        print(
            f"medweave: unexpected error: {type(exc).__name__}: {exc} "
            "(set MEDWEAVE_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
