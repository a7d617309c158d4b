"""Split a pooled event log into parties (merchants or devices). Pure and seeded.

Every scheme assigns whole users: all of a user's events go to one party,
which is what user-level privacy and leave-last-out evaluation need.

* ``natural``: by the ``merchant_id`` column.
* ``iid``: users shuffled and dealt evenly.
* ``dirichlet``: non-IID by taste. Users are grouped by their dominant latent
  direction (top singular vectors of the user-item matrix); each group is
  spread over parties with proportions ``~ Dirichlet(alpha)``. Small ``alpha``
  gives parties with very different tastes and sizes.
* ``device``: one user per party (cross-device).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from common.choices import PARTITION_SCHEMES as SCHEMES
from common.data.schema import Interactions
from common.errors import ConfigError

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PartitionConfig:
    scheme: str = "natural"
    num_parties: int = 10
    alpha: float = 0.5
    taste_groups: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(
                f"Unknown partition {self.scheme!r}: expected one of {', '.join(SCHEMES)}."
            )
        if self.num_parties < 1:
            raise ConfigError(f"The number of merchants must be >= 1, got {self.num_parties}.")
        if not self.alpha > 0:
            raise ConfigError(f"Dirichlet alpha must be > 0, got {self.alpha}.")
        if self.taste_groups < 1:
            raise ConfigError(f"taste-groups must be >= 1, got {self.taste_groups}.")


def party_name(index: int, *, device: bool = False) -> str:
    return f"device-{index:05d}" if device else f"merchant-{index:02d}"


def partition_events(events: Interactions, config: PartitionConfig) -> dict[str, IntArray]:
    """Party name → row indices into ``events``; names sort in party order."""
    if config.scheme == "natural":
        if events.merchant_id is None:
            raise ConfigError(
                "Partition 'natural' needs a merchant_id column, and these events have none. "
                "Add the column, or choose --partition iid or dirichlet."
            )
        codes, names = pd.factorize(events.merchant_id, sort=True)
        return {str(name): np.flatnonzero(codes == i) for i, name in enumerate(names)}

    user_codes, user_keys = pd.factorize(events.user_id, sort=True)
    num_users = len(user_keys)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, SCHEMES.index(config.scheme)]))
    if config.scheme == "device":
        owner = np.arange(num_users)
        names = [party_name(i, device=True) for i in range(num_users)]
    else:
        if num_users < config.num_parties:
            raise ConfigError(
                f"Cannot split {num_users} users into {config.num_parties} merchants: "
                "every merchant needs at least one user. Use fewer merchants."
            )
        if config.scheme == "iid":
            owner = np.empty(num_users, dtype=np.int64)
            owner[rng.permutation(num_users)] = np.arange(num_users) % config.num_parties
        else:
            groups = taste_groups(user_codes, events.item_id, config.taste_groups, rng)
            owner = _dirichlet_owners(groups, config.num_parties, config.alpha, rng)
        names = [party_name(i) for i in range(config.num_parties)]
    row_owner = owner[user_codes]
    order = np.argsort(row_owner, kind="stable")
    bounds = np.searchsorted(row_owner[order], np.arange(len(names) + 1))
    return {name: np.sort(order[bounds[i] : bounds[i + 1]]) for i, name in enumerate(names)}


def taste_groups(
    user_codes: IntArray, item_keys: npt.NDArray[np.object_], groups: int, rng: np.random.Generator
) -> IntArray:
    """Each user's dominant signed direction among the top singular vectors of user x item."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import svds

    item_codes, item_uniques = pd.factorize(item_keys)
    num_users, num_items = int(user_codes.max()) + 1, len(item_uniques)
    matrix = csr_matrix(
        (np.ones(len(user_codes)), (user_codes, item_codes)), shape=(num_users, num_items)
    )
    rank = max(1, min((groups + 1) // 2, min(num_users, num_items) - 1))
    v0 = rng.random(min(num_users, num_items))
    u, s, _ = svds(matrix.astype(np.float64), k=rank, v0=v0)
    projected = u * s  # (users, rank)
    signed = np.concatenate([projected, -projected], axis=1)[:, :groups]
    return np.argmax(signed, axis=1).astype(np.int64)


def _dirichlet_owners(
    groups: IntArray, parties: int, alpha: float, rng: np.random.Generator
) -> IntArray:
    owner = np.empty(len(groups), dtype=np.int64)
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        shares = rng.dirichlet(np.full(parties, alpha))
        cuts = np.round(np.cumsum(shares) * len(members)).astype(np.int64)[:-1]
        for party, chunk in enumerate(np.split(members, cuts)):
            owner[chunk] = party
    # Every party gets at least one user: take one from the largest party, repeatedly.
    counts = np.bincount(owner, minlength=parties)
    for empty in np.flatnonzero(counts == 0):
        donor = int(np.argmax(counts))
        moved = np.flatnonzero(owner == donor)[0]
        owner[moved] = empty
        counts[donor] -= 1
        counts[empty] += 1
    return owner
