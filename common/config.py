"""Run configuration: parsed once from kebab-case keys into frozen, validated dataclasses.

Kebab-case keys live only at the edges (``[tool.flwr.app.config]``, the CLI,
Flower ConfigRecords). Everything past :func:`parse_run_config` sees typed
fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.choices import LOSSES, SCHEDULES, SERVER_STATE_STRATEGIES, STRATEGIES
from common.compression import CompressionConfig
from common.config_keys import KEYS
from common.errors import ConfigError
from common.models.config import ModelConfig
from common.models.registry import MODELS
from common.privacy.config import PrivacyConfig


@dataclass(frozen=True)
class TrainConfig:
    """How a party trains locally in one round (sent by the coordinator each round)."""

    local_epochs: int = 2
    batch_users: int = 64
    learning_rate: float = 0.02
    num_negatives: int = 4
    max_interactions_per_user: int = 200
    weight_decay: float = 1e-4
    loss: str = "bce"
    proximal_mu: float = 0.0
    user_epochs: int = 3  # user-only passes: before each round's training, and on a new model
    positions_per_user: int = 32  # history models: target positions sampled per user and step
    # Sequence models with local-steps: each step's users come from one of this many groups of
    # similar history length (a group drawn in proportion to its size, so every user is still
    # drawn with probability batch / users per step); a batch then pads little. 0: uniformly.
    length_buckets: int = 0
    # Keep each party's Adam moments (on its own disk) from one round to the next, instead
    # of starting them afresh on every global model.
    keep_optimizer_state: bool = False
    # The local learning rate over rounds: constant, or cosine from the full rate in round 1
    # towards 0 after the last round (lr x (1 + cos(pi (round - 1) / rounds)) / 2).
    learning_rate_schedule: str = "constant"

    def at_round(self, server_round: int, num_rounds: int) -> TrainConfig:
        """These settings for round ``server_round`` (1-based) of ``num_rounds``."""
        if self.learning_rate_schedule == "constant":
            return self
        progress = min(max(server_round - 1, 0), num_rounds) / max(num_rounds, 1)
        scale = 0.5 * (1.0 + math.cos(math.pi * progress))
        return dataclasses.replace(self, learning_rate=self.learning_rate * scale)

    def __post_init__(self) -> None:
        problems = []
        if self.learning_rate_schedule not in SCHEDULES:
            problems.append(
                f"learning-rate-schedule must be one of {', '.join(SCHEDULES)}, "
                f"got {self.learning_rate_schedule!r}"
            )
        if self.positions_per_user < 1:
            problems.append(f"positions-per-user must be >= 1, got {self.positions_per_user}")
        if self.user_epochs < 0:
            problems.append(f"user-epochs must be >= 0, got {self.user_epochs}")
        if self.length_buckets < 0:
            problems.append(f"length-buckets must be >= 0 (0: off), got {self.length_buckets}")
        if self.local_epochs < 1:
            problems.append(f"local-epochs must be >= 1, got {self.local_epochs}")
        if self.batch_users < 1:
            problems.append(f"batch-users must be >= 1, got {self.batch_users}")
        if not self.learning_rate > 0:
            problems.append(f"learning-rate must be > 0, got {self.learning_rate}")
        if self.num_negatives < 1 and self.loss == "bce":
            problems.append(f"num-negatives must be >= 1 for bce, got {self.num_negatives}")
        if self.max_interactions_per_user < 1:
            problems.append(
                f"max-interactions-per-user must be >= 1, got {self.max_interactions_per_user}"
            )
        if self.weight_decay < 0:
            problems.append(f"weight-decay must be >= 0, got {self.weight_decay}")
        if self.proximal_mu < 0:
            problems.append(f"proximal-mu must be >= 0, got {self.proximal_mu}")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if problems:
            raise ConfigError("Invalid training settings: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class FederationConfig:
    """How the coordinator runs rounds."""

    num_rounds: int = 20
    strategy: str = "fedavg"
    server_learning_rate: float = 0.1  # FedAdam's eta
    # FedAvgM: global += fedavgm-learning-rate x velocity, velocity = momentum x velocity + mean
    # update (Flower's FedAvgM; 1.0 and 0.0 are plain FedAvg).
    fedavgm_learning_rate: float = 1.0
    fedavgm_momentum: float = 0.0
    min_nodes: int = 2
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0  # cross-device: evaluate on a sample of the clients
    round_timeout: float = 600.0
    node_wait_timeout: float = 120.0
    evaluate_every: int = 0  # 0: evaluate after the last round only
    top_k: int = 10
    seed: int = 0
    min_train_nodes: int = 1  # fewer merchants training (e.g. out of budget) ends the run
    # The largest merchant admitted (users under user-level DP, else training interactions):
    # caps a reported num-examples and the local steps behind the update-norm bound
    # (server/rounds/update_bounds.py).
    max_merchant_examples: int = 100_000_000
    max_update_norm: float = 0.0  # L2 bound on one merchant's update; 0 = derived

    def __post_init__(self) -> None:
        problems = []
        if self.min_train_nodes < 1:
            problems.append(f"min-train-nodes must be >= 1, got {self.min_train_nodes}")
        if self.num_rounds < 1:
            problems.append(f"num-server-rounds must be >= 1, got {self.num_rounds}")
        if self.strategy not in STRATEGIES:
            problems.append(
                f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )
        if not self.server_learning_rate > 0:
            problems.append(f"server-learning-rate must be > 0, got {self.server_learning_rate}")
        if not 0 < self.fedavgm_learning_rate < float("inf"):
            problems.append(
                f"fedavgm-learning-rate must be > 0 and finite, got {self.fedavgm_learning_rate}"
            )
        if not 0 <= self.fedavgm_momentum < 1:
            problems.append(f"fedavgm-momentum must be in [0, 1), got {self.fedavgm_momentum}")
        if self.min_nodes < 1:
            problems.append(f"min-nodes must be >= 1, got {self.min_nodes}")
        if not 0 < self.fraction_train <= 1:
            problems.append(f"fraction-train must be in (0, 1], got {self.fraction_train}")
        if not 0 < self.fraction_evaluate <= 1:
            problems.append(f"fraction-evaluate must be in (0, 1], got {self.fraction_evaluate}")
        if not self.round_timeout > 0 or not self.node_wait_timeout > 0:
            problems.append("round-timeout and node-wait-timeout must be > 0 seconds")
        if self.evaluate_every < 0:
            problems.append(f"evaluate-every must be >= 0, got {self.evaluate_every}")
        if self.top_k < 1:
            problems.append(f"top-k must be >= 1, got {self.top_k}")
        if self.max_merchant_examples < 1:
            problems.append(f"max-merchant-examples must be >= 1, got {self.max_merchant_examples}")
        if not 0 <= self.max_update_norm < float("inf"):
            problems.append(
                f"max-update-norm must be >= 0 and finite (0: derived), got {self.max_update_norm}"
            )
        if problems:
            raise ConfigError("Invalid federation settings: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class SecAggConfig:
    """Secure aggregation of training updates with Flower's SecAgg+ (``secagg=true``).

    ``clipping_range`` bounds every value a merchant sends (its delta from the
    global model); a value outside is an error at the merchant, never clipped.
    ``threshold`` is the fraction of a round's merchants needed to unmask: the
    round survives the loss of the others, and fewer than that many colluding
    merchants (with the coordinator) learn nothing about one merchant's update.
    """

    enabled: bool = False
    clipping_range: float = 8.0
    threshold: float = 0.6
    quantization_range: int = 1 << 22
    modulus_range: int = 1 << 32

    def __post_init__(self) -> None:
        problems = []
        if not self.clipping_range > 0:
            problems.append(f"secagg-clip-range must be > 0, got {self.clipping_range}")
        if not 0 < self.threshold <= 1:
            problems.append(f"secagg-threshold must be in (0, 1], got {self.threshold}")
        if problems:
            raise ConfigError("Invalid secure aggregation settings: " + "; ".join(problems) + ".")

    def num_shares(self, nodes: int) -> float:
        return 1.0  # every merchant in the round holds shares of every other's secrets

    def threshold_for(self, nodes: int) -> float:
        return self.threshold


@dataclass(frozen=True)
class RunConfig:
    """Everything one federated run needs, as typed fields."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secagg: SecAggConfig = field(default_factory=SecAggConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    merchants_dir: str = ""
    num_items: int = 0  # catalog size; 0 = read it from merchants_dir/../catalog.json
    output_dir: str = ""  # where the coordinator writes the global model and round history
    catalog: str = ""  # deployment: the federation catalog file the coordinator sends merchants
    resume: bool = False  # continue from output_dir's checkpoint instead of starting afresh
    # Warm start: a finished run's directory whose global model is this run's round-0 model,
    # item rows matched by key (server/rounds/previous_model.py). "" = the seeded initialisation.
    init_from: str = ""
    coordinator_key: str = ""  # the coordinator's ledger key (default: output_dir/coordinator.key)
    # Simulations: each merchant's ledger key in DIR/NAME/ (default: beside its ledger). A
    # simulation keeps every party's key outside its run directory (simulations/keys.py).
    merchant_keys_dir: str = ""
    run_signature: str = ""  # deployment: the operator's signature (common/run_signature.py)

    def __post_init__(self) -> None:
        if MODELS[self.model.kind].statistics:
            self._check_statistics_model()
            if self.init_from:
                raise ConfigError(
                    f"init-from={self.init_from} warm-starts a model trained over rounds; "
                    f"model={self.model.kind} is learnt afresh from one release of statistics, "
                    "so there is nothing to start from. Drop init-from, or choose --model mf."
                )
        if self.privacy.enabled and self.train.proximal_mu > 0:
            raise ConfigError(
                "proximal-mu > 0 (FedProx) is not supported with differential privacy: the "
                "proximal term is not part of the clipped, noised step. Set proximal-mu=0."
            )
        dp_sgd = self.privacy.merchant_dp or (
            self.privacy.unit == "client" and self.privacy.device_epsilon > 0
        )
        if dp_sgd and self.train.keep_optimizer_state:
            raise ConfigError(
                "keep-optimizer-state=true applies to non-private local training only: DP-SGD "
                "starts its optimizer afresh each round. Set keep-optimizer-state=false."
            )
        if self.privacy.unit == "client" and self.federation.strategy != "fedavg":
            raise ConfigError(
                f"privacy-unit=client needs strategy=fedavg (Flower's client-level DP wrapper "
                f"accounts only uniform FedAvg), got strategy={self.federation.strategy}."
            )
        if self.secagg.enabled and self.privacy.unit == "client":
            raise ConfigError(
                "secagg=true with privacy-unit=client is not supported: Flower's client-level DP "
                "clips each update at the coordinator, which SecAgg+ hides. Use user-level DP "
                "(privacy-unit=user: clipped and noised at each merchant) with secagg."
            )
        if self.secagg.enabled and self.federation.strategy in SERVER_STATE_STRATEGIES:
            raise ConfigError(
                "secagg=true supports strategy=fedavg or fedprox (the mean of the merchants' "
                f"deltas is applied directly); got strategy={self.federation.strategy}."
            )
        if self.secagg.enabled and self.compression.enabled:
            raise ConfigError(
                f"secagg=true cannot be combined with compression={self.compression.kind}: "
                "SecAgg+ sums masked, quantised field elements of the whole update. "
                "Set compression=none, or turn secagg off."
            )

    def _check_statistics_model(self) -> None:
        """A model learnt from one release of statistics (model=ease) needs its setting."""
        kind, privacy = self.model.kind, self.privacy
        if privacy.unit != "user" or privacy.count_share <= 0:
            raise ConfigError(
                f"model={kind} is learnt from the merchants' DP co-occurrence of the items "
                "their private item counts choose: it needs privacy-unit=user and "
                f"count-epsilon-share > 0 (got privacy-unit={privacy.unit}, "
                f"count-epsilon-share={privacy.count_share:g}). Use --epsilon, or another model."
            )
        if self.federation.num_rounds != 1:
            raise ConfigError(
                f"model={kind} releases its statistics once: set num-server-rounds=1 (got "
                f"{self.federation.num_rounds}); more rounds would only spend more epsilon."
            )


