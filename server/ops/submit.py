"""``fedrec run``: submit a federated job to the coordinator and follow it to the end.

The job is Flower's: a FAB built by ``flwr run`` from a small app directory
(``DIR/app/fedrec-app``: a ``pyproject.toml`` naming fedrec's installed
ServerApp and ClientApp, with every run setting and its default), plus a run
config file with this run's settings. Results land in ``DIR/runs/NAME`` on the
coordinator: ``global_model.pt``, ``federation.json``, the federation ledger,
``checkpoint.npz`` and ``progress.json``, which this command follows.

``--resume NAME`` resubmits an interrupted run with its original settings
(read from its checkpoint); the ServerApp continues after the last completed
round.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import RunConfig, parse_run_config, to_run_config
from common.constants import FEDERATION_FILE
from common.errors import ConfigError, ExitCode, FedrecError, RunDirError
from common.fileio import atomic_write_text
from common.naming import check_name
from server.ops.coordinator import CoordinatorDir
from server.ops.flwr_cli import ControlError, FlowerCli
from server.ops.superlink import control, coordinator_running
from server.rounds.checkpoint import CHECKPOINT_FILE, load_checkpoint
from server.rounds.previous_model import check_previous
from server.rounds.progress import PROGRESS_FILE, read_progress

APP_NAME = "fedrec-app"
RUNS_FILE = "flower-runs.json"  # Flower run ids this run directory was served by


class RunFailed(FedrecError):
    """The submitted run failed or was stopped (as the SuperLink reports it)."""

    exit_code = ExitCode.FEDERATION_FAILED


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def _toml_table(values: Mapping[str, Any]) -> str:
    return "".join(f"{key} = {_toml_value(value)}\n" for key, value in values.items())


def write_app(directory: CoordinatorDir) -> Path:
    """The app directory ``flwr run`` builds a FAB from (fedrec itself is installed)."""
    app = directory.root / "app" / APP_NAME
    app.mkdir(parents=True, exist_ok=True)
    from importlib.metadata import version

    atomic_write_text(
        app / "pyproject.toml",
        "# Written by `fedrec run`: the Flower app is fedrec's installed ServerApp/ClientApp.\n"
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{APP_NAME}"\nversion = "{version("fedrec")}"\n'
        'description = "fedrec federated recommender"\nlicense = "Apache-2.0"\n'
        "dependencies = []\n\n"
        '[tool.flwr.app]\npublisher = "fedrec"\n\n'
        "[tool.flwr.app.components]\n"
        'serverapp = "server.server_app:app"\nclientapp = "client.client_app:app"\n\n'
        "[tool.flwr.app.config]\n" + _toml_table(to_run_config(RunConfig())),
    )
    return app


@dataclass(frozen=True)
class Submission:
    name: str
    settings: dict[str, Any]  # kebab-case run settings (the user's; defaults fill the rest)
    resume: bool = False
    catalog: Path | None = None


def resolve_settings(directory: CoordinatorDir, submission: Submission) -> dict[str, Any]:
    """The full run config for this submission; a resume takes the checkpoint's settings."""
    run_dir = directory.runs / submission.name
    if submission.resume:
        checkpoint = load_checkpoint(run_dir / CHECKPOINT_FILE)
        if checkpoint is None:
            raise RunDirError(
                f"Nothing to resume: {run_dir} has no {CHECKPOINT_FILE} (no round completed). "
                f"Submit it again without --resume."
            )
        if submission.settings:
            raise ConfigError(
                "--resume continues a run with its original settings; drop the other settings "
                f"({', '.join(sorted(submission.settings))})."
            )
        return {**checkpoint.config, "resume": True}
    if run_dir.exists():
        raise RunDirError(
            f"{run_dir} already exists; choose another --name, or continue it with "
            f"--resume {submission.name}."
        )
    catalog = submission.catalog or directory.catalog
    if not catalog.is_file():
        raise ConfigError(
            f"No federation catalog: {catalog} does not exist. Pass --catalog FILE (one item key "
            "per line, or a catalog.json), or create the coordinator with --catalog."
        )
    raw = {
        **submission.settings,
        "catalog": str(catalog.resolve()),
        "output-dir": str(run_dir.resolve()),
        "coordinator-key": str(directory.ledger_key.resolve()),
        "merchants-dir": "",
        "resume": False,
    }
    settings = to_run_config(parse_run_config(raw))  # validated here, before anything is sent
    if settings["init-from"]:
        check_previous(Path(settings["init-from"]), settings)
    return settings


