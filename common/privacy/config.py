"""Privacy settings, parsed once into a frozen dataclass.

``unit`` names what one differential-privacy "example" is:

* ``user``: one user of a merchant with all of their interactions (the default
  when privacy is on; what the product promises);
* ``interaction``: one interaction (record-level DP). Weaker: a user with many
  interactions is protected only per interaction. Offered for comparison and
  for on-device training, and always labelled as such;
* ``off``: no differential privacy.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import ConfigError

UNITS = ("off", "user", "interaction")
ACCOUNTANTS = ("rdp", "prv")
UNIT_DESCRIPTIONS = {
    "off": "none (no differential privacy)",
    "user": "one user of a merchant (all of their interactions)",
    "interaction": "one interaction (record-level; does NOT bound a user's total privacy loss)",
}
SAMPLING = "Poisson sampling of examples at rate q, one event per step (empty steps included)"


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
    local_steps: int = 0  # DP steps per round; 0 = local-epochs / q

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
        if self.item_threshold < 0:
            problems.append(f"item-threshold must be >= 0, got {self.item_threshold}")
        if self.local_steps < 0:
            problems.append(f"local-steps must be >= 0, got {self.local_steps}")
        if problems:
            raise ConfigError("Invalid privacy settings: " + "; ".join(problems) + ".")

    @property
    def enabled(self) -> bool:
        return self.unit != "off"

    @property
    def budget(self) -> float:
        """The epsilon a merchant may spend in total (``epsilon_max`` or the target)."""
        return self.epsilon_max or self.target_epsilon
