"""A merchant's durable local state: its data, its users' parameters, on its own disk.

The directory holds the merchant's encoded data (``data.npz``, ``users.json``)
and, once trained, ``local_state.pt`` with the user-owned parameters. Writes
are atomic (temporary file, fsync, rename): a crash never leaves half a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from common.constants import (
    MERCHANT_DATA_FILE,
    MERCHANT_INFO_FILE,
    MERCHANT_LEDGER_KEY_FILE,
    MERCHANT_NOISE_KEY_FILE,
    MERCHANT_OPTIMIZER_FILE,
    MERCHANT_POLICY_FILE,
    MERCHANT_PRIVACY_FILE,
    MERCHANT_SOURCE_CHOICE_FILE,
    MERCHANT_STATE_FILE,
    MERCHANT_USERS_FILE,
)
from common.data.dataset import UserItemData
from common.errors import DataError, DataProblem
from common.fileio import atomic_write_bytes
from common.source_choice import SourceChoice


@dataclass(frozen=True)
class MerchantStore:
    """Paths of one merchant's state directory."""

    directory: Path
    # Where the ledger's signing key lives: the state directory itself (a deployed merchant's
    # own disk), or a directory outside a simulation's published run directory.
    key_dir: Path | None = None

    @property
    def ledger_key_path(self) -> Path:
        return (self.key_dir or self.directory) / MERCHANT_LEDGER_KEY_FILE

    @property
    def name(self) -> str:
        """The merchant's public name: from ``merchant.json`` (deployments) or the directory."""
        info = self.directory / MERCHANT_INFO_FILE
        if info.is_file():
            try:
                name = json.loads(info.read_text(encoding="utf-8")).get("name")
            except (OSError, json.JSONDecodeError, AttributeError):
                name = None
            if isinstance(name, str) and name:
                return name
        return self.directory.name

    def load_data(self) -> UserItemData:
        if not (self.directory / MERCHANT_DATA_FILE).is_file():
            raise DataError(
                str(self.directory),
                [DataProblem(None, f"no {MERCHANT_DATA_FILE} in the merchant state directory")],
                hint="prepare merchant directories with `fedrec simulate` or point at one",
            )
        return UserItemData.load(
            self.directory, data_file=MERCHANT_DATA_FILE, users_file=MERCHANT_USERS_FILE
        )

    @property
    def privacy_account_path(self) -> Path:
        return self.directory / MERCHANT_PRIVACY_FILE

    @property
    def policy_path(self) -> Path:
        return self.directory / MERCHANT_POLICY_FILE

    def policy_epsilon_max(self) -> float | None:
        """The merchant's own lifetime budget (``epsilon-max`` in ``policy.json``), if any."""
        from client.state.policy import load_policy

        return load_policy(self.policy_path).epsilon_max

    def write_policy(self, *, epsilon_max: float) -> None:
        """Set ``epsilon-max`` in ``policy.json``, keeping the merchant's other policy keys."""
        import dataclasses

        from client.state.policy import load_policy

        policy = dataclasses.replace(load_policy(self.policy_path), epsilon_max=epsilon_max)
        atomic_write_bytes(self.policy_path, json.dumps(policy.to_json(), indent=2).encode())

    def noise_seed(self, *ids: int | str) -> int:
        """A seed for DP noise from this merchant's secret key (made on first use, never sent).

        The run seed is known to the coordinator, so DP noise must not derive
        from it alone. Simulations write the key from the run seed so research
        runs repeat exactly; a real merchant's key comes from ``os.urandom``.
        """
        import hashlib
        import os

        path = self.directory / MERCHANT_NOISE_KEY_FILE
        if not path.is_file():
            atomic_write_bytes(path, os.urandom(32))
        digest = hashlib.sha256(path.read_bytes() + repr(ids).encode()).digest()
        return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF

    def write_noise_key(self, key: bytes) -> None:
        atomic_write_bytes(self.directory / MERCHANT_NOISE_KEY_FILE, key)

    def load_local(self) -> dict[str, torch.Tensor] | None:
        path = self.directory / MERCHANT_STATE_FILE
        if not path.is_file():
            return None
        state: dict[str, torch.Tensor] = torch.load(path, weights_only=True)
        return state

    def save_local(self, tensors: dict[str, torch.Tensor]) -> None:
        self._save_torch(MERCHANT_STATE_FILE, {n: t.detach().clone() for n, t in tensors.items()})

    def load_optimizer(self, *, run: str) -> dict[str, object] | None:
        """Adam's state from ``run``'s last round (``keep-optimizer-state``), if any: the
        state of another run (or none) starts Adam afresh."""
        path = self.directory / MERCHANT_OPTIMIZER_FILE
        if not path.is_file():
            return None
        saved: dict[str, object] = torch.load(path, weights_only=True)
        state = saved.get("adam")
        return state if saved.get("run") == run and isinstance(state, dict) else None

    def save_optimizer(self, state: dict[str, object], *, run: str) -> None:
        self._save_torch(MERCHANT_OPTIMIZER_FILE, {"run": run, "adam": state})

    @property
    def source_choice_path(self) -> Path:
        return self.directory / MERCHANT_SOURCE_CHOICE_FILE

    def save_source_choice(self, choice: SourceChoice) -> None:
        """What this merchant serves and why (kept here, never sent), written atomically."""
        atomic_write_bytes(self.source_choice_path, choice.dumps().encode("utf-8"))

    def load_source_choice(self) -> SourceChoice | None:
        """The last choice saved, or ``None``; a damaged file is an error naming it."""
        path = self.source_choice_path
        if not path.is_file():
            return None
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataError(
                str(path),
                [DataProblem(getattr(exc, "lineno", None), f"not JSON ({exc})")],
                hint="delete it; the next evaluated round writes a new one",
            ) from exc
        return SourceChoice.from_json(payload, where=str(path))

    def _save_torch(self, name: str, value: object) -> None:
        """``value`` in ``name`` under this directory, written atomically."""
        import io

        buffer = io.BytesIO()
        torch.save(value, buffer)
        atomic_write_bytes(self.directory / name, buffer.getvalue())
