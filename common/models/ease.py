"""EASE over the federation's private item co-occurrence: a model learnt from statistics.

``score(u, i) = sum_j x_uj B_ji`` over the ``N`` trained items, where ``x_u``
marks the user's recent items (the ``k``-th most recent weighs
``ease-decay^(k-1)``; 1 is EASE's 0/1 row) and ``B`` is EASE's closed form
(:func:`common.privacy.cooccurrence.ease_weights`) of the shared Gram matrix.
Items outside the trained set rank below every trained one (the item prior
orders them by popularity).

The model is not trained by gradient steps: its shared parameters are

* ``items``: the ``N`` trained items' catalog ids (as float32, exact below
  2^24 items), set by the coordinator from the private item counts: the most
  counted of those whose noisy count clears ``item-threshold`` noise standard
  deviations, at most ``ease-items`` (so ``N`` grows with the federation);
* ``gram``: ``N x N``, the mean over merchants of each one's noisy Gram
  (:mod:`common.privacy.cooccurrence`), released once under DP;
* ``noise``: the standard deviation of that mean's noise per entry, set by the
  coordinator from the merchants' (public) sigmas; EASE's ridge grows with it.

A user is their own items, held by the merchant and never sent (as for the
history models); there are no local parameters, so a new user needs no fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from common.errors import ConfigError
from common.models.base import ModelConfig
from common.models.recent_items import RecentItemsRecommender
from common.privacy.cooccurrence import ease_weights

if TYPE_CHECKING:
    from common.models.batches import Batch, TrainingSettings

EXACT_FLOAT_IDS = 2**24  # float32 holds every integer id below this exactly
SPECTRAL_DIM = 32  # item vectors (for similar items): the Gram's leading eigenvectors


class EASE(RecentItemsRecommender):
    LOCAL_PARAMETERS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: ModelConfig, *, num_users: int, num_items: int) -> None:
        super().__init__(num_users=num_users, num_items=num_items, max_history=config.history_max)
        if num_items >= EXACT_FLOAT_IDS:
            raise ConfigError(
                f"model=ease keeps item ids as float32 parameters, exact below {EXACT_FLOAT_IDS} "
                f"items; this catalog has {num_items}. Use another model for such a catalog."
            )
        size = min(config.ease_items, num_items)
        self.max_size = size  # the coordinator may cover fewer items (those the counts support)
        self.ridge = config.ease_ridge
        self.items = nn.Parameter(torch.zeros(size), requires_grad=False)  # (N,) catalog ids
        self.gram = nn.Parameter(torch.zeros(size, size), requires_grad=False)  # (N, N)
        # the standard deviation of the global Gram's noise per entry (set by the coordinator
        # from the merchants' sigmas: public); the ridge grows with it
        self.noise = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.noise_ridge = config.ease_noise_ridge
        self.decay = config.ease_decay
        self._cache: tuple[tuple[int, int, int], torch.Tensor, torch.Tensor] | None = None

    # --- shape: as many items as the coordinator chose, up to ease-items -----------------
    def fits_shared(self, shapes: dict[str, tuple[int, ...]]) -> bool:
        if set(shapes) != {"items", "gram", "noise"} or len(shapes["items"]) != 1:
            return False
        size = shapes["items"][0]
        fits = shapes["gram"] == (size, size) and shapes["noise"] == (1,)
        return fits and 1 <= size <= self.max_size

    def load_shared(self, arrays: dict[str, torch.Tensor]) -> None:
        """Load the global items and Gram, resized to the number of items they cover."""
        shapes = {n: tuple(a.shape) for n, a in arrays.items()}
        if self.fits_shared(shapes) and shapes["items"] != tuple(self.items.shape):
            size = shapes["items"][0]
            self.items = nn.Parameter(torch.zeros(size), requires_grad=False)
            self.gram = nn.Parameter(torch.zeros(size, size), requires_grad=False)
            self._cache = None
        super().load_shared(arrays)

    # --- the statistics -------------------------------------------------------------------
    def item_ids(self) -> npt.NDArray[np.int64]:
        """The trained items' catalog ids (rounded: a mean of equal float ids is that id)."""
        return np.rint(self.items.detach().numpy()).astype(np.int64)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(columns of every catalog item, -1 if untrained (num_items,); B (N, N)), cached."""
        version = (self.items._version, self.gram._version, self.noise._version)
        if self._cache is None or self._cache[0] != version:
            ids = self.item_ids()
            column = np.full(self.num_items + 1, -1, dtype=np.int64)  # + the padding id
            column[ids] = np.arange(len(ids))
            weights = ease_weights(
                self.gram.detach().numpy(),
                ridge=self.ridge,
                noise_ridge=self.noise_ridge,
                noise_std=float(self.noise.detach()[0]),
            )
            self._cache = (
                version,
                torch.as_tensor(column),
                torch.as_tensor(weights, dtype=torch.float32),
            )
        return self._cache[1], self._cache[2]

    # --- Recommender ----------------------------------------------------------------------
    def score_all(self, users: torch.Tensor, *, chunk_items: int = 4096) -> torch.Tensor:
        column, weights = self.weights()
        size = weights.shape[0]
        sequences = self.sequences[users]  # (n, L), oldest first, padded on the right
        cols = column[sequences]  # (n, L), -1 for padding and untrained items
        # the k-th most recent item weighs decay^(k-1) (1: every item alike, as in EASE)
        back = self.lengths[users].unsqueeze(1) - 1 - torch.arange(sequences.shape[1])  # (n, L)
        weight = self.decay ** back.clamp(min=0).to(torch.float32)
        marks = torch.zeros(len(users), size + 1)
        marks.scatter_reduce_(1, torch.where(cols >= 0, cols, size), weight, reduce="amax")
        trained = marks[:, :size] @ weights  # (n, N)
        scores = torch.empty(len(users), self.num_items)
        low = trained.min(dim=1, keepdim=True).values - 1.0 if size else torch.zeros(len(users), 1)
        scores[:] = low
        if size:
            scores[:, torch.as_tensor(self.item_ids())] = trained
        return scores

    def user_losses(self, batch: Batch, settings: TrainingSettings) -> torch.Tensor:
        raise ConfigError(
            "model=ease is not trained by gradient steps: each merchant releases its item "
            "co-occurrence once, under DP (privacy-unit=user), and EASE is solved from their mean."
        )

    def fold_in_user(
        self,
        positives: npt.NDArray[np.int64],
        negatives: npt.NDArray[np.int64],
        settings: TrainingSettings,
        *,
        iterations: int,
    ) -> None:
        """Nothing to fit: a new user is scored from the items they bring."""

    def item_vectors(self) -> list[nn.Embedding]:
        """The Gram's leading eigenvectors, scaled by sqrt(eigenvalue), as item vectors
        (zero for untrained items): post-processing of the released Gram."""
        size = self.gram.shape[0]
        dim = max(1, min(SPECTRAL_DIM, size))
        table = nn.Embedding(self.num_items + 1, dim)
        with torch.no_grad():
            table.weight.zero_()
            if size:
                gram = self.gram.detach().double()
                values, vectors = torch.linalg.eigh((gram + gram.T) / 2)
                top = torch.argsort(values, descending=True)[:dim]
                scaled = vectors[:, top] * values[top].clamp(min=0).sqrt()
                table.weight[torch.as_tensor(self.item_ids()), : len(top)] = scaled.float()
        table.weight.requires_grad_(False)
        return [table]
