"""Privacy settings, parsed once into a frozen dataclass.

``unit`` names what one differential-privacy "example" is:

* ``user``: one user of a merchant with all of their interactions (the default
  when privacy is on; what the product promises);
* ``interaction``: one interaction (record-level DP). Weaker: a user with many
  interactions is protected only per interaction. Offered for comparison and
  for on-device training, and always labelled as such;
* ``client``: cross-device mode, one client per user: each client's whole model
  update is clipped and noised at the coordinator (client-level DP, Flower's DP
  wrapper and accountant). Optional on-device DP-SGD (``device-epsilon``)
  bounds only per-interaction privacy and is reported as such;
* ``off``: no differential privacy.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import ConfigError

UNITS = ("off", "user", "interaction", "client")
ACCOUNTANTS = ("rdp", "prv")
UNIT_DESCRIPTIONS = {
    "off": "none (no differential privacy)",
    "user": "one user of a merchant (all of their interactions)",
    "interaction": "one interaction (record-level; does NOT bound a user's total privacy loss)",
    "client": "one client (a device holding one user's interactions)",
}
# Training settings that work for user-level DP-SGD, applied by `fedrec simulate --epsilon`
# unless set explicitly (measured in benchmarks/private_quality.py):
# - large expected batches (q n = 512 users): the noise is fixed per step, the signal grows
#   with the batch;
# - few rounds of one local pass (10 x 1/q steps): each step costs budget, so fewer steps
#   allow less noise per step;
# - a higher learning rate (0.1) to go with the large batches;
# - C = 0.1: about the per-user gradient norm at the start, so clipping removes little
#   signal while the noise, sigma C, stays small;
# - 3 user-only passes per round (user-epochs): free under joint DP, they fit each user to
#   the incoming global items, so that the private item steps carry signal;
# - embedding dim 16: noise is per coordinate, so fewer coordinates per item row means a
#   better signal-to-noise ratio (NDCG@10 0.065 -> 0.083 at epsilon 3 in the benchmark setup);
# - half of epsilon on the item counts (count-epsilon-share 0.5, not 0.1): at real merchant
#   sizes DP-SGD rarely beats popularity, and each merchant serves whichever wins
#   (common.source_choice), so the popularity it falls back on must be nearly as good as
#   DP popularity at the whole epsilon (real_data.py validation splits, MovieLens 100K and
#   Amazon Beauty, 1-3 merchants: see README, "What a merchant serves").
PRIVATE_DEFAULTS: dict[str, float | int] = {
    "embedding-dim": 16,
    "batch-users": 512,
    "num-server-rounds": 10,
    "local-epochs": 1,
    "learning-rate": 0.1,
    "max-grad-norm": 0.1,
    "user-epochs": 3,
    "count-epsilon-share": 0.5,
}
# What DP-SGD really samples per unit (client.training.private.private_population): the
# users with training data, or the training interactions, each independently with
# probability q at every step (Opacus's Poisson sampler).
SAMPLING_BY_UNIT = {
    "user": (
        "Poisson sampling of users: every user with training data joins each step "
        "independently with probability q; one accounting event per step (empty steps included)"
    ),
    "interaction": (
        "Poisson sampling of interactions: every training interaction joins each step "
        "independently with probability q; one accounting event per step (empty steps included)"
    ),
}
# The unit-blind wording that ledgers written before SAMPLING_BY_UNIT recorded.
LEGACY_SAMPLING = (
    "Poisson sampling of examples at rate q, one event per step (empty steps included)"
)


def sampling_description(unit: str, recorded: str | None = None) -> str:
    """What DP-SGD sampled for ``unit``, exactly; ``recorded`` (a ledger's own words) if it is
    not the legacy unit-blind text, else the unit's wording."""
    if recorded and recorded != LEGACY_SAMPLING:
        return recorded
    return SAMPLING_BY_UNIT.get(unit, recorded or f"unknown for unit {unit!r}")


@dataclass(frozen=True)
class PrivacyConfig:
    """DP-SGD settings shared by every merchant; each merchant calibrates its own sigma."""

    unit: str = "off"
    target_epsilon: float = 0.0  # whole training, item counts included
    delta: float = 1e-6
    epsilon_max: float = 0.0  # budget; 0 = target_epsilon (a merchant's policy may lower it)
    max_grad_norm: float = 1.0  # C: per-example clipping bound on shared-parameter gradients
    accountant: str = "rdp"
    count_share: float = 0.1  # share of epsilon spent on DP item counts; 0 = no item prior
    item_threshold: float = 3.0  # train items whose noisy count >= this x the count noise std
    # a merchant whose units x target-epsilon is below this spends all of epsilon on its item
    # counts and trains nothing (its own data gives DP training no signal); 0 = never
    count_only_below: float = 0.0
    # the federation trains only if at least this many items clear item-threshold in the
    # first count release; else every merchant spends the rest of epsilon on a second count
    # release (a top-up: together as good as counts at the whole epsilon) and serves DP
    # popularity; 0 = always train
    train_min_items: int = 0
    local_steps: int = 0  # local steps per round (DP-SGD or plain); 0 = from local-epochs
    client_clip: float = 1.0  # client unit: L2 bound on each client's model update
    device_epsilon: float = 0.0  # client unit: on-device record-level DP-SGD epsilon; 0 = none
    # unit user: each merchant trains without its users' last training items and serves the
    # DP model, DP popularity or a blend, whichever wins on them (common.source_choice)
    source_choice: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.unit not in UNITS:
            problems.append(f"privacy-unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.enabled and not self.target_epsilon > 0:
            problems.append(
                f"target-epsilon must be > 0 when privacy-unit is {self.unit!r}, "
                f"got {self.target_epsilon} (use --epsilon, or privacy-unit=off for no DP)"
            )
        if not 0 < self.delta < 1:
            problems.append(f"target-delta must be in (0, 1), got {self.delta}")
        if self.epsilon_max < 0:
            problems.append(f"epsilon-max must be >= 0, got {self.epsilon_max}")
        if not self.max_grad_norm > 0:
            problems.append(f"max-grad-norm must be > 0, got {self.max_grad_norm}")
        if self.accountant not in ACCOUNTANTS:
            problems.append(
                f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {self.accountant!r}"
            )
        if not 0 <= self.count_share < 1:
            problems.append(f"count-epsilon-share must be in [0, 1), got {self.count_share}")
        if self.count_only_below < 0:
            problems.append(f"count-only-below must be >= 0, got {self.count_only_below}")
        if self.train_min_items < 0:
            problems.append(f"train-min-items must be >= 0, got {self.train_min_items}")
        if self.train_min_items and self.enabled and not self.count_share > 0:
            problems.append(
                f"train-min-items={self.train_min_items} decides from the item counts, but "
                "count-epsilon-share is 0 (no count release); set a share, or train-min-items=0"
            )
        if self.item_threshold < 0:
            problems.append(f"item-threshold must be >= 0, got {self.item_threshold}")
        if not self.client_clip > 0:
            problems.append(f"client-clip must be > 0, got {self.client_clip}")
        if self.device_epsilon < 0:
            problems.append(f"device-epsilon must be >= 0, got {self.device_epsilon}")
        if self.local_steps < 0:
            problems.append(f"local-steps must be >= 0, got {self.local_steps}")
        if problems:
            raise ConfigError("Invalid privacy settings: " + "; ".join(problems) + ".")

    @property
    def enabled(self) -> bool:
        return self.unit != "off"

    @property
    def merchant_dp(self) -> bool:
        """Merchants run DP-SGD with their own accountant (user or interaction unit)."""
        return self.unit in ("user", "interaction")

    @property
    def chooses_source(self) -> bool:
        """Merchants choose what they serve (common.source_choice): user-level DP-SGD with a
        private item-count release to compare against, and ``source-choice`` on."""
        return self.unit == "user" and self.source_choice and self.count_share > 0

    @property
    def budget(self) -> float:
        """The epsilon a merchant may spend in total (``epsilon_max`` or the target)."""
        return self.epsilon_max or self.target_epsilon
