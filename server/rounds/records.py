"""What a round and a run produce, and what a run adds to the plain loop."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.compression import CompressionConfig
from common.config import SecAggConfig
from common.data.catalog import ItemCatalog
from common.errors import ExitCode, FedrecError
from common.models.prior import ItemPrior
from server.rounds.replies import merchant_of
from server.rounds.updates import payload_bytes

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, Context, Message

    from server.rounds.checkpoint import Checkpoint


class FederationError(FedrecError):
    """The federation cannot go on (no merchants, every merchant failed, ...)."""

    exit_code = ExitCode.FEDERATION_FAILED


@dataclass
class RoundRecord:
    """What happened in one round, per merchant."""

    round: int
    seconds: float = 0.0
    train: dict[str, dict[str, float]] = field(default_factory=dict)
    evaluate: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # merchant -> reason (budget)
    aggregated: bool = True
    # merchant -> payload bytes: train-down, train-up, evaluate-down, evaluate-up
    bytes: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> RoundRecord:
        return cls(**payload)

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "seconds": self.seconds,
            "train": self.train,
            "evaluate": self.evaluate,
            "failures": self.failures,
            "refused": self.refused,
            "aggregated": self.aggregated,
            "bytes": self.bytes,
        }

    def count_bytes(self, phase: str, sent: Iterable[Message], replies: Iterable[Message]) -> None:
        """Record each replying merchant's payload bytes down (instruction) and up (reply)."""
        down = {m.metadata.dst_node_id: payload_bytes(m) for m in sent}
        for reply in replies:
            entry = self.bytes.setdefault(merchant_of(reply), {})
            entry[f"{phase}-down"] = down.get(reply.metadata.src_node_id, 0)
            entry[f"{phase}-up"] = payload_bytes(reply)


@dataclass
class FederationResult:
    arrays: ArrayRecord
    rounds: list[RoundRecord]
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)  # latest report per merchant
    prior: ItemPrior | None = None
    stopped_early: str = ""  # why the run ended before num_rounds, if it did
    client_privacy: dict[str, Any] = field(default_factory=dict)  # cross-device: coordinator's
    resumed_from: int = 0  # the last completed round a resumed run started after


@dataclass(frozen=True)
class RunOptions:
    """What a run adds to the plain round loop (deployments mostly; all optional)."""

    run_name: str = ""  # the run's name in every instruction and ledger entry
    catalog: ItemCatalog | None = None  # deployment: sent to merchants before anything else
    secagg: SecAggConfig | None = None  # SecAgg+ for the train phase
    compression: CompressionConfig | None = None  # how merchants encode their updates
    context: Context | None = None  # the ServerApp context (SecAgg+ keeps state in it)
    checkpoint: Path | None = None  # written after every round
    resume: Checkpoint | None = None  # continue after this checkpoint's last round
    settings: dict[str, Any] = field(default_factory=dict)  # the run config, for checkpoints
    poll: float = 0.1  # seconds between pulls of replies
    # a statistics model (model=ease): its N items are the prior's top N, set in the global
    # model before round 1; 0 for a model trained by DP-SGD
    statistics_items: int = 0
    statistics_noise: float = 0.0  # sigma of each merchant's statistics release (update bound)