def submit(
    directory: CoordinatorDir, submission: Submission, *, say: Callable[[str], None]
) -> tuple[int, Path]:
    check_name(submission.name, what="Run name")
    directory.settings()  # not a coordinator directory: say so, not that it is not running
    if not coordinator_running(directory):
        raise ConfigError(
            f"The coordinator for {directory.root} is not running; start it with "
            f"`fedrec coordinator start {directory.root}`."
        )
    settings = resolve_settings(directory, submission)
    run_dir = directory.runs / submission.name
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / ("resume.toml" if submission.resume else "run-config.toml")
    app = write_app(directory)
    settings = sign_settings(directory, app, settings, run_name=submission.name)
    atomic_write_text(config_file, _toml_table(settings))
    run_id = control(directory).submit(app, config_file=config_file)
    runs = json.loads((run_dir / RUNS_FILE).read_text()) if (run_dir / RUNS_FILE).is_file() else []
    runs.append({"flower-run-id": run_id, "resume": submission.resume, "submitted": _now()})
    atomic_write_text(run_dir / RUNS_FILE, json.dumps(runs, indent=2))
    say(
        f"{'resumed' if submission.resume else 'submitted'} run {submission.name} "
        f"(Flower run {run_id}); results in {run_dir}"
    )
    return run_id, run_dir


def sign_settings(
    directory: CoordinatorDir, app: Path, settings: Mapping[str, Any], *, run_name: str
) -> dict[str, Any]:
    """``settings`` with the operator's signature over them and the FAB ``flwr run`` will build.

    Flower builds FABs deterministically (fixed zip timestamps), so the hash of
    the bundle built here is the hash merchants receive.
    """
    import hashlib

    from flwr.cli.build import build_fab_from_disk

    from common.constants import RUN_SIGNATURE_SETTING
    from common.run_signature import sign_run
    from server.ops.operator_key import operator_signer

    fab_sha256 = hashlib.sha256(build_fab_from_disk(app)).hexdigest()
    unsigned = {k: v for k, v in settings.items() if k != RUN_SIGNATURE_SETTING}
    signature = sign_run(
        operator_signer(directory), run_name=run_name, fab_sha256=fab_sha256, run_config=unsigned
    )
    return {**unsigned, RUN_SIGNATURE_SETTING: signature}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def follow(
    cli: FlowerCli,
    run_id: int,
    run_dir: Path,
    *,
    say: Callable[[str], None],
    poll: float = 1.0,
) -> dict[str, Any]:
    """Print each completed round until the run finishes; its final progress, or RunFailed."""
    shown = 0
    next_status = 0.0
    while True:
        progress = read_progress(run_dir / PROGRESS_FILE) or {}
        done = int(progress.get("rounds", 0))
        if done > shown and progress.get("last"):
            last = progress["last"]
            evaluation = last.get("evaluation") or {}
            metric = next((k for k in evaluation if k.startswith("ndcg@")), "")
            say(
                f"round {done}/{progress.get('total')}: {last.get('seconds', 0):.1f} s, "
                f"{len(last.get('trained', []))} merchant(s) trained"
                + (f", {len(last['refused'])} refused" if last.get("refused") else "")
                + (f", {len(last['failures'])} failure(s)" if last.get("failures") else "")
                + (f", mean {metric} {evaluation[metric]:.4f}" if metric else "")
            )
            shown = done
        if progress.get("status") == "finished":
            return progress
        if time.monotonic() >= next_status:
            next_status = time.monotonic() + 5 * poll
            try:
                status, details = cli.status(run_id)
            except ControlError:
                status, details = "unknown", ""
            if status.startswith("finished"):
                final = read_progress(run_dir / PROGRESS_FILE) or {}
                if final.get("status") == "finished":
                    continue  # print the last round first
                resumable = (run_dir / CHECKPOINT_FILE).is_file()
                raise RunFailed(
                    f"Run {run_dir.name} ended as {status}"
                    + (f": {details}" if details else "")
                    + (
                        f". Completed rounds are in {run_dir}; continue with "
                        f"`fedrec run DIR --resume {run_dir.name}` once the cause is fixed."
                        if resumable
                        else f". No round completed; details in {run_dir}."
                    )
                )
        time.sleep(poll)


def show_privacy(run_dir: Path) -> None:
    """The per-merchant privacy table ``fedrec simulate`` ends with, from the run's history."""
    from rich.console import Console

    from simulations.report import privacy_results, render_privacy

    history = json.loads((run_dir / FEDERATION_FILE).read_text(encoding="utf-8"))
    run = parse_run_config(history["config"])
    results = privacy_results(history, privacy=run.privacy, model=run.model.kind)
    render_privacy({"privacy": results}, console=Console())


def unfinished_runs(directory: CoordinatorDir) -> list[str]:
    """Runs with a checkpoint whose progress is not finished (what `start --resume` resubmits)."""
    names = []
    for run in sorted(p for p in directory.runs.glob("*") if p.is_dir()):
        progress = read_progress(run / PROGRESS_FILE) or {}
        if (run / CHECKPOINT_FILE).is_file() and progress.get("status") != "finished":
            names.append(run.name)
    return names
