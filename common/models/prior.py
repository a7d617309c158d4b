"""Item prior: which items the model was trained on, and a popularity fallback for the rest.

Under differential privacy a rare item's embedding receives almost no signal
per noisy step, so training it only adds noise to the ranking. Private
training is therefore restricted to items whose (already private) count is
high enough, and every other item is ranked below all trained items, in order
of its private count, as in private alternating least squares. The prior is
public: it is built by the coordinator from noisy counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch


@dataclass(frozen=True)
class ItemPrior:
    counts: npt.NDArray[np.float64]  # (num_items,) private item counts (popularity)
    trained: npt.NDArray[np.int64]  # sorted ids of the items the model is trained on

    @property
    def num_items(self) -> int:
        return len(self.counts)

    def trained_mask(self) -> npt.NDArray[np.bool_]:
        mask = np.zeros(self.num_items, dtype=bool)
        mask[self.trained] = True
        return mask

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores (n, items) with every untrained item moved below every trained one.

        Untrained items keep their popularity order: score = (lowest trained
        score of the row) - 1 + popularity rank scaled into [0, 1).
        """
        mask = torch.as_tensor(self.trained_mask())
        if bool(mask.all()) or not bool(mask.any()):
            return scores
        floor = scores[:, mask].min(dim=1, keepdim=True).values - 1.0  # (n, 1)
        order = np.argsort(np.argsort(self.counts, kind="stable"), kind="stable")
        rank = torch.as_tensor(order / len(order), dtype=scores.dtype)  # (items,) in [0, 1)
        fallback = floor + rank  # (n, items)
        return torch.where(mask, scores, fallback)