# Edge keys → (section, field): common/config_keys.py, one table used both ways.
_KEYS = KEYS
_SECTIONS = {
    "model": ModelConfig,
    "train": TrainConfig,
    "federation": FederationConfig,
    "privacy": PrivacyConfig,
    "secagg": SecAggConfig,
    "compression": CompressionConfig,
}
ROUNDS_KEY = "num-server-rounds"


def _coerce(key: str, raw: Any, target: Any) -> Any:
    """Convert an edge value to the dataclass field's type, or say what was expected."""
    try:
        if isinstance(target, tuple):
            if isinstance(raw, str):
                return tuple(int(x) for x in raw.replace(",", " ").split())
            return tuple(int(x) for x in raw)
        if isinstance(target, bool):
            if isinstance(raw, str):
                word = raw.strip().lower()
                if word not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return word in ("true", "1", "yes")
            return bool(raw)
        if isinstance(target, int):
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(raw)
        if isinstance(target, float):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        kind = type(target).__name__
        raise ConfigError(f"Setting {key!r} must be a {kind}, got {raw!r}.") from exc


def parse_run_config(raw: Mapping[str, Any], *, base: RunConfig | None = None) -> RunConfig:
    """Parse kebab-case settings (unknown keys are an error) on top of ``base``."""
    base = base or RunConfig()
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ConfigError(
            f"Unknown setting(s) {', '.join(unknown)}; known settings: {', '.join(sorted(_KEYS))}."
        )
    updates: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    top: dict[str, Any] = {}
    for key, value in raw.items():
        section, name = _KEYS[key]
        current = getattr(getattr(base, section) if section else base, name)
        coerced = _coerce(key, value, current)
        (updates[section] if section else top)[name] = coerced
    sections = {
        name: dataclasses.replace(getattr(base, name), **fields) for name, fields in updates.items()
    }
    return dataclasses.replace(base, **sections, **top)


