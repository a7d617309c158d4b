"""A merchant's durable local state: its data, its users' parameters, on its own disk.

The directory holds the merchant's encoded data (``data.npz``, ``users.json``)
and, once trained, ``local_state.pt`` with the user-owned parameters. Writes
are atomic (temporary file, fsync, rename): a crash never leaves half a file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from common.constants import MERCHANT_DATA_FILE, MERCHANT_STATE_FILE, MERCHANT_USERS_FILE
from common.data.dataset import UserItemData
from common.errors import DataError, DataProblem


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class MerchantStore:
    """Paths of one merchant's state directory."""

    directory: Path

    @property
    def name(self) -> str:
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

    def load_local(self) -> dict[str, torch.Tensor] | None:
        path = self.directory / MERCHANT_STATE_FILE
        if not path.is_file():
            return None
        state: dict[str, torch.Tensor] = torch.load(path, weights_only=True)
        return state

    def save_local(self, tensors: dict[str, torch.Tensor]) -> None:
        import io

        buffer = io.BytesIO()
        torch.save({n: t.detach().clone() for n, t in tensors.items()}, buffer)
        atomic_write_bytes(self.directory / MERCHANT_STATE_FILE, buffer.getvalue())
