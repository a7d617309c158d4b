"""Run an experiment's grid, one simulated federation per (cell, seed), resumably.

Layout of an experiment directory::

    OUT/experiment.toml          the file as given (its digest guards a resume)
    OUT/sweep.json               grid, seeds, versions; the manifest
    OUT/cells/CELL/seed-S/       one `fedrec simulate` run directory per run
    OUT/cells/CELL/seed-S.failed.json   why a run failed (retried on resume)
    OUT/runs.csv, summary.csv, rounds.csv, merchants.csv (+ .parquet)
    OUT/plots/*.png, OUT/report.html

A run directory appears whole or not at all (``staged_run_dir``), so a run
whose directory exists is finished: a resume skips it. A run killed midway
leaves a hidden staging directory; a resume renames it ``seed-S.aborted-N``
(its privacy ledger, if any, stays on the record) and runs the seed again.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError, ExitCode, FedrecError
from common.fileio import atomic_write_text
from simulations.experiment import Cell, Experiment, ResolvedRun, cells, resolve

logger = logging.getLogger(__name__)

MANIFEST = "sweep.json"
EXPERIMENT_COPY = "experiment.toml"
CELLS_DIR = "cells"


class SweepError(FedrecError):
    """Some runs of a sweep failed; the rest are kept and tabulated."""

    exit_code = ExitCode.SWEEP_INCOMPLETE


@dataclass(frozen=True)
class Job:
    cell: Cell
    seed: int

    def run_dir(self, out: Path) -> Path:
        return out / CELLS_DIR / self.cell.id / f"seed-{self.seed}"

    def failure_file(self, out: Path) -> Path:
        return out / CELLS_DIR / self.cell.id / f"seed-{self.seed}.failed.json"


@dataclass
class SweepOutcome:
    done_before: list[Job] = field(default_factory=list)
    ran: list[Job] = field(default_factory=list)
    failed: dict[Job, str] = field(default_factory=dict)
    aborted_kept: list[Path] = field(default_factory=list)


# (event, job, detail): "start", "done", "skip", "fail"
Listener = Callable[[str, Job, str], None]
CellRunner = Callable[[Experiment, ResolvedRun, Path], None]


def simulate_cell(experiment: Experiment, resolved: ResolvedRun, run_dir: Path) -> None:
    """The real thing: one simulated federation through Flower's Simulation Engine."""
    from simulations.runner import DataSource, SimulationSpec, simulate

    if "synthetic" in resolved.data:
        source = DataSource(synthetic=resolved.data["synthetic"])
    else:
        source = DataSource(path=resolved.data["path"], fmt=resolved.data["format"])
    events = source.load()
    partition = resolved.partition
    if resolved.partition_scheme == "auto":
        from dataclasses import replace

        scheme = "natural" if events.merchant_id is not None else "iid"
        partition = replace(partition, scheme=scheme)
    simulate(
        SimulationSpec(
            run=resolved.run,
            source=source,
            partition=partition,
            run_dir=run_dir,
            baselines=experiment.baselines,
            num_cpus=experiment.cpus,
            ray_address=experiment.ray_address,
        ),
        events=events,
    )


def jobs(experiment: Experiment) -> list[Job]:
    return [Job(cell, seed) for cell in cells(experiment) for seed in experiment.seeds]


def _open(experiment: Experiment, out: Path, mode: str) -> None:
    """Create ``out`` with the manifest, or check that it holds this same experiment."""
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        held = json.loads(manifest_path.read_text(encoding="utf-8"))
        if held.get("mode") != mode:
            raise ConfigError(
                f"{out} holds `fedrec experiment {held.get('mode')}` results, not `{mode}`; "
                "choose another --out."
            )
        if held.get("experiment_sha256") != experiment.digest:
            raise ConfigError(
                f"{out} holds a sweep of a different experiment file (its copy is "
                f"{out / EXPERIMENT_COPY}); finished runs would not match the new grid. "
                "Choose another --out, or restore the original file to resume."
            )
        return
    if out.exists() and any(out.iterdir()):
        raise ConfigError(
            f"{out} exists and is not an experiment directory (no {MANIFEST}); "
            "choose another --out."
        )
    from simulations.runner import versions

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / EXPERIMENT_COPY, experiment.text)
    manifest = {
        "name": experiment.name,
        "mode": mode,
        "description": experiment.description,
        "experiment_file": str(experiment.path),
        "experiment_sha256": experiment.digest,
        "axes": {axis.key: list(axis.values) for axis in experiment.axes},
        "seeds": list(experiment.seeds),
        "cells": [{"id": c.id, "values": dict(c.values)} for c in cells(experiment)],
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))


def _keep_aborted(job: Job, out: Path) -> list[Path]:
    """Rename what a killed run left (hidden staging directories) so it stays visible."""
    parent = job.run_dir(out).parent
    kept = []
    for stale in sorted(parent.glob(f".seed-{job.seed}.*")):
        n = 1
        while (target := parent / f"seed-{job.seed}.aborted-{n}").exists():
            n += 1
        stale.rename(target)
        kept.append(target)
    return kept


def run_sweep(
    experiment: Experiment,
    out: Path,
    *,
    run_cell: CellRunner = simulate_cell,
    listener: Listener | None = None,
    mode: str = "sweep",
) -> SweepOutcome:
    """Run every (cell, seed) not finished yet; failures are recorded and the rest go on.

    ``mode`` "run" runs the file's base settings only (its ``[sweep]`` ignored).
    """
    if mode == "run":
        from dataclasses import replace

        experiment = replace(experiment, axes=())
    _open(experiment, out, mode)
    outcome = SweepOutcome()
    tell = listener or (lambda event, job, detail: None)
    for job in jobs(experiment):
        run_dir = job.run_dir(out)
        if (run_dir / "metrics.json").is_file():
            outcome.done_before.append(job)
            tell("skip", job, "finished before")
            continue
        outcome.aborted_kept += _keep_aborted(job, out)
        tell("start", job, "")
        started = time.perf_counter()
        try:
            run_cell(experiment, resolve(experiment, job.cell, job.seed), run_dir)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # one bad cell must not sink the sweep
            reason = str(error) if isinstance(error, FedrecError) else repr(error)
            atomic_write_text(
                job.failure_file(out),
                json.dumps(
                    {
                        "cell": job.cell.id,
                        "seed": job.seed,
                        "error": reason,
                        "traceback": traceback.format_exc(),
                    },
                    indent=2,
                ),
            )
            outcome.failed[job] = reason
            tell("fail", job, reason)
            continue
        job.failure_file(out).unlink(missing_ok=True)
        outcome.ran.append(job)
        tell("done", job, f"{time.perf_counter() - started:.1f} s")
    return outcome
