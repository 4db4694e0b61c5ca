"""The ``medweave`` command line: a thin typer app, each command calls one public function.

Exit codes: 0 success, 2 bad input (arguments, config, files), 1 unexpected failure.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

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
) -> None:
    """Write a synthetic multimodal cohort (OMOP, DICOM, h5ad, exposures) with known truth."""
    with console.status(f"Generating {patients} patients..."):
        summary = synthesize(
            out,
            n_patients=patients,
            seed=seed,
            missing=missing,
            mechanism=mechanism,
            overwrite=overwrite,
        )
        if fhir:
            export_fhir(out)
    print_summary(summary)
    if fhir:
        console.print(f"FHIR R4 export: {out / 'fhir'}")


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


@app.command(name="list")
def list_components() -> None:
    """List what a config may name: sources, encoders, fusion strategies and tasks."""
    from medweave.models.encoders import ENCODERS
    from medweave.models.fusion import FUSIONS
    from medweave.models.tasks import TASKS

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
    for col in ("source", "rows read", "rows used", "rows excluded (reason)", "patients"):
        table.add_column(col, justify="left" if col.startswith(("source", "rows ex")) else "right")
    for name, src in cohort.audit.sources.items():
        excluded = ", ".join(f"{v:,} {k}" for k, v in sorted(src.excluded.items())) or "-"
        present = f"{src.patients}/{cohort.n}" if name in cohort.modalities else "-"
        table.add_row(name, f"{src.rows_read:,}", f"{src.rows_used:,}", excluded, present)
    console.print(table)


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
