"""``fedrec experiment run|sweep|report``: experiments as files, for researchers.

    fedrec experiment run   exp.toml [--out DIR]    the file's base settings, every seed
    fedrec experiment sweep exp.toml [--out DIR]    every cell of its [sweep] grid, every seed
    fedrec experiment report DIR                    rebuild tables, plots and report.html

Both run commands resume: finished runs in DIR are kept and skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMANDS = "simulations.experiment_commands"  # the functions behind these flags


def add_experiment(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "experiment",
        help="run an experiment file, or sweep its grid over seeds (tables, plots, HTML)",
        description="Experiments as TOML files: data, partition, model, strategy, privacy, "
        "rounds and seeds; a [sweep] table names the grid. See README, research.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, text in (
        ("run", "run the file's base settings for every seed ([sweep] is ignored)"),
        ("sweep", "run every cell of the file's [sweep] grid for every seed"),
    ):
        v = verbs.add_parser(verb, help=text, description=text + "; resumable.")
        v.add_argument("file", type=Path, metavar="EXPERIMENT.toml")
        v.add_argument(
            "--out",
            type=Path,
            help=f"experiment directory (default runs/NAME{'' if verb == 'run' else '-sweep'}); "
            "an existing one of the same file is resumed",
        )
        v.add_argument(
            "--ray-address",
            help="run on an existing Ray cluster (HOST:PORT or auto) instead of starting one",
        )
        v.add_argument("--cpus", type=int, help="CPUs for each simulation (default: all)")
        v.add_argument("--verbose", action="store_true", help="show Flower and Ray logs")
        v.set_defaults(handler=f"{COMMANDS}:run_command", mode=verb)
    r = verbs.add_parser("report", help="rebuild tables, plots and report.html of DIR")
    r.add_argument("out", type=Path, metavar="DIR")
    r.set_defaults(handler=f"{COMMANDS}:report_command")
