"""The coordinator's checkpoint: everything needed to resume a run after the last completed round.

One file, ``RUN/checkpoint.npz``, replaced atomically after every round: the
global shared parameters, the strategy's own state (FedAdam's moments), the
item prior, which merchants are out of budget, the per-round history, the
run's settings and, under client-level DP, the coordinator's privacy account.
A restarted coordinator given ``resume=true`` continues with the next round;
a resume under different settings is refused.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.config import RunConfig, to_run_config
from common.constants import RUN_SIGNATURE_SETTING
from common.errors import ConfigError
from common.fileio import atomic_write_bytes
from common.models.prior import ItemPrior

CHECKPOINT_FILE = "checkpoint.npz"
CHECKPOINT_VERSION = 1
_META = "meta.json"
# The strategy's state a checkpoint keeps: FedOpt's moments (dicts of arrays) and FedAvgM's
# velocity (a list of arrays, one per shared parameter, kept under "0000", "0001", ...).
STRATEGY_STATE = ("m_t", "v_t", "momentum_vector")
_LIST_STATE = ("momentum_vector",)


@dataclass
class Checkpoint:
    run_name: str
    completed_round: int
    config: dict[str, Any]
    arrays: dict[str, npt.NDArray[Any]]
    strategy: dict[str, dict[str, npt.NDArray[Any]]] = field(default_factory=dict)
    prior: ItemPrior | None = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)
    exhausted: list[str] = field(default_factory=list)  # merchants out of budget (by name)
    stopped_early: str = ""
    # Client-level DP: the plan and Flower's accountant state (server.client_privacy.ClientDP).
    client_privacy: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    arrays: dict[str, npt.NDArray[Any]] = {f"model/{n}": a for n, a in checkpoint.arrays.items()}
    for part, values in checkpoint.strategy.items():
        arrays.update({f"{part}/{n}": a for n, a in values.items()})
    if checkpoint.prior is not None:
        arrays["prior/counts"] = checkpoint.prior.counts
        arrays["prior/trained"] = checkpoint.prior.trained
    meta = {
        "version": CHECKPOINT_VERSION,
        "run_name": checkpoint.run_name,
        "completed_round": checkpoint.completed_round,
        "config": checkpoint.config,
        "rounds": checkpoint.rounds,
        "privacy": checkpoint.privacy,
        "exhausted": checkpoint.exhausted,
        "stopped_early": checkpoint.stopped_early,
        "client_privacy": checkpoint.client_privacy,
        "strategy_parts": sorted(checkpoint.strategy),
    }
    arrays[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> Checkpoint | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            data = {name: stored[name] for name in stored.files}
        meta = json.loads(bytes(data.pop(_META)).decode("utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"{path}: the checkpoint is unreadable ({exc}); resume is impossible. Start a new "
            "run (the merchants' privacy accounts keep what was already spent)."
        ) from exc
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"{path}: checkpoint version {meta.get('version')!r} is not supported.")

    def part(prefix: str) -> dict[str, npt.NDArray[Any]]:
        return {k.split("/", 1)[1]: v for k, v in data.items() if k.startswith(prefix + "/")}

    prior = None
    if "prior/counts" in data:
        prior = ItemPrior(counts=data["prior/counts"], trained=data["prior/trained"])
    return Checkpoint(
        run_name=str(meta["run_name"]),
        completed_round=int(meta["completed_round"]),
        config=dict(meta["config"]),
        arrays=part("model"),
        strategy={p: part(p) for p in meta.get("strategy_parts", [])},
        prior=prior,
        rounds=list(meta["rounds"]),
        privacy=dict(meta["privacy"]),
        exhausted=list(meta["exhausted"]),
        stopped_early=str(meta["stopped_early"]),
        client_privacy=dict(meta.get("client_privacy") or {}),
    )


def strategy_state(strategy: object) -> dict[str, dict[str, npt.NDArray[Any]]]:
    """The strategy's mutable state worth keeping (FedAdam's moments, FedAvgM's velocity)."""
    out = {}
    for name in STRATEGY_STATE:
        value = getattr(strategy, name, None)
        if isinstance(value, list) and value:
            value = {f"{i:04d}": v for i, v in enumerate(value)}
        if isinstance(value, dict) and value:
            out[name] = {k: np.asarray(v) for k, v in value.items()}
    return out


def restore_strategy_state(strategy: object, state: dict[str, dict[str, Any]]) -> None:
    for name, value in state.items():
        if not hasattr(strategy, name):
            raise ConfigError(
                f"The checkpoint holds strategy state {name!r} that {type(strategy).__name__} "
                "does not have: resume with the strategy the run started with."
            )
        if name in _LIST_STATE:
            setattr(strategy, name, [np.asarray(value[k]) for k in sorted(value)])
        else:
            setattr(strategy, name, dict(value))


def check_resumable(checkpoint: Checkpoint, config: dict[str, Any], *, path: Path) -> None:
    """Refuse to resume under settings that differ from the checkpoint's.

    ``resume`` differs by design, and so does ``run-signature``: every submission,
    a resume included, is signed anew (its time differs); the settings it signs
    are the ones compared here.
    """
    ignore = {"resume", RUN_SIGNATURE_SETTING}
    # A setting added after the checkpoint was written counts as its default there.
    defaults = to_run_config(RunConfig())
    saved = {**defaults, **checkpoint.config}
    wanted = {**defaults, **config}
    changed = sorted(
        k for k in set(wanted) | set(saved) if k not in ignore and wanted.get(k) != saved.get(k)
    )
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in changed[:5])
        raise ConfigError(
            f"{path} was written by a run with other settings ({details}); a resumed run must "
            "use the same settings. Resubmit with the original ones, or start a new run."
        )
