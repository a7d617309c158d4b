"""``fedrec experiment run|sweep|report``: the work behind :mod:`simulations.experiment_cli`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common.errors import ConfigError, ExitCode
from simulations.experiment import load_experiment
from simulations.sweep import EXPERIMENT_COPY, MANIFEST, Job, SweepError, jobs, run_sweep
from simulations.sweep_report import summarise_experiment


def run_command(args: argparse.Namespace) -> int:
    experiment = load_experiment(args.file)
    if args.ray_address:
        experiment = replace(experiment, ray_address=args.ray_address)
    if args.cpus is not None:
        if args.cpus < 0:
            raise ConfigError(f"--cpus must be >= 0 (0 = all cores), got {args.cpus}.")
        experiment = replace(experiment, cpus=args.cpus)
    scope = experiment if args.mode == "sweep" else replace(experiment, axes=())
    out = args.out or Path("runs") / (experiment.name + ("-sweep" if args.mode == "sweep" else ""))
    console = Console(width=None if sys.stdout.isatty() else 120)
    total = len(jobs(scope))
    cells = total // len(experiment.seeds)
    console.print(
        f"fedrec experiment {args.mode}: {experiment.name}: {cells} cell(s) x "
        f"{len(experiment.seeds)} seed(s) = {total} run(s) -> {out}"
    )
    if args.mode == "run" and experiment.axes:
        console.print(
            "([sweep] is ignored by `run`; `fedrec experiment sweep` runs the grid.)", markup=False
        )
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} runs"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("starting", total=total)

        def listener(event: str, job: Job, detail: str) -> None:
            name = f"{job.cell.label()}, seed {job.seed}"
            if event == "start":
                progress.update(task, description=name)
            elif event == "skip":
                progress.advance(task)
            elif event == "done":
                progress.advance(task)
                progress.console.print(f"  done   {name} ({detail})", markup=False)
            elif event == "fail":
                progress.advance(task)
                progress.console.print(f"  failed {name}: {detail}", markup=False, style="red")

        try:
            outcome = run_sweep(experiment, out, listener=listener, mode=args.mode)
        except KeyboardInterrupt:
            console.print(
                f"interrupted: finished runs are kept in {out}; the same command resumes."
            )
            return ExitCode.INTERRUPTED
    failed = {f"{j.cell.label()}, seed {j.seed}": why for j, why in outcome.failed.items()}
    tables, plots, report = summarise_experiment(scope, out, failed=failed)
    console.print(
        f"{len(outcome.ran)} run(s) now, {len(outcome.done_before)} finished before, "
        f"{len(outcome.failed)} failed."
        + (
            f" {len(outcome.aborted_kept)} interrupted run(s) kept as *.aborted-N."
            if outcome.aborted_kept
            else ""
        )
    )
    _print_summary(console, tables, scope)
    console.print(f"tables: {out}/summary.csv (mean, 95% CI), runs.csv, rounds.csv, merchants.csv")
    console.print(f"plots:  {', '.join(str(p) for p in plots)}")
    console.print(f"report: {report}")
    if outcome.failed:
        raise SweepError(
            f"{len(outcome.failed)} of {total} runs failed (reasons above and in "
            f"{out}/cells/*/seed-*.failed.json); the same command retries them."
        )
    return ExitCode.OK


def _print_summary(console, tables, scope) -> None:  # type: ignore[no-untyped-def]
    summary = tables["summary"]
    if summary.empty:
        return
    metric = next((m for m in summary["metric"].unique() if m.startswith("ndcg@")), None)
    if metric is None:
        return
    axes = [axis.name for axis in scope.axes]
    table = Table(title=f"{metric}: mean and 95% CI over seeds")
    for column in (*axes, "seeds", "mean", "95% CI"):
        table.add_column(column, justify="left" if column in axes else "right")
    for _, row in summary[summary["metric"] == metric].iterrows():
        interval = "-" if row["seeds"] < 2 else f"{row['ci-low']:.4f} .. {row['ci-high']:.4f}"
        table.add_row(
            *(str(row[a]) for a in axes), str(row["seeds"]), f"{row['mean']:.4f}", interval
        )
    console.print(table)


def report_command(args: argparse.Namespace) -> int:
    manifest_path = args.out / MANIFEST
    if not manifest_path.is_file():
        raise ConfigError(f"{args.out} is not an experiment directory (no {MANIFEST}).")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    copy = args.out / EXPERIMENT_COPY
    experiment = replace(load_experiment(copy), name=str(manifest["name"]))
    if manifest.get("mode") == "run":
        experiment = replace(experiment, axes=())
    _, plots, report = summarise_experiment(experiment, args.out)
    print(f"wrote tables, {len(plots)} plot(s) and {report}")
    return ExitCode.OK
