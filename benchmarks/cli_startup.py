"""Benchmark: how long `fedrec --help`, and every command's help, take to print.

Each help runs in a fresh interpreter (``python -m simulations.cli ... --help``,
what the ``fedrec`` entry point runs) ``--repeats`` times; the median wall time
is reported beside two baselines timed the same way on the same machine:
``python -c pass`` (the interpreter's own start) and ``python -c "import torch"``
(what one torch import costs, the old floor of every help). The commands are
enumerated from the parser tree (:func:`simulations.cli.command_paths`), so new
ones are timed too. ``--compare DIR`` times the same command lines against
another checkout (e.g. ``git worktree add /tmp/before HEAD~3``) side by side.

    python benchmarks/cli_startup.py [--repeats 5] [--compare DIR] [--out FILE]

Writes JSON to ``benchmarks/results/cli_startup.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _median_seconds(argv: list[str], *, root: Path, repeats: int) -> float | None:
    """Median wall time of ``argv`` run from ``root``; None when it fails (no such command)."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=root, env=env, capture_output=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            return None
    return statistics.median(times)


def _commit(root: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True)
    return done.stdout.decode().strip() or "unknown"


def _helps(root: Path, paths: list[tuple[str, ...]], repeats: int) -> dict[str, float | None]:
    cli = [sys.executable, "-m", "simulations.cli"]
    return {
        " ".join(("fedrec", *path, "--help")): _median_seconds(
            [*cli, *path, "--help"], root=root, repeats=repeats
        )
        for path in paths
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (median)")
    parser.add_argument("--compare", type=Path, help="another checkout, timed side by side")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "cli_startup.json"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from simulations.cli import build_parser, command_paths

    paths: list[tuple[str, ...]] = [(), *command_paths(build_parser())]
    python = [sys.executable, "-c"]
    baselines = {
        "python -c pass": _median_seconds([*python, "pass"], root=REPO, repeats=args.repeats),
        "python -c 'import torch'": _median_seconds(
            [*python, "import torch"], root=REPO, repeats=args.repeats
        ),
    }
    now = _helps(REPO, paths, args.repeats)
    before = _helps(args.compare.resolve(), paths, args.repeats) if args.compare else None
    timed = [t for t in now.values() if t is not None]
    report = {
        "benchmark": "cli_startup",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "commit": _commit(REPO),
        "repeats": args.repeats,
        "statistic": "median wall seconds of a fresh interpreter, output discarded",
        "baselines": baselines,
        "helps": {
            name: {"seconds": seconds, **({"compare_seconds": before[name]} if before else {})}
            for name, seconds in now.items()
        },
        "summary": {
            "commands": len(now),
            "max_seconds": max(timed),
            "median_seconds": statistics.median(timed),
            **(
                {
                    "compare_checkout": str(args.compare),
                    "compare_commit": _commit(args.compare),
                    "compare_median_seconds": statistics.median(
                        t for t in before.values() if t is not None
                    ),
                }
                if before
                else {}
            ),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"baselines": baselines, "summary": report["summary"]}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
