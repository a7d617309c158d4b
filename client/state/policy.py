"""What a merchant agrees to train: its own ``policy.json``, parsed once, checked per run.

``STATE/policy.json`` is the merchant's, edited by the merchant and never
sent. Every key is optional; a missing file means the defaults::

    {
      "require-privacy": "user",      # "user": only user-level DP-SGD runs (default);
                                      # "dp": user- or client-level DP; "none": also non-private
      "max-epsilon-per-run": 8.0,     # the largest epsilon one run may plan (null: no limit)
      "epsilon-max": 10.0,            # lifetime budget this merchant ever spends (null: the run's)
      "require-secagg": false         # true: only runs whose sum is taken under SecAgg+
    }

A deployed merchant checks a run against its policy before anything of the
run executes (:mod:`client.deploy.run_guard`), after the operator's signature has
verified, so the settings checked are the ones the operator signed.
``epsilon-max`` is also the budget every release is checked against while
training (:meth:`client.merchant.Merchant.budget`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.config import RunConfig
from common.errors import ConfigError

REQUIRE_PRIVACY = ("user", "dp", "none")
_KEYS = ("require-privacy", "max-epsilon-per-run", "epsilon-max", "require-secagg")


@dataclass(frozen=True)
class MerchantPolicy:
    require_privacy: str = "user"
    max_epsilon_per_run: float | None = None
    epsilon_max: float | None = None  # lifetime budget
    require_secagg: bool = False

    def __post_init__(self) -> None:
        if self.require_privacy not in REQUIRE_PRIVACY:
            raise ConfigError(
                f"require-privacy must be one of {', '.join(REQUIRE_PRIVACY)}, got "
                f"{self.require_privacy!r}."
            )
        for key, value in (
            ("max-epsilon-per-run", self.max_epsilon_per_run),
            ("epsilon-max", self.epsilon_max),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{key} must be a number > 0 (or null), got {value}.")

    def to_json(self) -> dict[str, Any]:
        return {
            "require-privacy": self.require_privacy,
            "max-epsilon-per-run": self.max_epsilon_per_run,
            "epsilon-max": self.epsilon_max,
            "require-secagg": self.require_secagg,
        }

    def describe(self) -> str:
        privacy = {
            "user": "user-level DP required",
            "dp": "user- or client-level DP required",
            "none": "non-private runs accepted",
        }[self.require_privacy]
        parts = [privacy]
        if self.max_epsilon_per_run is not None:
            parts.append(f"at most epsilon {self.max_epsilon_per_run:g} per run")
        if self.epsilon_max is not None:
            parts.append(f"lifetime budget epsilon {self.epsilon_max:g}")
        parts.append("SecAgg+ required" if self.require_secagg else "SecAgg+ optional")
        return "; ".join(parts)

    def violations(self, run: RunConfig, *, spent: float = 0.0) -> list[str]:
        """Every way ``run`` breaks this policy (empty: acceptable). ``spent``: epsilon so far."""
        privacy = run.privacy
        problems = []
        if self.require_privacy == "user" and privacy.unit != "user":
            problems.append(
                f"this merchant's policy requires user-level DP; the run has privacy-unit="
                f"{privacy.unit}"
            )
        elif self.require_privacy == "dp" and privacy.unit not in ("user", "client"):
            problems.append(
                f"this merchant's policy requires user- or client-level DP; the run has "
                f"privacy-unit={privacy.unit}"
            )
        limit = self.max_epsilon_per_run
        if privacy.enabled and limit is not None and privacy.budget > limit:
            problems.append(
                f"the run plans epsilon {privacy.budget:g}, above this merchant's limit of "
                f"{limit:g} per run (policy max-epsilon-per-run)"
            )
        if privacy.enabled and self.epsilon_max is not None and spent >= self.epsilon_max:
            problems.append(
                f"this merchant has spent epsilon {spent:.3f} of its lifetime budget "
                f"{self.epsilon_max:g} (policy epsilon-max)"
            )
        if self.require_secagg and not run.secagg.enabled:
            problems.append("this merchant's policy requires SecAgg+; the run has secagg=false")
        return problems


def load_policy(path: Path) -> MerchantPolicy:
    """The policy in ``path`` (defaults when the file is absent); a bad file says what and how."""
    if not path.is_file():
        return MerchantPolicy()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc}).") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f'{path}: expected a JSON object like {{"require-privacy": "user"}}.')
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(_KEYS)}."
        )
    try:
        return MerchantPolicy(
            require_privacy=str(raw.get("require-privacy", "user")),
            max_epsilon_per_run=_number(raw.get("max-epsilon-per-run")),
            epsilon_max=_number(raw.get("epsilon-max")),
            require_secagg=_flag(raw.get("require-secagg", False)),
        )
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def ensure_policy(path: Path) -> MerchantPolicy:
    """The policy in ``path``; the defaults are written there first when there is none."""
    from common.fileio import atomic_write_text

    policy = load_policy(path)
    if not path.is_file():
        atomic_write_text(path, json.dumps(policy.to_json(), indent=2) + "\n")
    return policy


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected a number or null, got {value!r}")
    return float(value)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"require-secagg must be true or false, got {value!r}")
    return value
