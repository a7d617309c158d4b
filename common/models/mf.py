"""Matrix factorisation: ``score(u, i) = p_u . q_i + b_u + b_i + g``."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from common.models.base import ModelConfig
from common.models.layers import Offset
from common.models.local_vector import LocalVectorRecommender

if TYPE_CHECKING:
    from common.models.batches import TrainingSettings

NEWTON_ITERATIONS = 30
NEWTON_TOLERANCE = 1e-7


class MatrixFactorization(LocalVectorRecommender):
    """Dot product of user and item vectors plus user, item and global biases.

    Local: ``user_embedding``, ``user_bias``. Shared: ``item_embedding``,
    ``item_bias``, ``global_bias.bias``.
    """

    LOCAL_PARAMETERS: ClassVar[tuple[str, ...]] = ("user_embedding.weight", "user_bias.weight")

    def __init__(self, config: ModelConfig, *, num_users: int, num_items: int) -> None:
        super().__init__(num_users=num_users, num_items=num_items)
        dim = config.embedding_dim
        self.user_embedding = nn.Embedding(num_users, dim)  # (users, dim)
        self.user_bias = nn.Embedding(num_users, 1)  # (users, 1)
        self.item_embedding = nn.Embedding(num_items, dim)  # (items, dim)
        self.item_bias = nn.Embedding(num_items, 1)  # (items, 1)
        self.global_bias = Offset()  # one scalar, (1,)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p = self.user_embedding(users)  # (n, dim)
        q = self.item_embedding(items)  # (n, dim)
        bias = self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1)
        return self.global_bias((p * q).sum(-1) + bias)  # (n,)

    def score_all(self, users: torch.Tensor, *, chunk_items: int = 4096) -> torch.Tensor:
        p = self.user_embedding(users)  # (n, dim)
        scores = p @ self.item_embedding.weight.T  # (n, items)
        scores += self.user_bias(users) + self.item_bias.weight.T
        return self.global_bias(scores)  # (n, items)

    def user_vectors(self) -> list[nn.Embedding]:
        return [self.user_embedding]

    def item_vectors(self) -> list[nn.Embedding]:
        return [self.item_embedding]

    def fold_in_user(
        self,
        positives: npt.NDArray[np.int64],
        negatives: npt.NDArray[np.int64],
        settings: TrainingSettings,
        *,
        iterations: int,
    ) -> None:
        """Implicit feedback: the exact optimum in closed form (:func:`newton_fold_in`, a few
        milliseconds); explicit ratings: L-BFGS, as every local-vector model."""
        if settings.loss != "bce":
            super().fold_in_user(positives, negatives, settings, iterations=iterations)
            return
        p, bias = newton_fold_in(self, positives, negatives, settings)
        with torch.no_grad():
            self.user_embedding.weight[0] = torch.from_numpy(p)
            self.user_bias.weight[0, 0] = bias


def newton_fold_in(
    model: MatrixFactorization,
    positives: npt.NDArray[np.int64],
    negatives: npt.NDArray[np.int64],
    settings: TrainingSettings,
) -> tuple[npt.NDArray[np.float32], float]:
    """The MF fold-in optimum ``(p, b_u)``: damped Newton on ``theta = (p, b_u)``, float64.

    The expected BCE loss of a new user is an L2-regularised logistic
    regression in d+1 parameters (see :func:`~common.models.local_vector.fold_in_by_lbfgs`
    for the loss); without sampling noise the optimum is deterministic.
    """
    weight = model.item_embedding.weight.detach().numpy()
    item_bias = model.item_bias.weight.detach().numpy()[:, 0]
    offset = float(model.global_bias.bias.detach()[0])
    items = np.concatenate([positives, negatives])
    x = np.hstack([weight[items].astype(np.float64), np.ones((len(items), 1))])  # (n, d+1)
    base = item_bias[items].astype(np.float64) + offset  # (n,)
    ratio = settings.num_negatives / (1.0 + settings.num_negatives)
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    w = np.concatenate(
        [
            np.full(len(positives), (1.0 - ratio) / len(positives)),
            np.full(len(negatives), ratio / max(len(negatives), 1)),
        ]
    )
    decay = np.full(x.shape[1], 2.0 * settings.weight_decay)
    decay[-1] = 0.0  # the user bias is not decayed (as in training)

    def loss(theta: npt.NDArray[np.float64]) -> float:
        s = x @ theta + base
        return float(w @ (np.logaddexp(0.0, s) - y * s) + 0.5 * decay @ (theta * theta))

    theta = np.zeros(x.shape[1])
    current = loss(theta)
    for _ in range(NEWTON_ITERATIONS):
        s = x @ theta + base
        prob = 1.0 / (1.0 + np.exp(-s))
        grad = x.T @ (w * (prob - y)) + decay * theta
        hess = (x * (w * prob * (1.0 - prob))[:, None]).T @ x + np.diag(decay + 1e-9)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-4:  # backtracking: never increase the loss
            candidate = theta - scale * step
            value = loss(candidate)
            if value <= current:
                break
            scale *= 0.5
        else:
            break
        theta, previous, current = candidate, current, value
        if previous - current < NEWTON_TOLERANCE * max(1.0, abs(current)):
            break
    return theta[:-1].astype(np.float32), float(theta[-1])