def to_run_config(config: RunConfig) -> dict[str, Any]:
    """The kebab-case view of ``config`` (round-trips through :func:`parse_run_config`)."""
    out: dict[str, Any] = {}
    for key, (section, name) in _KEYS.items():
        value = getattr(getattr(config, section) if section else config, name)
        out[key] = " ".join(map(str, value)) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True)
class RoundPlan:
    """What the coordinator tells merchants each round: local training, privacy, rounds."""

    train: TrainConfig
    privacy: PrivacyConfig
    num_rounds: int


def round_plan_to_record(plan: RoundPlan) -> dict[str, Any]:
    """The plan as the kebab-case dict a ConfigRecord carries to merchants."""
    view = to_run_config(
        RunConfig(
            train=plan.train,
            privacy=plan.privacy,
            federation=FederationConfig(num_rounds=plan.num_rounds),
        )
    )
    return {k: v for k, v in view.items() if _KEYS[k][0] in ("train", "privacy") or k == ROUNDS_KEY}


def round_plan_from_record(record: Mapping[str, Any]) -> RoundPlan:
    keys = {
        k: v
        for k, v in record.items()
        if k in _KEYS and (_KEYS[k][0] in ("train", "privacy") or k == ROUNDS_KEY)
    }
    run = parse_run_config(keys)
    return RoundPlan(train=run.train, privacy=run.privacy, num_rounds=run.federation.num_rounds)
